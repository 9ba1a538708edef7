package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr/funcr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testfixture"
)

const (
	ns     = "shop"
	issuer = "https://issuer.example.com"
)

// logBuffer collects log lines from concurrent goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) write(prefix, args string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(&b.buf, "%s %s\n", prefix, args)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a sidecar started by start.
type running struct {
	addrs app.Addresses
	check authv3.AuthorizationClient
	conn  *grpc.ClientConn
	done  chan error
	stop  context.CancelFunc
	logs  *logBuffer
}

func start(t *testing.T, namespace string, src source.Source, podLabels map[string]string, tweaks ...func(*app.Config)) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan error, 1), stop: cancel, logs: &logBuffer{}}
	addrs := make(chan app.Addresses, 1)
	cfg := app.Config{
		Namespace: namespace, PodLabels: podLabels, Source: src,
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		Core:        server.Options{StripCredential: true, DecisionLogsPerSecond: 10000},
		Log:         funcr.New(r.logs.write, funcr.Options{Verbosity: 1}),
		OnListening: func(a app.Addresses) { addrs <- a },
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	go func() { r.done <- app.Run(ctx, cfg) }()
	select {
	case r.addrs = <-addrs:
	case err := <-r.done:
		t.Fatalf("the sidecar stopped before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the sidecar did not listen within 10s")
	}
	conn, err := grpc.NewClient(r.addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	r.check = authv3.NewAuthorizationClient(conn)
	t.Cleanup(func() {
		_ = conn.Close()
		r.shutdown(t)
	})
	return r
}

func (r *running) shutdown(t *testing.T) {
	r.stop()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("the sidecar stopped with an error: %v", err)
		}
		r.done <- nil // later calls see a clean stop
	case <-time.After(15 * time.Second):
		t.Error("the sidecar did not stop within 15s")
	}
}

func (r *running) send(t *testing.T, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.check.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders/1?token=abc", Headers: headers},
	}}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func reason(resp *authv3.CheckResponse) string {
	if resp.GetOkResponse() != nil {
		return "allowed"
	}
	for _, h := range resp.GetDeniedResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "x-gatehouse-deny-reason" {
			return h.GetHeader().GetValue()
		}
	}
	return "denied without reason"
}

// blockedSource never delivers a state.
type blockedSource struct{}

func (blockedSource) Run(ctx context.Context, _ source.Events) error {
	<-ctx.Done()
	return nil
}

