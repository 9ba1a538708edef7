// Package stack runs a whole Gatehouse in this process against an API
// server: the operator (every controller, discovery, the token endpoint)
// and one sidecar, each with its own client identity, on loopback ports.
// The demo and the end-to-end tests use it; production runs the same parts
// as `gatehouse operator` and `gatehouse-sidecar`.
package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	operatorapp "gatehouse.dev/gatehouse/operator/app"
	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
)

// Options configure a Stack.
type Options struct {
	// OperatorConfig is the operator's identity; SidecarConfig the
	// sidecar's (with the sidecar Role only, in production).
	OperatorConfig, SidecarConfig *rest.Config
	// Namespace is the sidecar's namespace, PodLabels the labels of its
	// pod (what AuthPolicies select).
	Namespace string
	PodLabels map[string]string
	// OperatorLog and SidecarLog receive the two parts' logs.
	OperatorLog, SidecarLog logr.Logger
	// Operator tweaks the operator's options (webhook, lifetimes) and
	// Sidecar the sidecar's (e.g. HTTP.TrustForwardedHeaders for nginx).
	Operator func(*operatorapp.Options)
	Sidecar  func(*app.Config)
}

// Stack is a running operator and sidecar.
type Stack struct {
	// DiscoveryURL is the operator's discovery and token endpoint server,
	// http://127.0.0.1:port.
	DiscoveryURL string
	// Sidecar holds the sidecar's addresses (gRPC, HTTP, health,
	// metrics), all on 127.0.0.1.
	Sidecar app.Addresses

	cancel context.CancelFunc
	done   chan error
	parts  int
}

// Start starts the operator and the sidecar and returns once both listen
// (not once they are ready: see WaitReady). Stop stops both.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if o.OperatorConfig == nil || o.SidecarConfig == nil || o.Namespace == "" {
		return nil, errors.New("stack: operator and sidecar configurations and a namespace are required")
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the discovery server: %w", err)
	}
	oo := operatorapp.Options{
		MetricsAddr:       "0",
		ProbeAddr:         "0",
		APIKeyWorkers:     2,
		DiscoveryListener: ln,
		TokenEndpoint:     true,
		TokenMaxLifetime:  time.Hour,
		Logger:            o.OperatorLog,
	}
	oo.Webhook.BindAddress = "0"
	if o.Operator != nil {
		o.Operator(&oo)
	}
	mgr, err := operatorapp.New(ctx, o.OperatorConfig, oo)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Stack{DiscoveryURL: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 2)}
	s.parts++
	go func() {
		if err := mgr.Start(runCtx); err != nil {
			s.done <- fmt.Errorf("operator: %w", err)
			return
		}
		s.done <- nil
	}()

	addrs := make(chan app.Addresses, 1)
	cfg := app.Config{
		Namespace: o.Namespace,
		PodLabels: o.PodLabels,
		Source:    &source.Kubernetes{Config: o.SidecarConfig, Namespace: o.Namespace, Log: o.SidecarLog.WithName("source")},
		GRPCAddr:  "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		Core:        server.Options{StripCredential: true, DecisionLogsPerSecond: 100},
		Log:         o.SidecarLog,
		OnListening: func(a app.Addresses) { addrs <- a },
	}
	if o.Sidecar != nil {
		o.Sidecar(&cfg)
	}
	s.parts++
	go func() {
		if err := app.Run(runCtx, cfg); err != nil {
			s.done <- fmt.Errorf("sidecar: %w", err)
			return
		}
		s.done <- nil
	}()
	select {
	case s.Sidecar = <-addrs:
		return s, nil
	case err := <-s.done:
		s.parts--
		return nil, errors.Join(fmt.Errorf("starting: %w", err), s.Stop())
	case <-time.After(30 * time.Second):
		return nil, errors.Join(errors.New("the sidecar did not listen within 30s"), s.Stop())
	}
}

// WaitReady waits until the sidecar reports ready (its first complete
// state is loaded) and the discovery server answers.
func (s *Stack) WaitReady(ctx context.Context) error {
	get := func(u string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return 0
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if err := framework.Poll(ctx, "the sidecar to be ready", func() (bool, string) {
		code := get("http://" + s.Sidecar.Health + "/readyz")
		return code == http.StatusOK, fmt.Sprintf("/readyz answered %d", code)
	}); err != nil {
		return err
	}
	// Any answer will do: 404 is an issuer the server does not know.
	if err := framework.Poll(ctx, "the discovery server to answer", func() (bool, string) {
		return get(s.DiscoveryURL+"/.well-known/openid-configuration") != 0, "no answer"
	}); err != nil {
		return err
	}
	return nil
}

// Stop stops the sidecar and the operator and waits for both (at most
// 30 s each). It returns their errors, if any.
func (s *Stack) Stop() error {
	s.cancel()
	var errs []error
	for ; s.parts > 0; s.parts-- {
		select {
		case err := <-s.done:
			errs = append(errs, err)
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("a part of the stack did not stop within 30s"))
		}
	}
	return errors.Join(errs...)
}
