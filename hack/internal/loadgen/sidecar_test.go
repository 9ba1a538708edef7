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
	// The verification cache off, as hack/load.sh runs the sidecar for the
	// uncached and expired workloads: every token is verified.
	core := server.NewCore(authz.New(store, authz.Options{CacheSize: -1}), store, nil, server.Options{})
	target := serveGRPC(t, grpc.ForceServerCodecV2(core.GRPCCodec()), server.NewAuthorizationServer(core).Register)
	for _, shape := range loadgen.Shapes {
		for _, name := range loadgen.WorkloadNames {
			t.Run(shape+" "+name, func(t *testing.T) {
				drive(t, target, creds, name, loadgen.WorkloadOptions{Shape: shape})
			})
		}
	}
}

// The baseline allows everything without decoding the request; the client
// still checks every verdict (allow, with --expect-allow).
func TestTheFloorBaselineAllowsEveryWorkloadWithoutDecodingIt(t *testing.T) {
	creds, err := loadgen.WriteFixtures(loadgen.FixtureOptions{Dir: t.TempDir(), Keys: 10, Tokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, decode := range []string{loadgen.DecodeNone, loadgen.DecodeStandard} {
		codec, err := loadgen.FloorCodec(decode)
		if err != nil {
			t.Fatal(err)
		}
		target := serveGRPC(t, grpc.ForceServerCodecV2(codec), func(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, loadgen.OKServer{}) })
		for _, shape := range loadgen.Shapes {
			for _, name := range loadgen.WorkloadNames {
				t.Run(decode+" "+shape+" "+name, func(t *testing.T) {
					drive(t, target, creds, name, loadgen.WorkloadOptions{Shape: shape, ExpectAllow: true, Distinct: 2})
				})
			}
		}
	}
	if _, err := loadgen.FloorCodec("some"); err == nil {
		t.Error("an unknown decode mode was accepted")
	}
}

func serveGRPC(t *testing.T, opt grpc.ServerOption, register func(grpc.ServiceRegistrar)) *loadgen.GRPCTarget {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opt)
	register(gs)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	target, err := loadgen.DialGRPC(lis.Addr().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Close() })
	return target
}

// drive runs a workload briefly and requires every verdict to be the
// expected one, at least one request per credential.
func drive(t *testing.T, target loadgen.Target, creds *loadgen.Credentials, name string, opts loadgen.WorkloadOptions) {
	t.Helper()
	w, err := loadgen.BuildWorkload(name, creds, opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := loadgen.RunClosed(t.Context(), target, w, loadgen.ClosedConfig{Concurrency: 2, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed < uint64(len(w.Requests)) || res.Wrong != 0 || res.Errors != 0 {
		t.Errorf("%d completed (want at least one per credential, %d), %d wrong, %d errors %v",
			res.Completed, len(w.Requests), res.Wrong, res.Errors, res.ErrorSamples)
	}
}
