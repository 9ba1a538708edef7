package xdsload_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"gatehouse.dev/gatehouse/hack/internal/loadgen"
	"gatehouse.dev/gatehouse/hack/internal/xdsload"
	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
)

// TestTheSidecarLoadsTwentyThousandKeysOverXDSAndAllowsTheClientsKeys runs
// the real sidecar on the xDS source against the fixtures served as
// hack/load.sh's churn mode serves them. 20,000 keys make a first response
// of about 5 MB, more than grpc-go accepts by default (4 MiB): the sidecar
// must take it, become ready, and allow every key of the client.
func TestTheSidecarLoadsTwentyThousandKeysOverXDSAndAllowsTheClientsKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 20,000 fixture keys")
	}
	dir := t.TempDir()
	creds, err := loadgen.WriteFixtures(loadgen.FixtureOptions{Dir: dir, Keys: 20000, ClientKeys: 20, Tokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := filepath.Join(dir, "xds")
	srv, err := xdsload.Start(ctx, xdsload.Options{
		ConfigDir: filepath.Join(dir, loadgen.ConfigDirName), Namespace: "loadtest", ClientKeys: creds.APIKeys, Addr: "127.0.0.1:0", OutDir: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(out, xdsload.CAFileName))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)

	addrs, done := make(chan app.Addresses, 1), make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Config{
			Namespace: "loadtest",
			Source: &source.XDS{
				Target: "passthrough:///" + srv.Addr, TLS: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1"},
				TokenFile: filepath.Join(out, xdsload.TokenFileName), Namespace: "loadtest", Log: testr.New(t).WithName("xds"),
			},
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			OnListening: func(a app.Addresses) { addrs <- a },
		})
	}()
	var a app.Addresses
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("the sidecar stopped before listening: %v", err)
	}
	framework.Eventually(t, "the sidecar to load the state and be ready", 60*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + a.Health + "/readyz") //nolint:noctx // a loopback probe in a test
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprint("/readyz answered ", resp.StatusCode)
	})

	target, err := loadgen.DialGRPC(a.GRPC, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = target.Close() }()
	w, err := loadgen.BuildWorkload(loadgen.WorkloadAPIKey, creds, loadgen.WorkloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := loadgen.RunClosed(ctx, target, w, loadgen.ClosedConfig{Concurrency: 2, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed < uint64(len(w.Requests)) || res.Wrong != 0 || res.Errors != 0 {
		t.Fatalf("%d checks (want at least %d), %d wrong verdicts, %d errors %v", res.Completed, len(w.Requests), res.Wrong, res.Errors, res.ErrorSamples)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("the sidecar stopped with %v", err)
	}
}
