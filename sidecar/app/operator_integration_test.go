package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/controllers/signingkeys"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

func startSigningKeyController(t *testing.T, env *testenv.Env, ns string) {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Logger:                 testr.New(t).WithName("operator"),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&signingkeys.Reconciler{}).SetupWithManager(context.Background(), mgr); err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)
}

// TestIntegrationTokensOfTheOperatorsActiveKeyAreAllowedThroughARotation
// runs the real SigningKey controller: the sidecar verifies tokens signed
// with whatever key the operator says is active (as the token endpoint
// signs them), before, during and after a rotation requested by
// annotation, with zero denials.
func TestIntegrationTokensOfTheOperatorsActiveKeyAreAllowedThroughARotation(t *testing.T) {
	env, ns := testenv.Start(t)
	startSigningKeyController(t, env, ns)
	iss := "https://issuer.example.com/" + ns
	sk := &gatehousev1.SigningKey{
		ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: ns},
		Spec: gatehousev1.SigningKeySpec{Algorithm: gatehousev1.ES256, Issuer: iss, Rotation: &gatehousev1.SigningKeyRotation{
			Every: &metav1.Duration{Duration: time.Hour}, Overlap: &metav1.Duration{Duration: time.Minute},
			Propagation: &metav1.Duration{Duration: 3 * time.Second},
		}},
	}
	pol := testfixture.Policy(ns, "main", time.Time{}, []gatehousev1.TrustedIssuer{
		{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}, Audiences: []string{"orders"}},
	}, gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}})
	pol.CreationTimestamp = metav1.Time{}
	create(t, env, sk, pol)

	// mint signs with the key the operator says is active now, the way
	// the token endpoint does.
	mint := func() (string, string, bool) {
		active, _, err := keyring.ActiveFor(context.Background(), env.Client, "", ns, "platform", time.Now())
		if err != nil {
			return "", err.Error(), false
		}
		tok, err := jwt.NewBuilder().Issuer(iss).Subject("svc").Audience([]string{"orders"}).
			IssuedAt(time.Now()).Expiration(time.Now().Add(time.Minute)).Build()
		if err != nil {
			t.Fatal(err)
		}
		signed, err := jwt.Sign(tok, jwt.WithKey(jwa.SignatureAlgorithm(active.Key.Algorithm().String()), active.Key))
		if err != nil {
			t.Fatal(err)
		}
		return string(signed), active.Key.KeyID(), true
	}
	var first string
	framework.Eventually(t, "the operator to activate a key", 30*time.Second, func() (bool, string) {
		_, kid, ok := mint()
		first = kid
		return ok, kid
	})

	r := start(t, ns, &source.Kubernetes{Config: sidecarConfig(t, env, ns), Namespace: ns, Log: testr.New(t)}, nil)
	waitReady(t, r)
	framework.Eventually(t, "the operator's JWKS to reach the sidecar", 10*time.Second, func() (bool, string) {
		tok, _, _ := mint()
		got := reason(r.send(t, map[string]string{"authorization": "Bearer " + tok}))
		return got == "allowed", got
	})

	// A rotation request counts only if it is later than the activation
	// of the current key (RFC 3339 has whole seconds): wait for that.
	cur := &gatehousev1.SigningKey{}
	framework.Eventually(t, "the active key's activation to be a second in the past", 30*time.Second, func() (bool, string) {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(sk), cur); err != nil {
			return false, err.Error()
		}
		for _, k := range cur.Status.Keys {
			if k.Phase == gatehousev1.KeyPhaseActive && k.ActivatesAt != nil {
				return time.Since(k.ActivatesAt.Time) > 1100*time.Millisecond, k.ActivatesAt.String()
			}
		}
		return false, "no active key in status"
	})
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	cur.Annotations[gatehousev1.AnnotationRotateRequestedAt] = time.Now().UTC().Format(time.RFC3339)
	if err := env.Client.Update(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	// Send fresh tokens of the active key, and keep re-sending the old
	// key's last token, until the new key has signed for a while.
	var oldToken string
	sent, denied := 0, map[string]int{}
	var newKid string
	deadline := time.Now().Add(60 * time.Second)
	for newSigned := 0; newSigned < 200; {
		if time.Now().After(deadline) {
			t.Fatalf("the operator did not activate a new key within 60s (sent %d)", sent)
		}
		tok, kid, ok := mint()
		if !ok {
			t.Fatalf("no active key during the rotation: %s", kid)
		}
		if kid == first {
			oldToken = tok
		} else {
			newKid = kid
			newSigned++
		}
		for _, tk := range []string{tok, oldToken} {
			if tk == "" {
				continue
			}
			sent++
			if got := reason(r.send(t, map[string]string{"authorization": "Bearer " + tk})); got != "allowed" {
				denied[got]++
			}
		}
	}
	t.Logf("rotation by the operator from %s to %s: %d requests, denials %v", first, newKid, sent, denied)
	if len(denied) > 0 {
		t.Fatalf("requests were denied during the operator's rotation: %v", denied)
	}
	// The JWKS the status publishes holds both keys while the old one is retired.
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(sk), cur); err != nil {
		t.Fatal(err)
	}
	set, _, err := snapshotParse(cur.Status.JWKS)
	if err != nil || set.Len() != 2 {
		t.Fatalf("the JWKS during the overlap holds %d keys (%v), want 2", set.Len(), err)
	}
}
