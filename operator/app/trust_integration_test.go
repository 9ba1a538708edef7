package app_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/controllers/apikeys"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// configMapAndSecretWriter is the Role of an identity that may write
// ConfigMaps and Secrets in a namespace but no Gatehouse resource: a CI
// deployer, a config reloader, a GitOps controller.
var configMapAndSecretWriter = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
}

// apiKeyEditor is what the aggregated edit and admin roles grant on
// APIKeys: everything on the resource, nothing on its status.
var apiKeyEditor = []rbacv1.PolicyRule{
	{APIGroups: []string{gatehousev1.GroupVersion.Group}, Resources: []string{"apikeys"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
}

// forgedRecord is the hash-record ConfigMap the previous version's
// validators trusted: any subject and scopes, any key ID and hash.
func forgedRecord(ns, name, subject string, keyID, sha string) *corev1.ConfigMap {
	rec := &apikeyformat.Record{Version: apikeyformat.RecordVersion, Name: name, Namespace: ns, Subject: subject,
		Scopes: []string{"orders:read", "orders:write", "admin"}, State: apikeyformat.StateActive,
		TokenExchange: &apikeyformat.RecordTokenExchange{SigningKeyName: "platform", MaxLifetimeSeconds: 900},
		Keys:          []apikeyformat.RecordKey{{KeyID: keyID, SHA256: sha}}}
	data, err := rec.Marshal()
	if err != nil {
		panic(err)
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name + apikeys.LegacyRecordNameSuffix, Namespace: ns, Labels: map[string]string{
			gatehousev1.LabelRecord: gatehousev1.RecordAPIKey, gatehousev1.LabelOwnerName: name, gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue}},
		Data: map[string]string{gatehousev1.RecordDataKey: string(data)},
	}
}

// holds asserts that cond stays true for d, checking every 100ms.
func holds(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ok, last := cond(); !ok {
			t.Fatalf("%s: no longer true: %s", what, last)
		}
	}
}

