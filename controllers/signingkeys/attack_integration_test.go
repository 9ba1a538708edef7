package signingkeys

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/operator/discovery"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

// These tests are the attacks of issue #11 on SigningKeys, each run with
// the identity an attacker would really hold, on the real API server.
// Before the JWKS moved into the status each of them succeeded: a forged
// JWKS ConfigMap was served (and trusted by sidecars) while the real one
// was missing, a duplicate kid made the real key fail, a rewritten
// private-key Secret was published and signed with, and a SigningKey in
// another namespace took an issuer offline or over.

// attackerClient is a client acting as ServiceAccount ns/name bound to a
// Role with rules in ns.
func attackerClient(t *testing.T, env *testenv.Env, ns, name string, rules []rbacv1.PolicyRule) client.Client {
	t.Helper()
	c, err := client.New(env.ServiceAccountConfig(t, ns, name, rules), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// configWriterRules may write ConfigMaps and Secrets, and nothing of
// Gatehouse: a CI deployer or a config reloader.
var configWriterRules = []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}}}

// signingKeyCreatorRules may manage SigningKeys, in its own namespace.
var signingKeyCreatorRules = []rbacv1.PolicyRule{{APIGroups: []string{gatehousev1.GroupVersion.Group}, Resources: []string{"signingkeys"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}}}

// forgedJWKS is a look-alike of the JWKS ConfigMap earlier versions wrote.
func forgedJWKS(ns, name, owner, issuer, doc string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			gatehousev1.LabelRecord: gatehousev1.RecordJWKS, gatehousev1.LabelOwnerName: owner, gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue}},
		Data: map[string]string{gatehousev1.JWKSDataKey: doc, gatehousev1.JWKSIssuerKey: issuer},
	}
}

