// Package testenv runs integration tests against a real kube-apiserver and
// etcd, built from source by hack/build-apiserver.sh, with the Gatehouse CRDs
// installed from config/crd/bases.
//
// A test package calls Main from its TestMain; each integration test calls
// Start, which starts the control plane once per package (on first use, so
// unit-only runs with -short never start it) and gives the test a namespace
// of its own. The control plane stops when the package's tests end, even when
// they fail or panic.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousescheme "gatehouse.dev/gatehouse/internal/scheme"
	"gatehouse.dev/gatehouse/test/controlplane"
)

// Env is a running control plane.
type Env struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a controller-runtime client with the Gatehouse types.
	Client client.Client
	// Scheme holds the built-in and Gatehouse types.
	Scheme *k8sruntime.Scheme
	// KubeconfigPath is a kubeconfig file for kubectl and helm.
	KubeconfigPath string

	cp *controlplane.ControlPlane
}

var (
	once    sync.Once
	shared  *Env
	errInit error
)

// Main runs a package's tests and stops the shared control plane afterwards.
// Use it as: func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stopping control plane: %v\n", err)
		}
	}
	return code
}

// Start returns the package's control plane, starting it on first use, and
// creates a fresh namespace for the test, deleted when the test ends. Tests
// are skipped with -short; without the binaries the test fails (it never
// silently skips).
func Start(t testing.TB) (*Env, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a real API server (run without -short)")
	}
	once.Do(func() { shared, errInit = start() })
	if errInit != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", errInit)
	}
	return shared, shared.Namespace(t)
}

// Namespace creates a namespace with a unique name and deletes it when the
// test ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Client.Delete(ctx, ns)
	})
	return ns.Name
}

// RepoRoot is the top of the source tree.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AssetsDir returns the directory holding kube-apiserver and etcd:
// KUBEBUILDER_ASSETS when set, otherwise the result of building them with
// hack/build-apiserver.sh (instant when cached).
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.CommandContext(context.Background(), filepath.Join(RepoRoot(), "hack", "build-apiserver.sh")) //nolint:gosec // the repository's own script
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the API server with hack/build-apiserver.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func start() (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	cp, err := controlplane.Start(assets)
	if err != nil {
		return nil, err
	}
	scheme := gatehousescheme.New()
	env := &Env{Config: cp.Config, Scheme: scheme, KubeconfigPath: cp.KubeconfigPath, cp: cp}
	if env.Client, err = client.New(cp.Config, client.Options{Scheme: scheme}); err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return env, nil
}

func (e *Env) stop() error { return e.cp.Stop() }