// TestIntegrationAnIdentityThatWritesConfigMapsAndSecretsGainsNothing is
// issue #11's attack test. Every attack runs as a ServiceAccount bound to a
// Role that may write ConfigMaps and Secrets (in namespace A, and in a
// second test namespace B) but no Gatehouse resource. Each attack
// succeeded against the previous version, whose sidecar and token endpoint
// trusted any ConfigMap labelled auth.gatehouse.dev/record=apikey and whose
// operator rebuilt a key's hash from its delivery Secret.
func TestIntegrationAnIdentityThatWritesConfigMapsAndSecretsGainsNothing(t *testing.T) {
	f := startStack(t)
	ctx := context.Background()
	nsB := f.env.Namespace(t)
	issuer := "https://auth.example.com/" + f.ns
	f.create(t,
		&gatehousev1.SigningKey{
			ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: f.ns},
			Spec:       gatehousev1.SigningKeySpec{Algorithm: gatehousev1.ES256, Issuer: issuer},
		},
		&gatehousev1.APIKey{
			ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: f.ns},
			Spec: gatehousev1.APIKeySpec{
				Subject: "service:billing", Scopes: []string{"orders:read"}, SecretName: "billing-key",
				TokenExchange: &gatehousev1.TokenExchange{SigningKeyName: "platform"},
			},
		},
		testfixture.Policy(f.ns, "orders", time.Time{}, nil,
			gatehousev1.Rule{Name: "read", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}}),
	)
	realPlain := f.deliveredKey(t, "billing-key")
	real, err := apikeyformat.Parse(realPlain)
	if err != nil {
		t.Fatal(err)
	}
	keyAllowed := func(plain string) func() (bool, string) {
		return func() (bool, string) {
			v := f.check(t, map[string]string{"x-api-key": plain})
			return v.Allowed, v.String()
		}
	}
	tokenIssued := func(plain string) func() (bool, string) {
		return func() (bool, string) {
			tr := f.token(t, plain, "orders:read")
			return tr.Status == http.StatusOK, tr.String()
		}
	}
	denied := func(cond func() (bool, string)) func() (bool, string) {
		return func() (bool, string) { ok, last := cond(); return !ok, last }
	}
	framework.Eventually(t, "the sidecar to allow the real key", 30*time.Second, keyAllowed(realPlain))
	framework.Eventually(t, "the endpoint to exchange the real key", 30*time.Second, tokenIssued(realPlain))

	attackerA, err := client.New(f.env.ServiceAccountConfig(t, f.ns, "deployer", configMapAndSecretWriter), client.Options{Scheme: f.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	attackerB, err := client.New(f.env.ServiceAccountConfig(t, nsB, "deployer", configMapAndSecretWriter), client.Options{Scheme: f.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	forged, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// Attack 1: forge a record for a key of the attacker's own, with any
	// subject and scopes, and present it at A's sidecar. Before: allowed as
	// "admin" with every scope. Now: 401.
	if err := attackerA.Create(ctx, forgedRecord(f.ns, "admin", "admin", forged.ID(), forged.Hash())); err != nil {
		t.Fatalf("the attacker could not even create the ConfigMap (the test would prove nothing): %v", err)
	}
	holds(t, 2*time.Second, "a forged record's key is denied at the sidecar", func() (bool, string) {
		v := f.check(t, map[string]string{"x-api-key": forged.Plaintext()})
		return !v.Allowed && v.Status == http.StatusUnauthorized, v.String()
	})

	// Attack 2: exchange the forged key at the token endpoint for a token
	// signed with A's real SigningKey. Before: a token for "admin". Now:
	// refused.
	if tr := f.token(t, forged.Plaintext(), "orders:read"); tr.Status == http.StatusOK || tr.AccessToken != "" {
		t.Fatalf("the token endpoint issued a token for a forged record: %s", tr)
	}

	// Attack 3: list the real key's (public) ID in a forged record. Before:
	// the sidecar denied the key ID as claimed twice, and the token endpoint
	// answered 503. Now: nothing changes for the real key.
	if err := attackerA.Create(ctx, forgedRecord(f.ns, "twin", "twin", real.ID(), forged.Hash())); err != nil {
		t.Fatal(err)
	}
	holds(t, 2*time.Second, "the real key stays allowed despite a record listing its ID", keyAllowed(realPlain))
	framework.Eventually(t, "the real key to exchange despite a record listing its ID", 5*time.Second, tokenIssued(realPlain))

	// Attack 4: overwrite the delivery Secret with the attacker's key.
	// Before: the operator took the Secret as the source of truth and
	// recorded the attacker's hash, so the forged key was accepted. Now:
	// the change is reported, the real key stays valid and the planted one
	// is refused.
	sec := &corev1.Secret{}
	if err := attackerA.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: "billing-key"}, sec); err != nil {
		t.Fatal(err)
	}
	sec.Data[gatehousev1.DeliveryKeyDataKey] = []byte(forged.Plaintext())
	sec.Data[gatehousev1.DeliveryKeyIDDataKey] = []byte(forged.ID())
	if err := attackerA.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "the operator to report the altered delivery Secret", 30*time.Second, func() (bool, string) {
		ak := &gatehousev1.APIKey{}
		if err := f.env.Client.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: "billing"}, ak); err != nil {
			return false, err.Error()
		}
		c := findCondition(ak.Status.Conditions, gatehousev1.ConditionDelivered)
		return c != nil && c.Reason == gatehousev1.ReasonDeliverySecretChanged, fmt.Sprintf("%+v", c)
	})
	holds(t, 2*time.Second, "the real key stays allowed after the Secret was overwritten", keyAllowed(realPlain))
	holds(t, time.Second, "the planted key is denied", denied(keyAllowed(forged.Plaintext())))
	if tr := f.token(t, forged.Plaintext(), "orders:read"); tr.Status == http.StatusOK {
		t.Fatalf("the planted key was exchanged: %s", tr)
	}
	framework.Eventually(t, "the real key to exchange after the Secret was overwritten", 5*time.Second, tokenIssued(realPlain))

	// Attack 5: delete the delivery Secret. Before: the operator issued a
	// new key and, without a rotation grace period, dropped the real one at
	// once: an outage. Now: the real key stays valid.
	if err := attackerA.Delete(ctx, sec); err != nil {
		t.Fatal(err)
	}
	holds(t, 2*time.Second, "the real key stays allowed after the Secret was deleted", keyAllowed(realPlain))
	framework.Eventually(t, "the real key to exchange after the Secret was deleted", 5*time.Second, tokenIssued(realPlain))

	// Attack 6: from namespace B, plant a record listing A's key ID (and,
	// for good measure, its hash, which is public in A's status). Before:
	// the token endpoint's cluster-wide index found two records and
	// answered A's client 503. Now: A's exchange still works.
	if err := attackerB.Create(ctx, forgedRecord(nsB, "dup", "service:evil", real.ID(), real.Hash())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the operator's cache see it, if it looked
	for range 5 {
		tr := f.token(t, realPlain, "orders:read")
		if tr.Status != http.StatusOK {
			t.Fatalf("a record in namespace B broke A's exchange: %s", tr)
		}
	}

	// Nor can the attacker touch the APIKey or its status.
	ak := &gatehousev1.APIKey{}
	if err := f.env.Client.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: "billing"}, ak); err != nil {
		t.Fatal(err)
	}
	ak.Status.Keys = append(ak.Status.Keys, gatehousev1.APIKeyStatusKey{KeyID: forged.ID(), SHA256: forged.Hash()})
	if err := attackerA.Status().Update(ctx, ak.DeepCopy()); !apierrors.IsForbidden(err) {
		t.Fatalf("the ConfigMap/Secret writer updated APIKey status: %v", err)
	}
}