func attackerKeySet(t *testing.T) (*keyring.KeySet, string) {
	t.Helper()
	priv, err := keyring.Generate(jwa.ES256, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keyring.PublicKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(-time.Minute).UTC()
	ks := &keyring.KeySet{Keys: []keyring.Key{{ID: priv.KeyID(), Algorithm: jwa.ES256, Private: priv, Public: pub, CreatedAt: now, PublishedAt: now, ActivatesAt: now, Overlap: time.Hour}}}
	return ks, priv.KeyID()
}

func getSK(ctx context.Context, t *testing.T, c client.Client, ns, name string) *gatehousev1.SigningKey {
	t.Helper()
	sk := &gatehousev1.SigningKey{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, sk); err != nil {
		t.Fatal(err)
	}
	return sk
}

func TestIntegrationAConfigMapAndSecretWriterCannotTakeOrBreakAnIssuer(t *testing.T) {
	env, ns := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	attacker := attackerClient(t, env, ns, "deployer", configWriterRules)
	host := ns + ".example.com"
	issuer := "https://" + host + "/auth"
	forgedSet, forgedKid := attackerKeySet(t)
	forgedDoc, err := forgedSet.JWKS(time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// Before the first reconcile: a JWKS ConfigMap under the name the
	// operator used, labelled as its own.
	if err := attacker.Create(ctx, forgedJWKS(ns, "tokens-jwks", "tokens", issuer, string(forgedDoc))); err != nil {
		t.Fatal(err)
	}
	sk := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tokens"}, Spec: gatehousev1.SigningKeySpec{Issuer: issuer}}
	if err := env.Client.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	base := startManager(t, env, ns)
	var real *gatehousev1.SigningKey
	framework.Eventually(t, "the SigningKey to publish its own JWKS", eventuallyTimeout, func() (bool, string) {
		real = getSK(ctx, t, env.Client, ns, "tokens")
		return real.Status.ActiveKeyID != "" && hasKid([]byte(real.Status.JWKS), real.Status.ActiveKeyID), real.Status.JWKS
	})
	assertServedAndSigned := func(what string) {
		t.Helper()
		cur := getSK(ctx, t, env.Client, ns, "tokens")
		status, body, _ := fetch(t, base+"/auth"+discovery.JWKSPath, host, "")
		if status != 200 || body != cur.Status.JWKS || strings.Contains(body, forgedKid) {
			t.Fatalf("%s: discovery served %d %s, want the status JWKS without %s", what, status, body, forgedKid)
		}
		a, _, err := keyring.ActiveFor(ctx, env.Client, "", ns, "tokens", time.Now())
		if err != nil || a.Key.KeyID() == forgedKid || !hasKid([]byte(cur.Status.JWKS), a.Key.KeyID()) {
			t.Fatalf("%s: the token endpoint would sign with %v (%v)", what, a.Key, err)
		}
	}
	assertServedAndSigned("a forged JWKS ConfigMap created before the first reconcile")

	// A second record listing the real active kid, which used to make
	// sidecars drop the real key.
	if err := attacker.Create(ctx, forgedJWKS(ns, "duplicate-jwks", "tokens", issuer, real.Status.JWKS)); err != nil {
		t.Fatal(err)
	}
	assertServedAndSigned("a duplicate of the real key ID in another ConfigMap")

	// Overwrite the private key set with the attacker's own key.
	sec := &corev1.Secret{}
	if err := attacker.Get(ctx, types.NamespacedName{Namespace: ns, Name: keyring.SecretName("tokens")}, sec); err != nil {
		t.Fatal(err)
	}
	forgedKeys, err := forgedSet.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[keyring.SecretDataKey] = forgedKeys
	if err := attacker.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if a, _, err := keyring.ActiveFor(ctx, env.Client, "", ns, "tokens", time.Now()); err == nil && a.Key.KeyID() == forgedKid {
			t.Fatal("the token endpoint would sign with the key written into the Secret")
		}
		if hasKid([]byte(getSK(ctx, t, env.Client, ns, "tokens").Status.JWKS), forgedKid) {
			t.Fatal("the key written into the Secret was published")
		}
		time.Sleep(50 * time.Millisecond)
	}
	framework.Eventually(t, "a KeyTampered Warning and a repaired Secret", eventuallyTimeout, func() (bool, string) {
		evs := &eventsv1.EventList{}
		if err := env.Client.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		warned := false
		for _, e := range evs.Items {
			warned = warned || (e.Reason == gatehousev1.ReasonKeyTampered && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, forgedKid))
		}
		a, _, err := keyring.ActiveFor(ctx, env.Client, "", ns, "tokens", time.Now())
		return warned && err == nil && a.Key.KeyID() != forgedKid, fmt.Sprintf("warned %v, signer %v (%v)", warned, a.Key, err)
	})
	assertServedAndSigned("a private-key Secret overwritten with the attacker's key")

	// After a delete, the forged ConfigMaps stay; nothing is served.
	if err := env.Client.Delete(ctx, sk); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "the deleted SigningKey's issuer to go offline", eventuallyTimeout, func() (bool, string) {
		status, body, _ := fetch(t, base+"/auth"+discovery.JWKSPath, host, "")
		if strings.Contains(body, forgedKid) {
			t.Fatalf("the forged JWKS is served after the delete: %s", body)
		}
		return status == 404, fmt.Sprintf("%d %s", status, body)
	})
	// The attacker could not have done it the honest way either.
	thief := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "thief"}, Spec: gatehousev1.SigningKeySpec{Issuer: issuer}}
	if err := attacker.Create(ctx, thief); !apierrors.IsForbidden(err) {
		t.Fatalf("the ConfigMap and Secret writer created a SigningKey: %v", err)
	}
}

