package loadgen_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/loadgen"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// loadInputs decodes a fixture config dir into snapshot inputs.
func loadInputs(t *testing.T, dir string) snapshot.Inputs {
	t.Helper()
	var in snapshot.Inputs
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "---\n") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			if strings.Contains(doc, "kind: AuthPolicy") {
				p := &gatehousev1.AuthPolicy{}
				if err := yaml.UnmarshalStrict([]byte(doc), p); err != nil {
					t.Fatal(err)
				}
				in.Policies = append(in.Policies, p)
				continue
			}
			cm := &corev1.ConfigMap{}
			if err := yaml.UnmarshalStrict([]byte(doc), cm); err != nil {
				t.Fatal(err)
			}
			in.ConfigMaps = append(in.ConfigMaps, cm)
		}
	}
	return in
}

// TestEveryWorkloadGetsItsExpectedVerdictFromTheSidecarEngine builds the
// sidecar's snapshot from the fixtures, serves the sidecar's gRPC frontend
// on loopback, and drives every workload through it: the fixtures, the
// policy and the client's expectations agree with the real decision engine.
func TestEveryWorkloadGetsItsExpectedVerdictFromTheSidecarEngine(t *testing.T) {
	dir := t.TempDir()
	creds, err := loadgen.WriteFixtures(loadgen.FixtureOptions{Dir: dir, Keys: 200, ClientKeys: 50, Tokens: 4, ObjectsPerFile: 64})
	if err != nil {
		t.Fatal(err)
	}
	snap := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "loadtest"}).Build(loadInputs(t, filepath.Join(dir, loadgen.ConfigDirName)))
	if len(snap.Problems) != 0 {
		t.Fatalf("the sidecar reports problems with the fixtures: %q", snap.Problems)
	}
	if snap.KeyCount() != 200 || snap.Policy == nil {
		t.Fatalf("snapshot holds %d keys and policy %v, want 200 and the fixture's policy", snap.KeyCount(), snap.Policy)
	}
	store := &snapshot.Store{}
	store.Swap(snap)
	core := server.NewCore(authz.New(store, authz.Options{}), store, nil, server.Options{})

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, server.NewAuthorizationServer(core))
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	defer func() { gs.Stop(); <-done }()
	target, err := loadgen.DialGRPC(lis.Addr().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()

	for _, name := range loadgen.WorkloadNames {
		t.Run(name, func(t *testing.T) {
			w, err := loadgen.BuildWorkload(name, creds, loadgen.WorkloadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := loadgen.RunClosed(t.Context(), target, w, loadgen.ClosedConfig{Concurrency: 2, Duration: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed < uint64(len(w.Requests)) || res.Wrong != 0 || res.Errors != 0 {
				t.Errorf("%d completed (want at least one per credential, %d), %d wrong, %d errors %v",
					res.Completed, len(w.Requests), res.Wrong, res.Errors, res.ErrorSamples)
			}
		})
	}
}
