// Package controlplane starts a local etcd and kube-apiserver on 127.0.0.1
// with the Gatehouse CRDs installed. The demo and the integration-test
// harness both run on it.
package controlplane

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"gatehouse.dev/gatehouse/config/crd"
	"gatehouse.dev/gatehouse/internal/scheme"
)

// ControlPlane is a local etcd and kube-apiserver on 127.0.0.1 with the
// Gatehouse CRDs installed.
type ControlPlane struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// KubeconfigPath is an administrator kubeconfig for kubectl and helm.
	KubeconfigPath string

	env *envtest.Environment
	dir string
}

// Start starts etcd and kube-apiserver from the binaries in assets. Only
// loopback, and no endpoint reconciler: nothing here serves the kubernetes
// Service, and the reconciler would only add noise.
func Start(assets string) (*ControlPlane, error) {
	crds, err := embeddedCRDs()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		Scheme:                   scheme.New(),
		BinaryAssetsDirectory:    assets,
		CRDs:                     crds,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := env.ControlPlane.GetAPIServer()
	api.Configure().Set("endpoint-reconciler-type", "none")
	api.Configure().Set("bind-address", "127.0.0.1")
	api.Configure().Set("advertise-address", "127.0.0.1")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	cp := &ControlPlane{env: env, Config: cfg}
	if cp.dir, err = os.MkdirTemp("", "gatehouse-controlplane-"); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	user, err := env.AddUser(envtest.User{Name: "gatehouse-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("creating the admin user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("writing the admin kubeconfig: %w", err)
	}
	cp.KubeconfigPath = filepath.Join(cp.dir, "kubeconfig")
	if err := os.WriteFile(cp.KubeconfigPath, kubeconfig, 0o600); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return cp, nil
}

// Stop stops the API server and etcd and removes the temporary files.
func (cp *ControlPlane) Stop() error {
	if cp.dir != "" {
		_ = os.RemoveAll(cp.dir)
	}
	return cp.env.Stop()
}

func embeddedCRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := fs.Glob(crd.Bases, "bases/*.yaml")
	if err != nil {
		return nil, err
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		data, err := fs.ReadFile(crd.Bases, f)
		if err != nil {
			return nil, err
		}
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			c := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.UnmarshalStrict(doc, c); err != nil {
				return nil, fmt.Errorf("decoding embedded CRD %s: %w", f, err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}