func TestIntegrationASigningKeyCreatorInAnotherNamespaceCannotTakeOrBreakAnIssuer(t *testing.T) {
	env, nsA := testenv.Start(t)
	nsB := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const host = "auth.example.com"
	prefix := keyring.IssuerPrefix("https://" + host + "/{namespace}/")
	base := startManagerWith(t, env, prefix, nsA, nsB)
	thiefClient := attackerClient(t, env, nsB, "tenant-b", signingKeyCreatorRules)
	victimIssuer := "https://" + host + "/" + nsA + "/"
	path := "/" + nsA + discovery.JWKSPath

	// Before A's SigningKey exists.
	thief := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: nsB, Name: "thief"}, Spec: gatehousev1.SigningKeySpec{Issuer: victimIssuer}}
	if err := thiefClient.Create(ctx, thief); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "B's claim to be refused", eventuallyTimeout, func() (bool, string) {
		got := getSK(ctx, t, thiefClient, nsB, "thief")
		ready := metaCondition(got.Status.Conditions, gatehousev1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionFalse && ready.Reason == gatehousev1.ReasonIssuerOutsidePrefix && got.Status.JWKS == "", fmt.Sprintf("%+v", got.Status)
	})
	if status, body, _ := fetch(t, base+path, host, ""); status != 404 {
		t.Fatalf("before A exists B's keys are served under A's issuer: %d %s", status, body)
	}
	if _, _, err := keyring.ActiveFor(ctx, env.Client, prefix, nsB, "thief", time.Now()); err == nil {
		t.Fatal("the token endpoint would sign A's issuer with B's key")
	}
	// B may not create anything in A.
	inA := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "thief"}, Spec: gatehousev1.SigningKeySpec{Issuer: victimIssuer}}
	if err := thiefClient.Create(ctx, inA); !apierrors.IsForbidden(err) {
		t.Fatalf("B created a SigningKey in A: %v", err)
	}

	// After A's SigningKey exists, and while it is re-created.
	for round := range 2 {
		owner := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "tokens"}, Spec: gatehousev1.SigningKeySpec{Issuer: victimIssuer}}
		if err := env.Client.Create(ctx, owner); err != nil {
			t.Fatal(err)
		}
		var servedA string
		framework.Eventually(t, fmt.Sprintf("A's JWKS to be served (round %d)", round), eventuallyTimeout, func() (bool, string) {
			got := getSK(ctx, t, env.Client, nsA, "tokens")
			status, body, _ := fetch(t, base+path, host, "")
			servedA = got.Status.JWKS
			return status == 200 && got.Status.JWKS != "" && body == got.Status.JWKS, fmt.Sprintf("%d %s", status, body)
		})
		if _, _, err := keyring.ActiveFor(ctx, env.Client, prefix, nsA, "tokens", time.Now()); err != nil {
			t.Fatalf("A's token endpoint cannot sign: %v", err)
		}
		if err := env.Client.Delete(ctx, owner); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, "A's SigningKey to be gone", eventuallyTimeout, func() (bool, string) {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(owner), &gatehousev1.SigningKey{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		// The test control plane runs no garbage collector: remove the
		// private Secret as it would.
		gone := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: keyring.SecretName("tokens")}}
		if err := env.Client.Delete(ctx, gone); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
		// Discovery's cache may serve A's own JWKS a moment longer; it
		// must never serve anything else under A's issuer.
		framework.Eventually(t, "A's issuer to go offline while A is re-created", eventuallyTimeout, func() (bool, string) {
			status, body, _ := fetch(t, base+path, host, "")
			if status == 200 && body != servedA {
				t.Fatalf("while A is re-created other keys are served under A's issuer: %d %s", status, body)
			}
			return status == 404, fmt.Sprintf("%d %s", status, body)
		})
	}
}

func TestIntegrationALaterClaimantNeverInterruptsTheIssuersOwner(t *testing.T) {
	env, nsA := testenv.Start(t)
	nsB := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	host := nsA + ".example.com"
	issuer := "https://" + host + "/shared"
	base := startManagerWith(t, env, "", nsA, nsB)
	owner := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "tokens"}, Spec: gatehousev1.SigningKeySpec{Issuer: issuer}}
	if err := env.Client.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	var served string
	framework.Eventually(t, "A's JWKS to be served", eventuallyTimeout, func() (bool, string) {
		status, body, _ := fetch(t, base+"/shared"+discovery.JWKSPath, host, "")
		served = body
		return status == 200, fmt.Sprintf("%d %s", status, body)
	})
	// A creation time at least a second later than A's.
	time.Sleep(1100 * time.Millisecond)
	thiefClient := attackerClient(t, env, nsB, "tenant-b", signingKeyCreatorRules)
	thief := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: nsB, Name: "thief"}, Spec: gatehousev1.SigningKeySpec{Issuer: issuer + "/"}}
	if err := thiefClient.Create(ctx, thief); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "B to be refused with IssuerConflict while A is served throughout", eventuallyTimeout, func() (bool, string) {
		status, body, _ := fetch(t, base+"/shared"+discovery.JWKSPath, host, "")
		if status != 200 || body != served {
			t.Fatalf("A's service was interrupted: %d %s", status, body)
		}
		got := getSK(ctx, t, thiefClient, nsB, "thief")
		ready := metaCondition(got.Status.Conditions, gatehousev1.ConditionReady)
		return ready != nil && ready.Reason == gatehousev1.ReasonIssuerConflict && got.Status.JWKS == "", fmt.Sprintf("%+v", got.Status.Conditions)
	})
	if _, _, err := keyring.ActiveFor(ctx, env.Client, "", nsB, "thief", time.Now()); err == nil {
		t.Fatal("the token endpoint would sign A's issuer with B's key")
	}
	if _, _, err := keyring.ActiveFor(ctx, env.Client, "", nsA, "tokens", time.Now()); err != nil {
		t.Fatalf("A's token endpoint stopped signing: %v", err)
	}
}