func TestSidecarIsNotReadyAndDeniesBeforeTheFirstState(t *testing.T) {
	r := start(t, ns, blockedSource{}, nil)
	if code, _ := httpGet(t, "http://"+r.addrs.Health+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz answered %d before any state, want 503", code)
	}
	if code, _ := httpGet(t, "http://"+r.addrs.Health+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz answered %d, want 200 (the process is alive)", code)
	}
	hc, err := healthpb.NewHealthClient(r.conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health is %v (%v), want NOT_SERVING", hc.GetStatus(), err)
	}
	if got := reason(r.send(t, map[string]string{"x-api-key": "gth_x"})); got != "not_ready" {
		t.Errorf("a check before any state got %q, want not_ready", got)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// Rename so the poller never reads half a file, as a ConfigMap volume
	// swaps its data directory.
	if err := os.Rename(tmp, filepath.Clean(path)); err != nil {
		t.Fatal(err)
	}
}

func TestSidecarServesFromFilesAndReloadsThem(t *testing.T) {
	dir := t.TempDir()
	clock := testfixture.NewClock()
	key := testfixture.NewAPIKey(t, ns, "billing", "service:billing", "orders:read")
	signer := testfixture.NewSigner(t, jwa.ES256)
	pol := testfixture.Policy(ns, "main", clock.Now(), []gatehousev1.TrustedIssuer{
		{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}},
	}, gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}})
	pol.Spec.Selector.MatchLabels = map[string]string{"app": "orders"}
	writeFile(t, filepath.Join(dir, "policy.yaml"), testfixture.YAML(t, pol, testfixture.SigningKey(t, ns, "platform", issuer, signer)))
	writeFile(t, filepath.Join(dir, "records.yaml"), testfixture.YAML(t, key.Object()))

	r := start(t, ns, &source.Files{Dir: dir, PollInterval: 20 * time.Millisecond}, map[string]string{"app": "orders"})
	framework.Eventually(t, "/readyz to succeed", 10*time.Second, func() (bool, string) {
		code, body := httpGet(t, "http://"+r.addrs.Health+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code, body)
	})
	hc, err := healthpb.NewHealthClient(r.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health is %v (%v) once ready, want SERVING", hc.GetStatus(), err)
	}

	tok := signer.Sign(t, testfixture.Claims(issuer, "alice", time.Now(), map[string]any{"scope": "orders:read", "aud": nil}), nil)
	if got := reason(r.send(t, map[string]string{"x-api-key": key.Key.Plaintext()})); got != "allowed" {
		t.Fatalf("the API key got %q, want allowed", got)
	}
	if got := reason(r.send(t, map[string]string{"authorization": "Bearer " + tok})); got != "allowed" {
		t.Fatalf("the token got %q, want allowed", got)
	}

	// Revoke the key in the file: the next checks must deny it.
	key.Record.State = apikeyformat.StateRevoked
	writeFile(t, filepath.Join(dir, "records.yaml"), testfixture.YAML(t, key.Object()))
	framework.Eventually(t, "the revoked key to be denied", 10*time.Second, func() (bool, string) {
		got := reason(r.send(t, map[string]string{"x-api-key": key.Key.Plaintext()}))
		return got == "api_key_revoked", got
	})

	// A broken file is reported and the last good state stays in force.
	writeFile(t, filepath.Join(dir, "records.yaml"), []byte("kind: [unclosed"))
	framework.Eventually(t, "the reload error to be counted", 10*time.Second, func() (bool, string) {
		_, body := httpGet(t, "http://"+r.addrs.Metrics+"/metrics")
		return strings.Contains(body, "gatehouse_sidecar_reload_errors_total 1") || strings.Contains(body, "gatehouse_sidecar_reload_errors_total 2"), "no reload error counted"
	})
	if got := reason(r.send(t, map[string]string{"x-api-key": key.Key.Plaintext()})); got != "api_key_revoked" {
		t.Fatalf("after a broken reload the key got %q, want the last good state's api_key_revoked", got)
	}
	if got := reason(r.send(t, map[string]string{"authorization": "Bearer " + tok})); got != "allowed" {
		t.Fatalf("after a broken reload the token got %q, want allowed from the last good state", got)
	}

	// A sidecar that starts while the directory is broken stays not ready;
	// it becomes ready once the file is fixed.
	other := start(t, ns, &source.Files{Dir: dir, PollInterval: 20 * time.Millisecond}, map[string]string{"app": "billing"})
	if code, _ := httpGet(t, "http://"+other.addrs.Health+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("a sidecar with only a broken state answered /readyz %d, want 503", code)
	}
	writeFile(t, filepath.Join(dir, "records.yaml"), testfixture.YAML(t, key.Object()))
	framework.Eventually(t, "the second sidecar to be ready", 10*time.Second, func() (bool, string) {
		code, _ := httpGet(t, "http://"+other.addrs.Health+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code)
	})
	// A pod the policy does not select denies everything.
	if got := reason(other.send(t, map[string]string{"authorization": "Bearer " + tok})); got != "no_policy" {
		t.Fatalf("a pod no policy selects got %q, want no_policy", got)
	}

	_, metrics := httpGet(t, "http://"+r.addrs.Metrics+"/metrics")
	for _, want := range []string{
		`gatehouse_sidecar_decisions_total{reason="authenticated",result="allow"}`,
		`gatehouse_sidecar_decisions_total{reason="api_key_revoked",result="deny"}`,
		`gatehouse_sidecar_check_duration_seconds_count{protocol="grpc"}`,
		"gatehouse_sidecar_state_ready 1",
		"gatehouse_sidecar_state_age_seconds",
		"gatehouse_sidecar_reloads_total",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Decision logs were written, and never with a credential in them.
	r.shutdown(t)
	logs := r.logs.String()
	if !strings.Contains(logs, `"reason"="api_key_revoked"`) || !strings.Contains(logs, `"keyId"="`+key.Key.ID()+`"`) {
		t.Errorf("the decision logs lack the expected entries:\n%s", logs)
	}
	secretPart := strings.Split(key.Key.Plaintext(), "_")[2]
	for name, secret := range map[string]string{"API key": key.Key.Plaintext(), "API key secret": secretPart, "token": tok, "token signature": tok[strings.LastIndexByte(tok, '.')+1:], "query string": "token=abc"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain the %s", name)
		}
	}
}

func TestCheckResponsesUseGRPCCodes(t *testing.T) {
	// A denial is a response with a non-OK status, never an RPC error.
	r := start(t, ns, blockedSource{}, nil)
	resp := r.send(t, nil)
	if codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied {
		t.Fatalf("not_ready came with %v, want PermissionDenied", codes.Code(resp.GetStatus().GetCode()))
	}
}

func checkRequest(token string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders/1",
			Headers: map[string]string{"authorization": "Bearer " + token}},
	}}}
}

func snapshotParse(doc string) (*snapshot.StaticKeySet, []string, error) {
	return snapshot.ParseJWKS([]byte(doc))
}

func TestOnShutdownTheSidecarReportsNotServingFirstAndKeepsAnsweringWhileItDrains(t *testing.T) {
	dir := t.TempDir()
	pol := testfixture.Policy(ns, "main", testfixture.Epoch, nil,
		gatehousev1.Rule{Name: "public", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Action: gatehousev1.ActionAllowAnonymous})
	writeFile(t, filepath.Join(dir, "policy.yaml"), testfixture.YAML(t, pol))
	r := start(t, ns, &source.Files{Dir: dir, PollInterval: 20 * time.Millisecond}, nil, func(c *app.Config) { c.DrainDelay = 3 * time.Second })
	framework.Eventually(t, "the sidecar to be ready", 10*time.Second, func() (bool, string) {
		code, _ := httpGet(t, "http://"+r.addrs.Health+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code)
	})
	health := healthpb.NewHealthClient(r.conn)

	r.stop() // SIGTERM
	framework.Eventually(t, "/readyz to fail once draining", 2*time.Second, func() (bool, string) {
		code, _ := httpGet(t, "http://"+r.addrs.Health+"/readyz")
		return code == http.StatusServiceUnavailable, fmt.Sprint(code)
	})
	// Still inside the drain delay: health says NOT_SERVING, yet checks
	// are answered, so that Envoy drains instead of failing requests.
	hc, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health while draining: %v (%v), want NOT_SERVING", hc.GetStatus(), err)
	}
	if got := reason(r.send(t, nil)); got != "allowed" {
		t.Fatalf("a check while draining got %q, want it answered (allowed)", got)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("the sidecar stopped with %v", err)
		}
		r.done <- nil
	case <-time.After(15 * time.Second):
		t.Fatal("the sidecar did not stop after draining")
	}
}
