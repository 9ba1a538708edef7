package app_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/controllers/apikeys"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// TestIntegrationTheNewOperatorTakesOverAPreviousVersionsRecords creates,
// by hand, what the previous version left on a cluster: an APIKey whose
// status names its key but holds no hash, its record ConfigMap (controlled
// by the APIKey) and its delivery Secret; plus a forged record for a key
// ID status never named. Then it starts the new operator and a sidecar and
// checks that the key is allowed on every check from the moment its hash
// is in status on, that the record ConfigMap is deleted, and that the
// forged entry contributed nothing.
func TestIntegrationTheNewOperatorTakesOverAPreviousVersionsRecords(t *testing.T) {
	env, ns := testenv.Start(t)
	ctx := context.Background()
	key, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	planted, _ := apikeyformat.Generate(rand.Reader)
	issued := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)

	ak := &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: ns},
		Spec: gatehousev1.APIKeySpec{Subject: "service:billing", Scopes: []string{"orders:read"}, SecretName: "billing-key"}}
	if err := env.Client.Create(ctx, ak); err != nil {
		t.Fatal(err)
	}
	recordName := apikeys.LegacyRecordName(ak.Name)
	ak.Status = gatehousev1.APIKeyStatus{ObservedGeneration: ak.Generation, KeyID: key.ID(), IssuedAt: &metav1.Time{Time: issued},
		RecordConfigMapName: recordName,
		Conditions: []metav1.Condition{{Type: gatehousev1.ConditionReady, Status: metav1.ConditionTrue, Reason: gatehousev1.ReasonIssued,
			Message: "Key " + key.ID() + " is recorded in ConfigMap " + recordName + ".", LastTransitionTime: metav1.Time{Time: issued}, ObservedGeneration: ak.Generation}}}
	if err := env.Client.Status().Update(ctx, ak); err != nil {
		t.Fatal(err)
	}
	controller := []metav1.OwnerReference{*metav1.NewControllerRef(ak, gatehousev1.GroupVersion.WithKind("APIKey"))}
	// The record lists the real key and, first, a key the status never
	// named (say, edited in by someone with ConfigMap write).
	rec := &apikeyformat.Record{Version: apikeyformat.RecordVersion, Name: ak.Name, Namespace: ns, Subject: "service:billing",
		Scopes: []string{"orders:read"}, State: apikeyformat.StateActive, Keys: []apikeyformat.RecordKey{
			{KeyID: planted.ID(), SHA256: planted.Hash()},
			{KeyID: key.ID(), SHA256: key.Hash(), IssuedAt: &issued},
		}}
	data, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey, gatehousev1.LabelOwnerName: ak.Name, gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue}
	objs := []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: recordName, Namespace: ns, Labels: labels, OwnerReferences: controller},
			Data: map[string]string{gatehousev1.RecordDataKey: string(data)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "billing-key", Namespace: ns, OwnerReferences: controller,
			Labels:      map[string]string{gatehousev1.LabelOwnerName: ak.Name, gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue},
			Annotations: map[string]string{apikeys.AnnotationIssuedAt: issued.Format(time.RFC3339)}},
			Type: apikeys.DeliverySecretType,
			Data: map[string][]byte{gatehousev1.DeliveryKeyDataKey: []byte(key.Plaintext()), gatehousev1.DeliveryKeyIDDataKey: []byte(key.ID())}},
		testfixture.Policy(ns, "orders", time.Time{}, nil,
			gatehousev1.Rule{Name: "read", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}}),
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	f := startStackOn(t, env, ns)
	allowed := func(plain string) (bool, string) {
		v := f.check(t, map[string]string{"x-api-key": plain})
		return v.Allowed, v.String()
	}
	// The new sidecar accepts the key once the operator has taken its hash
	// over into status; the operator does so on its first pass, and the
	// stack starts both at once, so a sidecar may see the APIKey a moment
	// before that (a new sidecar of a real upgrade starts after the
	// operator: see docs/apikeys.md). From the first allowed check on,
	// until the record is gone and for a while after, every check of the
	// real key must be allowed.
	start := time.Now()
	framework.Eventually(t, "the migrated key to be allowed", 10*time.Second, func() (bool, string) { return allowed(key.Plaintext()) })
	t.Logf("the new sidecar allowed the migrated key %v after the stack was ready", time.Since(start).Round(time.Millisecond))
	recordGone := time.Time{}
	checks := 0
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ok, last := allowed(key.Plaintext()); !ok {
			t.Fatalf("check %d of the real key during the switch was denied: %s", checks, last)
		}
		checks++
		if recordGone.IsZero() {
			err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: recordName}, &corev1.ConfigMap{})
			if apierrors.IsNotFound(err) {
				recordGone = time.Now()
			}
		}
		if !recordGone.IsZero() && time.Since(recordGone) > 2*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the previous version's record ConfigMap was not deleted within 30s (%d checks allowed)", checks)
		}
	}
	t.Logf("%d checks of the real key, all allowed", checks)

	got := &gatehousev1.APIKey{}
	framework.Eventually(t, "status to hold the hash and forget the record", 10*time.Second, func() (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ak), got); err != nil {
			return false, err.Error()
		}
		return len(got.Status.Keys) == 1 && got.Status.RecordConfigMapName == "", "status keys and record name not settled"
	})
	if k := got.Status.Keys[0]; k.KeyID != key.ID() || k.SHA256 != key.Hash() || got.Status.DeliveredKeyID != key.ID() || got.Status.State != gatehousev1.APIKeyActive {
		t.Fatalf("status after the migration: %+v", got.Status)
	}
	if ok, last := allowed(planted.Plaintext()); ok {
		t.Fatalf("a key the status never named was taken over from the record: %s", last)
	}
	if _, err := apikeyformat.Parse(f.deliveredKey(t, "billing-key")); err != nil {
		t.Fatal(err)
	}
	if k := f.deliveredKey(t, "billing-key"); k != key.Plaintext() {
		t.Fatal("the migration replaced the delivered key")
	}
}
