package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// DefaultPollInterval is how often Files looks for changes.
const DefaultPollInterval = time.Second

// maxFileBytes bounds one state file.
const maxFileBytes = 64 << 20

// Files reads APIKeys and SigningKeys (with their status, as
// `kubectl get -o yaml` prints them), ConfigMaps and AuthPolicies from the
// YAML (or JSON) files of one directory, several documents per file
// allowed, and reloads them when a file changes. Hidden files are skipped,
// which also skips the "..data" bookkeeping of a Kubernetes ConfigMap
// volume while following its symlinks. Other kinds are ignored. A directory that fails to parse is
// reported and the last good inputs stay in force.
type Files struct {
	Dir string
	// PollInterval defaults to DefaultPollInterval.
	PollInterval time.Duration
	Log          logr.Logger
}

// Run implements Source.
func (f *Files) Run(ctx context.Context, ev Events) error {
	interval := f.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	var last [sha256.Size]byte
	first := true
	lastErr := ""
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		fp, err := fingerprint(f.Dir)
		switch {
		case err == nil && (first || fp != last):
			var in snapshot.Inputs
			in, err = ReadDir(f.Dir)
			if err == nil {
				first, last = false, fp
				ev.Changed(in)
			}
		case err == nil:
			ev.Confirmed()
		}
		if err != nil {
			// Logged once per distinct failure, not on every poll; every
			// failure is counted.
			if msg := err.Error(); msg != lastErr {
				f.Log.Error(err, "reading the state directory; keeping the last good state", "dir", f.Dir)
				lastErr = msg
			}
			ev.Failed(err)
		} else {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// stateFiles lists the files Files reads, sorted.
func stateFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
			out = append(out, filepath.Join(dir, name))
		}
	}
	sort.Strings(out)
	return out, nil
}

// fingerprint hashes names, sizes and modification times (following
// symlinks), so that polling costs stat calls, not reads.
func fingerprint(dir string) ([sha256.Size]byte, error) {
	files, err := stateFiles(dir)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	h := sha256.New()
	for _, name := range files {
		st, err := os.Stat(name)
		if err != nil {
			return [sha256.Size]byte{}, fmt.Errorf("reading %s: %w", name, err)
		}
		if st.IsDir() {
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", name, st.Size(), st.ModTime().UnixNano())
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// ReadDir decodes the APIKeys, SigningKeys, ConfigMaps and AuthPolicies of
// a directory.
func ReadDir(dir string) (snapshot.Inputs, error) {
	var in snapshot.Inputs
	files, err := stateFiles(dir)
	if err != nil {
		return in, err
	}
	for _, name := range files {
		st, err := os.Stat(name)
		if err != nil {
			return in, fmt.Errorf("reading %s: %w", name, err)
		}
		if st.IsDir() {
			continue
		}
		if st.Size() > maxFileBytes {
			return in, fmt.Errorf("%s is larger than %d bytes", name, maxFileBytes)
		}
		data, err := os.ReadFile(name) //nolint:gosec // the directory is the operator's own configuration
		if err != nil {
			return in, fmt.Errorf("reading %s: %w", name, err)
		}
		if err := decodeDocuments(data, &in); err != nil {
			return in, fmt.Errorf("decoding %s: %w", name, err)
		}
	}
	return in, nil
}

func decodeDocuments(data []byte, in *snapshot.Inputs) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		if err := decodeObject(doc, in); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
	}
}

func decodeObject(doc []byte, in *snapshot.Inputs) error {
	// A document that is JSON already (as `kubectl get -o json` writes it,
	// and as hack/loadgen writes 100,000 APIKeys) is read as it is:
	// converting YAML costs about 50 KB of allocation per APIKey, ten times
	// the JSON decoding. Anything else is converted once; both decoding
	// passes then read JSON.
	if trimmed := bytes.TrimSpace(doc); len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed) {
		return decodeJSONObject(trimmed, in)
	}
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	return decodeJSONObject(j, in)
}

func decodeJSONObject(j []byte, in *snapshot.Inputs) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return err
	}
	switch {
	case tm.Kind == "ConfigMap" && tm.APIVersion == "v1":
		cm := &corev1.ConfigMap{}
		if err := strictJSON(j, cm); err != nil {
			return err
		}
		in.ConfigMaps = append(in.ConfigMaps, cm)
	case tm.Kind == "SigningKey" && tm.APIVersion == gatehousev1.GroupVersion.String():
		sk := &gatehousev1.SigningKey{}
		if err := strictJSON(j, sk); err != nil {
			return err
		}
		in.SigningKeys = append(in.SigningKeys, sk)
	case tm.Kind == "APIKey" && tm.APIVersion == gatehousev1.GroupVersion.String():
		ak := &gatehousev1.APIKey{}
		if err := strictJSON(j, ak); err != nil {
			return err
		}
		// Keep the compiled record, not the decoded object: an APIKey
		// takes about twice the memory of its record. Files have no
		// resourceVersion: the content is the version.
		rec := apikeyformat.RecordOf(ak)
		rec.TokenExchange = nil // the sidecar does not exchange tokens
		for i := range rec.Keys {
			rec.Keys[i].IssuedAt = nil
		}
		sum := sha256.Sum256(j)
		in.Records = append(in.Records, snapshot.CompiledAPIKey{Version: string(sum[:16]), Record: rec})
	case tm.Kind == "AuthPolicy" && tm.APIVersion == gatehousev1.GroupVersion.String():
		p := &gatehousev1.AuthPolicy{}
		if err := strictJSON(j, p); err != nil {
			return err
		}
		in.Policies = append(in.Policies, p)
	case tm.Kind == "List":
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(j, &list); err != nil {
			return err
		}
		for _, item := range list.Items {
			if err := decodeJSONObject(item, in); err != nil {
				return err
			}
		}
	}
	return nil
}

// strictJSON decodes refusing unknown fields, so that a misspelt policy
// field is an error rather than a silently looser policy.
func strictJSON(j []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
