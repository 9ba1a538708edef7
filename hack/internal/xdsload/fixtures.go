package xdsload

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// objects are the Gatehouse objects of a fixtures directory.
type objects struct {
	apiKeys     []*gatehousev1.APIKey
	signingKeys []*gatehousev1.SigningKey
	policies    []*gatehousev1.AuthPolicy
}

// readObjects reads the APIKeys, SigningKeys and AuthPolicies of the YAML
// or JSON documents in dir (what `loadgen fixtures` writes to config/).
func readObjects(dir string) (*objects, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	objs := &objects{}
	for _, name := range files {
		data, err := os.ReadFile(name) //nolint:gosec // the fixtures directory is the caller's own
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		if err := objs.decodeDocuments(data); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", name, err)
		}
	}
	return objs, nil
}

func (o *objects) decodeDocuments(data []byte) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if doc = bytes.TrimSpace(doc); len(doc) == 0 {
			continue
		}
		// The fixtures' APIKeys are JSON already; converting 100,000 of
		// them from YAML would take most of the start.
		if doc[0] != '{' {
			if doc, err = yaml.YAMLToJSON(doc); err != nil {
				return err
			}
		}
		if err := o.decode(doc); err != nil {
			return err
		}
	}
}

func (o *objects) decode(j []byte) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return err
	}
	if tm.APIVersion != gatehousev1.GroupVersion.String() {
		return nil
	}
	var err error
	switch tm.Kind {
	case "APIKey":
		ak := &gatehousev1.APIKey{}
		err = json.Unmarshal(j, ak)
		o.apiKeys = append(o.apiKeys, ak)
	case "SigningKey":
		sk := &gatehousev1.SigningKey{}
		err = json.Unmarshal(j, sk)
		o.signingKeys = append(o.signingKeys, sk)
	case "AuthPolicy":
		p := &gatehousev1.AuthPolicy{}
		err = json.Unmarshal(j, p)
		o.policies = append(o.policies, p)
	}
	return err
}
