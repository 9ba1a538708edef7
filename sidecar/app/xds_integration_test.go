package app_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// startXDSServer runs the operator's xDS server alone on addr
// ("127.0.0.1:0" for any port) and returns its address and a function that
// stops it.
func startXDSServer(t *testing.T, env *testenv.Env, tlsConfig *tls.Config, addr string) (string, func()) {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), startXDSServerOn(t, env, tlsConfig, ln)
}

// startXDSServerOn runs the operator's xDS server alone, with a manager
// and an informer cache of its own (as one operator replica), on ln, and
// returns a function that stops it.
func startXDSServerOn(t *testing.T, env *testenv.Env, tlsConfig *tls.Config, ln net.Listener) func() {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := xds.Setup(context.Background(), mgr, xds.Options{Listener: ln, TLS: tlsConfig, Log: testr.New(t).WithName("xds")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the xds server did not stop within 30s")
		}
	}
	t.Cleanup(stop)
	return stop
}

// tokenFile writes a token of ServiceAccount ns/sidecar for the xDS
// audience, bound to a new pod, as the kubelet projects it.
func tokenFile(t *testing.T, env *testenv.Env, ns string) string {
	t.Helper()
	token := env.SidecarToken(t, ns, "sidecar", xds.DefaultAudience)
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func deliveredKey(t *testing.T, env *testenv.Env, ns, secret string) apikeyformat.Key {
	t.Helper()
	var key apikeyformat.Key
	framework.Eventually(t, "the operator to deliver "+secret, 30*time.Second, func() (bool, string) {
		sec := &corev1.Secret{}
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: secret}, sec); err != nil {
			return false, err.Error()
		}
		k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey]))
		key = k
		return err == nil, "no parsable key in the delivery Secret"
	})
	return key
}

// ordersNamespace starts an API server and the APIKey controller, and
// creates in a new namespace an AuthPolicy allowing orders:read on
// /orders/* and an APIKey with that scope for each name; it returns the
// keys delivered to the APIKeys' Secrets, in the order of names.
func ordersNamespace(t *testing.T, names ...string) (*testenv.Env, string, []apikeyformat.Key) {
	t.Helper()
	env, ns := testenv.Start(t)
	startAPIKeyController(t, env, ns)
	pol := testfixture.Policy(ns, "main", time.Time{}, nil,
		gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}})
	pol.CreationTimestamp = metav1.Time{}
	create(t, env, pol)
	for _, name := range names {
		create(t, env, &gatehousev1.APIKey{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       gatehousev1.APIKeySpec{Subject: "service:" + name, Scopes: []string{"orders:read"}, SecretName: name + "-key"},
		})
	}
	keys := make([]apikeyformat.Key, len(names))
	for i, name := range names {
		keys[i] = deliveredKey(t, env, ns, name+"-key")
	}
	return env, ns, keys
}

// TestIntegrationTheSidecarServesTheStateTheOperatorPushesOverXDS runs the
// sidecar on the xDS source against the operator's xDS server (TLS, the
// sidecar's ServiceAccount token): delivered keys are allowed, a disabled
// key is denied soon after, with the server gone the sidecar keeps
// serving its last state, and once a server is back it catches up with
// what changed meanwhile.
func TestIntegrationTheSidecarServesTheStateTheOperatorPushesOverXDS(t *testing.T) {
	env, ns, keys := ordersNamespace(t, "billing", "shipping")
	billing, shipping := keys[0], keys[1]

	serverTLS, clientTLS := testenv.LoopbackTLS(t)
	addr, stopServer := startXDSServer(t, env, serverTLS, "127.0.0.1:0")
	r := start(t, ns, &source.XDS{
		Target: "passthrough:///" + addr, TLS: clientTLS, TokenFile: tokenFile(t, env, ns), Namespace: ns,
		Log: testr.New(t).WithName("xds-source"),
	}, nil)
	waitReady(t, r)
	for _, k := range []apikeyformat.Key{billing, shipping} {
		framework.Eventually(t, "the delivered keys to be allowed", 10*time.Second, func() (bool, string) {
			got := reason(r.send(t, map[string]string{"x-api-key": k.Plaintext()}))
			return got == "allowed", got
		})
	}

	t0 := time.Now()
	env.DisableAPIKey(t, ns, "billing")
	var got string
	for time.Since(t0) < 10*time.Second {
		if got = reason(r.send(t, map[string]string{"x-api-key": billing.Plaintext()})); got != "allowed" {
			break
		}
	}
	if got != "api_key_revoked" {
		t.Fatalf("after disabling the key the check answered %q, want api_key_revoked", got)
	}
	t.Logf("time from disabling the APIKey to the first deny over xDS: %v", time.Since(t0))

	stopServer()
	if got := reason(r.send(t, map[string]string{"x-api-key": shipping.Plaintext()})); got != "allowed" {
		t.Fatalf("with the xDS server gone a valid key got %q, want allowed (fail static)", got)
	}
	if got := reason(r.send(t, map[string]string{"x-api-key": billing.Plaintext()})); got != "api_key_revoked" {
		t.Fatalf("with the xDS server gone the revoked key got %q", got)
	}

	// Revoke shipping while no server runs, then bring one back on the
	// same address: the sidecar reconnects and denies shipping.
	if err := env.Client.Delete(context.Background(), &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shipping"}}); err != nil {
		t.Fatal(err)
	}
	if got := reason(r.send(t, map[string]string{"x-api-key": shipping.Plaintext()})); got != "allowed" {
		t.Fatalf("before any server is back shipping got %q, want allowed (the last state)", got)
	}
	startXDSServer(t, env, serverTLS, addr)
	framework.Eventually(t, "the sidecar to reconnect and deny the deleted key", 60*time.Second, func() (bool, string) {
		got := reason(r.send(t, map[string]string{"x-api-key": shipping.Plaintext()}))
		return got != "allowed", got
	})
}
