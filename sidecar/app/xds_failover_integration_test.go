package app_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

// trackingListener counts the connections it accepted that are still
// open: which replica a sidecar is connected to.
type trackingListener struct {
	net.Listener
	live atomic.Int32
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.live.Add(1)
	return &trackedConn{Conn: c, l: l}, nil
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.live.Add(-1) })
	return c.Conn.Close()
}

func listenTracked(t *testing.T) *trackingListener {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &trackingListener{Listener: ln}
}

// continuousCheck sends a check with key every few milliseconds until
// stopped, and remembers every answer that was not an allow.
type continuousCheck struct {
	checks atomic.Int64
	mu     sync.Mutex
	denied []string
	stop   chan struct{}
	done   chan struct{}
}

func checkContinuously(r *running, key apikeyformat.Key) *continuousCheck {
	c := &continuousCheck{stop: make(chan struct{}), done: make(chan struct{})}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders/1", Headers: map[string]string{"x-api-key": key.Plaintext()}},
	}}}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := r.check.Check(ctx, req)
			cancel()
			c.checks.Add(1)
			if got := reason(resp); err != nil || got != "allowed" {
				c.mu.Lock()
				c.denied = append(c.denied, got+" "+errText(err))
				c.mu.Unlock()
			}
		}
	}()
	return c
}

func (c *continuousCheck) finish() (checks int64, denied []string) {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks.Load(), c.denied
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// stateAge is the sidecar's gatehouse_sidecar_state_age_seconds.
func stateAge(t *testing.T, r *running) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+r.addrs.Metrics+"/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "gatehouse_sidecar_state_age_seconds "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestIntegrationTheSidecarFailsOverBetweenOperatorReplicas runs two xDS
// servers, each with its own manager and informer cache as two operator
// replicas, behind one gRPC target that resolves to both (as a dns:///
// target of a headless Service does), and the real sidecar on the xDS
// source. The replica the sidecar is connected to stops: the sidecar keeps
// allowing a valid key throughout (checked every few milliseconds),
// reconnects to the other replica, and a revocation made after that
// reaches it.
func TestIntegrationTheSidecarFailsOverBetweenOperatorReplicas(t *testing.T) {
	if source.XDSKeepaliveTime < xds.KeepaliveMinTime {
		t.Fatalf("the sidecar pings every %v, more often than the operator accepts (%v): it would be sent away", source.XDSKeepaliveTime, xds.KeepaliveMinTime)
	}
	env, ns, keys := ordersNamespace(t, "steady", "revoked")
	steady, revoked := keys[0], keys[1]

	serverTLS, clientTLS := testenv.LoopbackTLS(t)
	replicas := []*trackingListener{listenTracked(t), listenTracked(t)}
	stops := make([]func(), len(replicas))
	var endpoints []resolver.Endpoint
	for i, ln := range replicas {
		stops[i] = startXDSServerOn(t, env, serverTLS, ln)
		endpoints = append(endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: ln.Addr().String()}}})
	}
	res := manual.NewBuilderWithScheme("gatehousefailover")
	res.InitialState(resolver.State{Endpoints: endpoints})
	resolver.Register(res)

	r := start(t, ns, &source.XDS{
		Target: "gatehousefailover:///gatehouse-xds", TLS: clientTLS, TokenFile: tokenFile(t, env, ns), Namespace: ns,
		Log: testr.New(t).WithName("xds-source"),
	}, nil)
	waitReady(t, r)
	for _, k := range []apikeyformat.Key{steady, revoked} {
		framework.Eventually(t, "the keys to be allowed", 10*time.Second, func() (bool, string) {
			got := reason(r.send(t, map[string]string{"x-api-key": k.Plaintext()}))
			return got == "allowed", got
		})
	}
	on := -1
	framework.Eventually(t, "the sidecar to be connected to exactly one replica", 10*time.Second, func() (bool, string) {
		a, b := replicas[0].live.Load(), replicas[1].live.Load()
		on = map[bool]int{true: 0, false: 1}[a > 0]
		return (a > 0) != (b > 0), "open connections: " + strconv.Itoa(int(a)) + ", " + strconv.Itoa(int(b))
	})
	other := 1 - on

	checker := checkContinuously(r, steady)
	stops[on]()
	t0, before := time.Now(), checker.checks.Load()
	var maxAge float64
	framework.Eventually(t, "the sidecar to reconnect to the other replica", 30*time.Second, func() (bool, string) {
		maxAge = max(maxAge, stateAge(t, r))
		return replicas[other].live.Load() > 0, "no connection to the other replica"
	})
	t.Logf("connected to the other replica %v after the first stopped (%d checks meanwhile); state_age_seconds up to %.2f meanwhile",
		time.Since(t0), checker.checks.Load()-before, maxAge)

	env.DisableAPIKey(t, ns, "revoked")
	framework.Eventually(t, "the revocation to reach the sidecar through the other replica", 30*time.Second, func() (bool, string) {
		got := reason(r.send(t, map[string]string{"x-api-key": revoked.Plaintext()}))
		return got == "api_key_revoked", got
	})
	checks, denied := checker.finish()
	if len(denied) > 0 {
		t.Fatalf("the valid key was not allowed %d times of %d checks through the failover, first: %s", len(denied), checks, denied[0])
	}
	t.Logf("the valid key was allowed in all %d checks through the failover", checks)
}
