package xds

import (
	"context"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// startServer runs a manager with only the xDS server, on 127.0.0.1.
func startServer(t *testing.T, env *testenv.Env) string {
	t.Helper()
	_, addr := startXDSServer(t, env)
	return addr
}

// startXDSServer is startServer that also returns the server.
func startXDSServer(t *testing.T, env *testenv.Env) (*Server, string) {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Setup(context.Background(), mgr, Options{Listener: ln, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the manager did not stop")
		}
	})
	return srv, ln.Addr().String()
}

// serviceAccountToken returns a token of ServiceAccount ns/sidecar for
// audiences, bound to a new pod of it, as a sidecar holds.
func serviceAccountToken(t *testing.T, env *testenv.Env, ns string, audiences ...string) string {
	t.Helper()
	return env.SidecarToken(t, ns, "sidecar", audiences...)
}

func createKey(t *testing.T, env *testenv.Env, ns, name, subject string) {
	t.Helper()
	testfixture.CreateAPIKey(t, env.Client, testfixture.NewAPIKey(t, ns, name, subject))
}

func wildcard(initial map[string]string, extra ...string) *discovery.DeltaDiscoveryRequest {
	return &discovery.DeltaDiscoveryRequest{
		TypeUrl:                 APIKeyEntryType,
		ResourceNamesSubscribe:  append([]string{"*"}, extra...),
		InitialResourceVersions: initial,
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := slices.Collect(maps.Keys(m))
	sort.Strings(out)
	return out
}

// TestIntegrationXDSServesEachNamespaceItsOwnState runs the xDS server on
// a real API server with real gRPC delta streams on 127.0.0.1: a sidecar
// of namespace A never receives namespace B's state, even when it
// subscribes to B's names; a disabled key reaches it as one updated
// resource; and a sidecar that reconnects with its versions receives only
// what changed meanwhile.
func TestIntegrationXDSServesEachNamespaceItsOwnState(t *testing.T) {
	env, nsA := testenv.Start(t)
	nsB := env.Namespace(t)
	createKey(t, env, nsA, "a1", "service:a1")
	createKey(t, env, nsA, "a2", "service:a2")
	createKey(t, env, nsA, "a3", "service:a3")
	createKey(t, env, nsA, "shared", "service:shared-in-a")
	createKey(t, env, nsB, "b1", "service:b1")
	createKey(t, env, nsB, "shared", "service:shared-in-b")
	addr := startServer(t, env)
	tokenA := serviceAccountToken(t, env, nsA, DefaultAudience)
	wantA := []string{"a1", "a2", "a3", "shared"}

	t.Run("a stream without a token, or with a token for another audience, is refused", func(t *testing.T) {
		for name, tok := range map[string]string{
			"none":         "",
			"api audience": serviceAccountToken(t, env, nsA),
			"garbage":      "not-a-token",
		} {
			err := dial(t, addr, tok, wildcard(nil)).streamError()
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("token %s: stream ended with %v, want Unauthenticated", name, err)
			}
		}
	})

	// The node a client sends names B: the server must ignore it.
	first := wildcard(nil, "b1")
	first.Node = &core.Node{Id: "sidecar", Cluster: nsB}
	a := dial(t, addr, tokenA, first)
	t.Run("a sidecar of A subscribing to everything and to B's names, with B in its node, gets A's keys only", func(t *testing.T) {
		a.next()
		if got := sortedKeys(a.entries); !slices.Equal(got, wantA) {
			t.Fatalf("resources = %v, want %v", got, wantA)
		}
		if s := a.entries["shared"].GetSubject(); s != "service:shared-in-a" {
			t.Fatalf("shared has subject %q, want A's", s)
		}
	})

	named := dial(t, addr, tokenA, &discovery.DeltaDiscoveryRequest{TypeUrl: APIKeyEntryType, ResourceNamesSubscribe: []string{"b1"}})
	t.Run("a sidecar of A subscribing to B's names only is sent none of them, even when they change", func(t *testing.T) {
		b := dial(t, addr, serviceAccountToken(t, env, nsB, DefaultAudience), wildcard(nil))
		b.next()
		env.EditAPIKey(t, nsB, "b1", func(ak *gatehousev1.APIKey) { ak.Spec.Subject = "service:b1-changed" })
		env.EditAPIKey(t, nsB, "shared", func(ak *gatehousev1.APIKey) { ak.Spec.Subject = "service:shared-in-b-changed" })
		for b.entries["b1"].GetSubject() != "service:b1-changed" || b.entries["shared"].GetSubject() != "service:shared-in-b-changed" {
			b.next()
		}
		// The server has B's changes. Now subscribe to one of A's names:
		// the answer must hold it alone; had B's names leaked, they would
		// be here or before.
		if err := named.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: APIKeyEntryType, ResourceNamesSubscribe: []string{"a1"}}); err != nil {
			t.Fatal(err)
		}
		r := named.next()
		if got := names(r); !slices.Equal(got, []string{"a1"}) {
			t.Fatalf("resources = %v, want [a1]", got)
		}
	})

	t.Run("a disabled key reaches the sidecar as one updated resource", func(t *testing.T) {
		env.EditAPIKey(t, nsA, "a2", func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true })
		r := a.next()
		if got := names(r); !slices.Equal(got, []string{"a2"}) || len(r.GetRemovedResources()) != 0 {
			t.Fatalf("resources = %v, removed %v; want [a2] only", got, r.GetRemovedResources())
		}
		if st := a.entries["a2"].GetState(); st != xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED {
			t.Fatalf("a2 state = %v, want revoked", st)
		}
		t.Logf("revocation: %d bytes on the wire (one resource)", wireBytes(r))
	})

	t.Run("a sidecar reconnecting with its versions receives only what changed", func(t *testing.T) {
		held := maps.Clone(a.versions)
		a.close()
		// Change one key and delete another while the sidecar is away,
		// and wait until the server has them (a second stream sees both).
		watcher := dial(t, addr, tokenA, wildcard(maps.Clone(held)))
		env.EditAPIKey(t, nsA, "a1", func(ak *gatehousev1.APIKey) { ak.Spec.Scopes = []string{"orders:write"} })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := env.Client.Delete(ctx, &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "a3"}}); err != nil {
			t.Fatal(err)
		}
		for watcher.entries["a1"] == nil || watcher.versions["a3"] != "" {
			watcher.next()
		}
		back := dial(t, addr, tokenA, wildcard(held))
		r := back.next()
		if got := names(r); !slices.Equal(got, []string{"a1"}) || !slices.Equal(r.GetRemovedResources(), []string{"a3"}) {
			t.Fatalf("resources = %v, removed %v; want [a1] and [a3]", got, r.GetRemovedResources())
		}
		if s := back.entries["a1"].GetScopes(); !slices.Equal(s, []string{"orders:write"}) {
			t.Fatalf("a1 scopes = %v", s)
		}
		t.Logf("reconnect after one change and one deletion among %d keys: %d bytes", len(held), wireBytes(r))
	})

	t.Run("streams that reopen with one token cost one TokenReview", func(t *testing.T) {
		m := NewReviewMetrics(ctrlmetrics.Registry) // the counters Setup registered
		reviews, hits := testutil.ToFloat64(m.reviews.WithLabelValues("authenticated")), testutil.ToFloat64(m.cacheHits)
		tok := serviceAccountToken(t, env, nsA, DefaultAudience)
		for range 3 {
			c := dial(t, addr, tok, wildcard(nil))
			c.next()
			c.close()
		}
		if got := testutil.ToFloat64(m.reviews.WithLabelValues("authenticated")) - reviews; got != 1 {
			t.Errorf("%v TokenReviews for three streams with one token, want 1", got)
		}
		if got := testutil.ToFloat64(m.cacheHits) - hits; got != 2 {
			t.Errorf("%v cache hits for three streams with one token, want 2", got)
		}
	})

	t.Run("a sidecar of B gets B's keys only", func(t *testing.T) {
		b := dial(t, addr, serviceAccountToken(t, env, nsB, DefaultAudience), wildcard(nil, "a1", "a2"))
		b.next()
		if got := sortedKeys(b.entries); !slices.Equal(got, []string{"b1", "shared"}) {
			t.Fatalf("resources = %v, want [b1 shared]", got)
		}
		if s := b.entries["shared"].GetSubject(); !strings.HasPrefix(s, "service:shared-in-b") {
			t.Fatalf("shared has subject %q, want B's", s)
		}
	})
}