// TestIntegrationAnAPIKeyEditorCannotWriteItsStatus checks the other half
// of the trust rule: the author of an APIKey (what the aggregated edit and
// admin roles grant) writes its spec, never the hashes in its status.
func TestIntegrationAnAPIKeyEditorCannotWriteItsStatus(t *testing.T) {
	f := startStack(t)
	ctx := context.Background()
	editor, err := client.New(f.env.ServiceAccountConfig(t, f.ns, "editor", apiKeyEditor), client.Options{Scheme: f.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ak := &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: f.ns},
		Spec: gatehousev1.APIKeySpec{Subject: "service:mine", SecretName: "mine-key"}}
	if err := editor.Create(ctx, ak); err != nil {
		t.Fatalf("an editor could not create an APIKey (the test would prove nothing): %v", err)
	}
	forged, _ := apikeyformat.Generate(rand.Reader)
	ak.Status = gatehousev1.APIKeyStatus{State: gatehousev1.APIKeyActive, Keys: []gatehousev1.APIKeyStatusKey{{KeyID: forged.ID(), SHA256: forged.Hash()}}}
	if err := editor.Status().Update(ctx, ak); !apierrors.IsForbidden(err) {
		t.Fatalf("an APIKey editor wrote its status: %v", err)
	}
}

// TestIntegrationAnAPIKeyDeletedWithOrphanCascadeLeavesNothingAccepted
// deletes an APIKey with --cascade=orphan: its delivery Secret stays
// behind with the plaintext, but validators read APIKeys, so the key is
// refused everywhere. (Before: the orphaned record stayed Active for ever.)
func TestIntegrationAnAPIKeyDeletedWithOrphanCascadeLeavesNothingAccepted(t *testing.T) {
	f := startStack(t)
	ctx := context.Background()
	f.create(t,
		&gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: f.ns},
			Spec: gatehousev1.SigningKeySpec{Algorithm: gatehousev1.ES256, Issuer: "https://auth.example.com/" + f.ns}},
		&gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: f.ns},
			Spec: gatehousev1.APIKeySpec{Subject: "service:gone", Scopes: []string{"orders:read"}, SecretName: "gone-key",
				TokenExchange: &gatehousev1.TokenExchange{SigningKeyName: "platform"}}},
		testfixture.Policy(f.ns, "orders", time.Time{}, nil,
			gatehousev1.Rule{Name: "read", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}}),
	)
	plain := f.deliveredKey(t, "gone-key")
	framework.Eventually(t, "the sidecar to allow the key", 30*time.Second, func() (bool, string) {
		v := f.check(t, map[string]string{"x-api-key": plain})
		return v.Allowed, v.String()
	})
	framework.Eventually(t, "the endpoint to exchange the key", 30*time.Second, func() (bool, string) {
		tr := f.token(t, plain, "orders:read")
		return tr.Status == http.StatusOK, tr.String()
	})
	ak := &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: f.ns}}
	if err := f.env.Client.Delete(ctx, ak, client.PropagationPolicy(metav1.DeletePropagationOrphan)); err != nil {
		t.Fatal(err)
	}
	deny := func(what string) {
		t.Helper()
		framework.Eventually(t, "the sidecar to deny the key "+what, 10*time.Second, func() (bool, string) {
			v := f.check(t, map[string]string{"x-api-key": plain})
			return !v.Allowed, v.String()
		})
		// The endpoint reads the operator's informer cache, not the
		// sidecar's: it sees the deletion on its own schedule.
		framework.Eventually(t, "the token endpoint to refuse the key "+what, 10*time.Second, func() (bool, string) {
			tr := f.token(t, plain, "orders:read")
			return tr.Status != http.StatusOK, tr.String()
		})
	}
	// The test control plane runs no garbage collector: the APIKey waits
	// with the orphan finalizer, as it does in a cluster until the
	// collector gets to it. Validators refuse it already.
	deny("of an APIKey being deleted")
	// Do what the collector does: release the dependents, then the
	// finalizer.
	sec := &corev1.Secret{}
	if err := f.env.Client.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: "gone-key"}, sec); err != nil {
		t.Fatal(err)
	}
	sec.OwnerReferences = nil
	if err := f.env.Client.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	cur := &gatehousev1.APIKey{}
	if err := f.env.Client.Get(ctx, client.ObjectKeyFromObject(ak), cur); err != nil {
		t.Fatal(err)
	}
	cur.Finalizers = nil
	if err := f.env.Client.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "the APIKey to be gone", 30*time.Second, func() (bool, string) {
		err := f.env.Client.Get(ctx, client.ObjectKeyFromObject(ak), &gatehousev1.APIKey{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if err := f.env.Client.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: "gone-key"}, &corev1.Secret{}); err != nil {
		t.Fatalf("the orphaned delivery Secret should remain (the test would prove less): %v", err)
	}
	deny("of a deleted APIKey whose Secret was orphaned")
	holds(t, 2*time.Second, "the orphaned key stays denied", func() (bool, string) {
		v := f.check(t, map[string]string{"x-api-key": plain})
		return !v.Allowed, v.String()
	})
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}
