package xdssim_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"testing"
	"time"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/xdssim"
)

// The CI size of the simulation (issue 13): hack/xdssim runs the large ones.
const (
	keysA, keysB         = 2000, 300
	sidecarsA, sidecarsB = 40, 10
)

// simNamespace is one namespace of the simulation and its fleet.
type simNamespace struct {
	name  string
	keys  int
	fleet *xdssim.Fleet
}

func (n *simNamespace) names() []string {
	out := make([]string, n.keys)
	for i := range out {
		out[i] = keyName(n.name, i)
	}
	return out
}

// TestIntegrationXDSSimulation runs two operator replicas' xDS servers on
// a real API server, the operator's APIKey controller, two namespaces
// (2,000 APIKeys and 300), 50 simulated sidecars each with a projected
// token of a ServiceAccount of its own, and one real sidecar. It asserts
// that every simulated sidecar converges to its namespace's state, that a
// revocation reaches all of them and the real sidecar, that no sidecar
// ever receives another namespace's state, and that a rolling restart of
// both replicas makes no sidecar lose a valid key. Times are logged, not
// asserted.
func TestIntegrationXDSSimulation(t *testing.T) {
	env, nsA := testenv.Start(t)
	nsB := env.Namespace(t)
	a, b := &simNamespace{name: nsA, keys: keysA}, &simNamespace{name: nsB, keys: keysB}

	startAPIKeyController(t, env, 8, a.name, b.name)
	t0 := time.Now()
	for _, n := range []*simNamespace{a, b} {
		createNamespaceState(t, env, n.name, n.keys)
	}
	created := time.Since(t0)
	for _, n := range []*simNamespace{a, b} {
		waitReconciled(t, env, n.name, n.keys)
	}
	t.Logf("%d APIKeys created in %v, all issued by the operator after %v", keysA+keysB, created.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	serverTLS, clientTLS := testenv.LoopbackTLS(t)
	replicas := []*replica{startReplica(t, env, serverTLS, "127.0.0.1:0"), startReplica(t, env, serverTLS, "127.0.0.1:0")}
	addrs := []string{replicas[0].addr, replicas[1].addr}

	ctx, stopFleets := context.WithCancel(context.Background())
	for _, n := range []*simNamespace{a, b} {
		count := map[*simNamespace]int{a: sidecarsA, b: sidecarsB}[n]
		tokens := make([]string, count)
		for i := range tokens {
			tokens[i] = env.ServiceAccountToken(t, n.name, fmt.Sprintf("sim-%d", i), xds.DefaultAudience)
		}
		n.fleet = xdssim.NewFleet(count, func(i int) xdssim.Target {
			return xdssim.Target{
				Addresses: addrs, TLS: clientTLS, Namespace: n.name, Belongs: belongsTo(n.name),
				Token: func(context.Context) (string, error) { return tokens[i], nil },
			}
		})
	}
	t.Cleanup(func() {
		stopFleets()
		a.fleet.Wait()
		b.fleet.Wait()
	})
	rs := startRealSidecar(t, env, a.name, clientTLS, addrs...)
	steady, revoked, revokedLater := deliveredKey(t, env, a.name, keyName(a.name, 0)), deliveredKey(t, env, a.name, keyName(a.name, 1)), deliveredKey(t, env, a.name, keyName(a.name, 2))

	for _, n := range []*simNamespace{a, b} {
		n.fleet.Start(ctx)
	}
	for _, n := range []*simNamespace{a, b} {
		converge(t, n)
	}
	framework.Eventually(t, "the real sidecar to allow the valid keys", 30*time.Second, func() (bool, string) {
		got := rs.decide(steady)
		return got == "allowed" && rs.decide(revoked) == "allowed", got
	})
	checks := rs.checkContinuously(steady)

	revoke(t, env, a, 1)
	framework.Eventually(t, "the real sidecar to deny the disabled key", 10*time.Second, func() (bool, string) {
		got := rs.decide(revoked)
		return got == "api_key_revoked", got
	})

	// A rolling restart: each replica in turn stops and starts again on
	// its address, the next one only once the restarted one serves the
	// complete state.
	for i, r := range replicas {
		r.restart()
		t1 := time.Now()
		probe(t, r.addr, clientTLS, env, a)
		t.Logf("replica %d restarted and serving %d keys after %v", i, a.keys, time.Since(t1).Round(time.Millisecond))
	}
	// Every sidecar is live after the restarts: a revocation in each
	// namespace reaches all of them.
	revoke(t, env, a, 2)
	revoke(t, env, b, 0)
	framework.Eventually(t, "the real sidecar to deny the key disabled after the restarts", 10*time.Second, func() (bool, string) {
		got := rs.decide(revokedLater)
		return got == "api_key_revoked", got
	})
	n, denied := checks.finish()
	if len(denied) > 0 {
		t.Errorf("the real sidecar did not allow the valid key in %d of %d checks, first: %s", len(denied), n, denied[0])
	}
	t.Logf("the real sidecar allowed the valid key in all %d checks through the revocations and restarts", n-int64(len(denied)))

	revokedNames := map[string]bool{keyName(a.name, 1): true, keyName(a.name, 2): true, keyName(b.name, 0): true}
	for _, n := range []*simNamespace{a, b} {
		noValidKeyLost(t, n, revokedNames)
		if v := n.fleet.Violations(); len(v) > 0 {
			t.Errorf("namespace %s: %d violations, first: %s", n.name, len(v), v[0])
		}
	}
}

// converge waits until every sidecar of n holds exactly n's state: its
// keys, all issued and ACTIVE, its one policy, no key sets.
func converge(t *testing.T, n *simNamespace) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	took, err := n.fleet.WaitReady(ctx, func(s *xdssim.Sidecar) bool {
		return s.Complete() && s.Count(xds.APIKeyEntryType) == n.keys && s.Count(xds.AuthPolicyType) == 1 && s.Count(xds.IssuerKeySetType) == 0
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("namespace with %d keys: all %d sidecars ready %v after their simultaneous start", n.keys, n.fleet.Len(), took.Round(time.Millisecond))
	for i := range n.fleet.Len() {
		s := n.fleet.Sidecar(i)
		for _, name := range n.names() {
			if e := s.Entry(name); e.GetState() != xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE || len(e.GetKeys()) != 1 {
				t.Fatalf("sidecar %d of %s: entry %s is %v with %d keys, want ACTIVE with one", i, n.name, name, e.GetState(), len(e.GetKeys()))
			}
		}
	}
}

// revoke disables APIKey i of n and waits until every sidecar of n holds
// it REVOKED; it logs the fan-out.
func revoke(t *testing.T, env *testenv.Env, n *simNamespace, i int) {
	t.Helper()
	name := keyName(n.name, i)
	t0 := time.Now()
	env.DisableAPIKey(t, n.name, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	times, err := n.fleet.WaitAll(ctx, name, func(e *xdsv1alpha1.APIKeyEntry) bool {
		return e.GetState() == xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED
	})
	if err != nil {
		t.Fatal(err)
	}
	lat := make([]time.Duration, len(times))
	for j, at := range times {
		lat[j] = at.Sub(t0)
	}
	slices.Sort(lat)
	t.Logf("revocation of one key of %d reached all %d sidecars: p50 %v, p99 %v, max %v after the update was sent",
		n.keys, len(lat), lat[len(lat)/2].Round(time.Millisecond), lat[(len(lat)*99+99)/100-1].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
}

// probe waits until the replica at addr serves n's complete state to a
// sidecar of its own.
func probe(t *testing.T, addr string, clientTLS *tls.Config, env *testenv.Env, n *simNamespace) {
	t.Helper()
	token := env.ServiceAccountToken(t, n.name, "probe", xds.DefaultAudience)
	f := xdssim.NewFleet(1, func(int) xdssim.Target {
		return xdssim.Target{
			Addresses: []string{addr}, TLS: clientTLS, Namespace: n.name, Belongs: belongsTo(n.name),
			Token: func(context.Context) (string, error) { return token, nil },
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer func() {
		cancel()
		f.Wait()
	}()
	f.Start(ctx)
	if _, err := f.WaitReady(ctx, func(s *xdssim.Sidecar) bool { return s.Complete() && s.Count(xds.APIKeyEntryType) == n.keys }); err != nil {
		t.Fatalf("the restarted replica %s: %v", addr, err)
	}
	if v := f.Violations(); len(v) > 0 {
		t.Fatalf("the restarted replica %s: %q", addr, v)
	}
}

// noValidKeyLost checks that no sidecar of n ever lost a key that stayed
// valid: none was removed or held other than ACTIVE, through the
// restarts.
func noValidKeyLost(t *testing.T, n *simNamespace, revoked map[string]bool) {
	t.Helper()
	for i := range n.fleet.Len() {
		s := n.fleet.Sidecar(i)
		for _, name := range n.names() {
			want := 0
			if revoked[name] {
				want = 1
			}
			if got := s.Removals(name); got != want {
				t.Errorf("sidecar %d of %s: %s removed or made inactive %d times, want %d", i, n.name, name, got, want)
			}
		}
		if got := s.Count(xds.APIKeyEntryType); got != n.keys {
			t.Errorf("sidecar %d of %s holds %d keys, want %d", i, n.name, got, n.keys)
		}
	}
}
