package authpolicies

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestCheckJWKS(t *testing.T) {
	cases := map[string]struct {
		doc  string
		want string
	}{
		"a public EC key is accepted": {`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`, ""},
		"garbage is refused":          {`{"keys":`, "is not a valid JWKS"},
		"an empty set is refused":     {`{"keys":[]}`, "has no keys"},
		"a symmetric key is refused":  {`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, "holds a symmetric or unknown key type, which verifiers refuse"},
		"a private key is refused": {`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}`,
			"holds private key material; publish public keys only"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := checkJWKS([]byte(tc.doc)); got != tc.want {
				t.Fatalf("checkJWKS = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestIntegrationReadyReflectsWhetherReferencesResolve(t *testing.T) {
	env, ns := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	skip := true // -count > 1 runs a manager per run in one process
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: &skip}})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)

	c := env.Client
	rule := []gatehousev1.Rule{{Match: gatehousev1.RuleMatch{Paths: []string{"/"}}}}
	missing := &gatehousev1.AuthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "refs-missing", Namespace: ns}, Spec: gatehousev1.AuthPolicySpec{
		Issuers: []gatehousev1.TrustedIssuer{{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}}},
		Rules:   rule,
	}}
	badCM := &gatehousev1.AuthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bad-configmap", Namespace: ns}, Spec: gatehousev1.AuthPolicySpec{
		Issuers: []gatehousev1.TrustedIssuer{{Name: "partner", Issuer: "https://partner.example.com", JWKS: &gatehousev1.StaticJWKS{
			ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "partner-jwks"}, Key: "jwks.json"}}}},
		Rules: rule,
	}}
	for _, p := range []*gatehousev1.AuthPolicy{missing, badCM} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	waitForReady(ctx, t, c, missing, metav1.ConditionFalse, gatehousev1.ReasonIssuerNotFound)
	waitForReady(ctx, t, c, badCM, metav1.ConditionFalse, gatehousev1.ReasonIssuerNotFound)

	// Creating the SigningKey re-checks the policy through the watch.
	sk := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: ns}, Spec: gatehousev1.SigningKeySpec{Issuer: "https://auth.example.com"}}
	if err := c.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	waitForReady(ctx, t, c, missing, metav1.ConditionTrue, gatehousev1.ReasonAccepted)
}

func waitForReady(ctx context.Context, t *testing.T, c client.Client, p *gatehousev1.AuthPolicy, status metav1.ConditionStatus, reason string) {
	t.Helper()
	framework.Eventually(t, fmt.Sprintf("AuthPolicy %s to be Ready=%s/%s", p.Name, status, reason), 30*time.Second, func() (bool, string) {
		got := &gatehousev1.AuthPolicy{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
			return false, err.Error()
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, gatehousev1.ConditionReady)
		if cond == nil {
			return false, "no Ready condition"
		}
		return cond.Status == status && cond.Reason == reason && cond.ObservedGeneration == got.Generation,
			fmt.Sprintf("%s %s: %s", cond.Status, cond.Reason, cond.Message)
	})
}
