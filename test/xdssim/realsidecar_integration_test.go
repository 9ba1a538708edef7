package xdssim_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/testenv"
)

// realSidecar is the sidecar (sidecar/app) on the xDS source, with a
// target that resolves to every replica, as a dns:/// target of the
// headless Service does.
type realSidecar struct {
	check authv3.AuthorizationClient
}

func startRealSidecar(t *testing.T, env *testenv.Env, ns string, clientTLS *tls.Config, replicas ...string) *realSidecar {
	t.Helper()
	token := env.ServiceAccountToken(t, ns, "real-sidecar", xds.DefaultAudience)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	var endpoints []resolver.Endpoint
	for _, a := range replicas {
		endpoints = append(endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	res := manual.NewBuilderWithScheme("xdssim")
	res.InitialState(resolver.State{Endpoints: endpoints})
	resolver.Register(res) // the source builds its channel from a target only
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan app.Addresses, 1)
	done := make(chan error, 1)
	cfg := app.Config{
		Namespace: ns,
		Source: &source.XDS{
			Target: "xdssim:///gatehouse-xds", TLS: clientTLS, TokenFile: tokenFile, Namespace: ns,
			Log: testr.New(t).WithName("real-sidecar"),
		},
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		Core:        server.Options{StripCredential: true},
		Log:         testr.NewWithOptions(t, testr.Options{Verbosity: -1}),
		OnListening: func(a app.Addresses) { addrs <- a },
	}
	go func() { done <- app.Run(ctx, cfg) }()
	var a app.Addresses
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("the sidecar stopped before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the sidecar did not listen within 10s")
	}
	conn, err := grpc.NewClient(a.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the sidecar stopped with an error: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("the sidecar did not stop within 15s")
		}
	})
	return &realSidecar{check: authv3.NewAuthorizationClient(conn)}
}

// decide asks the sidecar about a request to /orders/1 with key, and
// returns "allowed" or the deny reason.
func (r *realSidecar) decide(key apikeyformat.Key) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.check.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders/1", Headers: map[string]string{"x-api-key": key.Plaintext()}},
	}}})
	if err != nil {
		return "error: " + err.Error()
	}
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

// checker asks the sidecar about a valid key every few milliseconds and
// keeps every answer that was not an allow.
type checker struct {
	checks atomic.Int64
	mu     sync.Mutex
	denied []string
	stop   chan struct{}
	done   chan struct{}
}

func (r *realSidecar) checkContinuously(key apikeyformat.Key) *checker {
	c := &checker{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			got := r.decide(key)
			c.checks.Add(1)
			if got != "allowed" {
				c.mu.Lock()
				c.denied = append(c.denied, got)
				c.mu.Unlock()
			}
		}
	}()
	return c
}

func (c *checker) finish() (int64, []string) {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks.Load(), c.denied
}
