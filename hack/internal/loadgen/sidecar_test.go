package loadgen_test

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"gatehouse.dev/gatehouse/hack/internal/loadgen"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/sidecar/source"
)

// TestEveryWorkloadGetsItsExpectedVerdictFromTheSidecarEngine reads the
// fixtures with the sidecar's files source, builds its snapshot, serves the sidecar's gRPC frontend
// on loopback, and drives every workload through it: the fixtures, the
// policy and the client's expectations agree with the real decision engine.
func TestEveryWorkloadGetsItsExpectedVerdictFromTheSidecarEngine(t *testing.T) {
	dir := t.TempDir()
	creds, err := loadgen.WriteFixtures(loadgen.FixtureOptions{Dir: dir, Keys: 200, ClientKeys: 50, Tokens: 4, ObjectsPerFile: 64})
	if err != nil {
		t.Fatal(err)
	}
	// The sidecar's own files-source reader, as `--source files` uses it.
	in, err := source.ReadDir(filepath.Join(dir, loadgen.ConfigDirName))
	if err != nil {
		t.Fatalf("the sidecar cannot read the fixtures: %v", err)
	}
	snap := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "loadtest"}).Build(in)
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
