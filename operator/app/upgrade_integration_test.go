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
	"gatehouse.dev/gatehouse/internal/keyring"
	operatorapp "gatehouse.dev/gatehouse/operator/app"
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
	ak, key, planted, recordName := previousVersionState(t, env, ns)
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

// previousVersionState creates, by hand, what the previous version left on
// a cluster: an APIKey whose status names its key but holds no hash, its
// record ConfigMap (controlled by the APIKey, listing first a key the
// status never named) and its delivery Secret, and an AuthPolicy. It
// returns the APIKey, its key, the planted key and the record's name.
func previousVersionState(t *testing.T, env *testenv.Env, ns string) (*gatehousev1.APIKey, apikeyformat.Key, apikeyformat.Key, string) {
	t.Helper()
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

	return ak, key, planted, recordName
}

// TestIntegrationWithLegacyRecordsKeptEarlierSidecarsKeepWorking runs the
// new operator with --keep-legacy-records on what the previous version
// left, and plays a sidecar of that version beside the new one: it reads
// the record ConfigMap and applies the record's rule (Record.Check), as
// earlier sidecars did. Both accept the key on every check during the
// switch; a key created afterwards and a SigningKey's JWKS reach the
// earlier sidecars too, and so does a revocation.
func TestIntegrationWithLegacyRecordsKeptEarlierSidecarsKeepWorking(t *testing.T) {
	env, ns := testenv.Start(t)
	ctx := context.Background()
	ak, key, _, recordName := previousVersionState(t, env, ns)
	f := startStackOn(t, env, ns, func(o *operatorapp.Options) { o.KeepLegacyRecords = true })

	earlierSidecar := func(record string, k apikeyformat.Key) (apikeyformat.Decision, string) {
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: record}, cm); err != nil {
			return "", err.Error()
		}
		rec, err := apikeyformat.UnmarshalRecord([]byte(cm.Data[gatehousev1.RecordDataKey]))
		if err != nil {
			return "", err.Error()
		}
		d := rec.Check(k, time.Now())
		return d, string(d)
	}
	newSidecar := func(plain string) (bool, string) {
		v := f.check(t, map[string]string{"x-api-key": plain})
		return v.Allowed, v.String()
	}

	framework.Eventually(t, "the new sidecar to allow the migrated key", 10*time.Second, func() (bool, string) { return newSidecar(key.Plaintext()) })
	for i, deadline := 0, time.Now().Add(3*time.Second); time.Now().Before(deadline); i++ {
		if d, last := earlierSidecar(recordName, key); d != apikeyformat.Accepted {
			t.Fatalf("check %d: an earlier sidecar refused the key during the switch: %s", i, last)
		}
		if ok, last := newSidecar(key.Plaintext()); !ok {
			t.Fatalf("check %d: the new sidecar refused the key during the switch: %s", i, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := &gatehousev1.APIKey{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ak), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.RecordConfigMapName != recordName || len(got.Status.Keys) != 1 {
		t.Fatalf("status after the switch names record %q with %d keys; want %q (so that a later operator without the flag deletes it) and 1", got.Status.RecordConfigMapName, len(got.Status.Keys), recordName)
	}

	// A key created after the upgrade reaches earlier sidecars as well.
	f.create(t, &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns},
		Spec: gatehousev1.APIKeySpec{Subject: "service:orders", Scopes: []string{"orders:read"}, SecretName: "orders-key"}})
	var fresh apikeyformat.Key
	framework.Eventually(t, "the new key's record for earlier sidecars", 15*time.Second, func() (bool, string) {
		sec := &corev1.Secret{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "orders-key"}, sec); err != nil {
			return false, err.Error()
		}
		k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey]))
		if err != nil {
			return false, err.Error()
		}
		fresh = k
		d, last := earlierSidecar(apikeys.LegacyRecordName("orders"), k)
		return d == apikeyformat.Accepted, last
	})

	// A SigningKey's JWKS is mirrored into the ConfigMap earlier sidecars read.
	sk := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Name: "platform", Namespace: ns},
		Spec: gatehousev1.SigningKeySpec{Issuer: "https://auth.example.com/" + ns}}
	f.create(t, sk)
	framework.Eventually(t, "the SigningKey's JWKS ConfigMap for earlier sidecars", 15*time.Second, func() (bool, string) {
		st := f.signingKeyStatus(t, sk.Name)
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: keyring.JWKSConfigMapName(sk)}, cm); err != nil {
			return false, err.Error()
		}
		ok := st.JWKS != "" && cm.Data[gatehousev1.JWKSDataKey] == st.JWKS && cm.Data[gatehousev1.JWKSIssuerKey] == st.Issuer &&
			cm.Labels[gatehousev1.LabelRecord] == gatehousev1.RecordJWKS && cm.Labels[gatehousev1.LabelOwnerName] == sk.Name
		return ok, "configmap " + cm.Name + " does not mirror the status"
	})

	// Revocation reaches earlier sidecars: disabling the key makes its
	// record refuse it.
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Disabled = true
	if err := env.Client.Patch(ctx, got, patch); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "earlier sidecars to refuse the disabled key", 10*time.Second, func() (bool, string) {
		d, last := earlierSidecar(recordName, key)
		return d != apikeyformat.Accepted && d != "", last
	})
	if d, last := earlierSidecar(apikeys.LegacyRecordName("orders"), fresh); d != apikeyformat.Accepted {
		t.Fatalf("disabling one key changed another's record: %s", last)
	}
}
