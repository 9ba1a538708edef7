package apikeys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

func rotating(every, grace time.Duration) func(*gatehousev1.APIKey) {
	return func(ak *gatehousev1.APIKey) {
		ak.Spec.Rotation = &gatehousev1.APIKeyRotation{Every: metav1.Duration{Duration: every}, GracePeriod: &metav1.Duration{Duration: grace}}
	}
}

func assertControlledBy(t *testing.T, obj metav1.Object, ak *gatehousev1.APIKey) {
	t.Helper()
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.UID != ak.UID || ref.Kind != "APIKey" || ref.APIVersion != gatehousev1.GroupVersion.String() || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Fatalf("%s is not controlled by APIKey %s: %+v", obj.GetName(), ak.Name, obj.GetOwnerReferences())
	}
	if obj.GetLabels()[gatehousev1.LabelManagedBy] != gatehousev1.ManagedByValue || obj.GetLabels()[gatehousev1.LabelOwnerName] != ak.Name {
		t.Fatalf("%s labels: %v", obj.GetName(), obj.GetLabels())
	}
}

func TestIntegrationCreatingAnAPIKeyDeliversAKeyWhoseHashIsRecorded(t *testing.T) {
	f := newFixture(t)
	f.create(t, "billing", func(ak *gatehousev1.APIKey) {
		ak.Spec.RateLimit = &gatehousev1.RateLimit{RequestsPerSecond: 100}
	})
	if res := f.reconcile(t, "billing"); res.RequeueAfter != 0 {
		t.Fatalf("nothing is due, yet requeue after %v", res.RequeueAfter)
	}
	ak := f.apiKey(t, "billing")
	sec, key := f.delivered(t, "billing-key")
	_, rec := f.record(t, "billing")

	if got := apikeyformat.Hash(string(sec.Data[gatehousev1.DeliveryKeyDataKey])); got != rec.Keys[0].SHA256 {
		t.Fatalf("SHA-256 of the delivered key %s != recorded hash %s", got, rec.Keys[0].SHA256)
	}
	if string(sec.Data[gatehousev1.DeliveryKeyIDDataKey]) != key.ID() || rec.Keys[0].KeyID != key.ID() || ak.Status.KeyID != key.ID() {
		t.Fatalf("key IDs disagree: secret %q, record %q, status %q", sec.Data[gatehousev1.DeliveryKeyIDDataKey], rec.Keys[0].KeyID, ak.Status.KeyID)
	}
	if sec.Type != DeliverySecretType || sec.Annotations[AnnotationIssuedAt] != t0.Format(time.RFC3339) {
		t.Fatalf("delivery secret type %q, annotations %v", sec.Type, sec.Annotations)
	}
	assertControlledBy(t, sec, ak)
	if ak.Status.DeliveredKeyID != key.ID() || ak.Status.DeliverySecretName != "billing-key" {
		t.Fatalf("status does not record the delivery: %+v", ak.Status)
	}
	if s, r := condStatus(ak, gatehousev1.ConditionDelivered); s != metav1.ConditionTrue || r != gatehousev1.ReasonDelivered {
		t.Fatalf("Delivered = %s/%s", s, r)
	}
	cms := &corev1.ConfigMapList{}
	if err := f.env.Client.List(f.ctx, cms, client.InNamespace(f.ns), client.MatchingLabels{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey}); err != nil || len(cms.Items) != 0 {
		t.Fatalf("the operator wrote record ConfigMaps (%v): %d", err, len(cms.Items))
	}
	if rec.Check(key, t0) != apikeyformat.Accepted || rec.RateLimit.Burst != 100 {
		t.Fatalf("record %+v", rec)
	}
	if s, r := condStatus(ak, gatehousev1.ConditionReady); s != metav1.ConditionTrue || r != gatehousev1.ReasonIssued {
		t.Fatalf("Ready = %s/%s", s, r)
	}
	if ak.Status.ObservedGeneration != ak.Generation || ak.Status.RecordConfigMapName != "" || !ak.Status.IssuedAt.Time.Equal(t0) {
		t.Fatalf("status %+v", ak.Status)
	}
	f.waitForEvent(t, gatehousev1.ReasonIssued)

	// Reconciling again writes nothing.
	f.clk.Step(time.Minute)
	f.reconcile(t, "billing")
	sec2, _ := f.delivered(t, "billing-key")
	ak2 := f.apiKey(t, "billing")
	if sec2.ResourceVersion != sec.ResourceVersion || ak2.ResourceVersion != ak.ResourceVersion {
		t.Fatal("a second reconcile of an unchanged APIKey wrote something")
	}
}

func TestIntegrationAKeyExpiresExactlyAtItsExpiryTime(t *testing.T) {
	f := newFixture(t)
	expiresAt := t0.Add(90 * time.Minute)
	f.create(t, "temp", func(ak *gatehousev1.APIKey) { ak.Spec.ExpiresAt = &metav1.Time{Time: expiresAt} })
	res := f.reconcile(t, "temp")
	if res.RequeueAfter != 90*time.Minute {
		t.Fatalf("requeue after %v, want exactly the time to expiry", res.RequeueAfter)
	}
	_, key := f.delivered(t, "temp-key")

	f.clk.Step(90*time.Minute - time.Second)
	if res := f.reconcile(t, "temp"); res.RequeueAfter != time.Second {
		t.Fatalf("one second before expiry: requeue after %v", res.RequeueAfter)
	}
	if _, rec := f.record(t, "temp"); rec.State != apikeyformat.StateActive {
		t.Fatalf("expired early: %s", rec.State)
	}

	f.clk.Step(time.Second)
	if res := f.reconcile(t, "temp"); res.RequeueAfter != 0 {
		t.Fatalf("an expired key has nothing due, requeue after %v", res.RequeueAfter)
	}
	_, rec := f.record(t, "temp")
	if rec.State != apikeyformat.StateExpired || rec.Check(key, expiresAt) != apikeyformat.Expired {
		t.Fatalf("record after expiry: %+v", rec)
	}
	ak := f.apiKey(t, "temp")
	if s, _ := condStatus(ak, gatehousev1.ConditionExpired); s != metav1.ConditionTrue {
		t.Fatalf("Expired = %s", s)
	}
	if s, r := condStatus(ak, gatehousev1.ConditionReady); s != metav1.ConditionFalse || r != gatehousev1.ReasonExpired {
		t.Fatalf("Ready = %s/%s", s, r)
	}
	f.waitForEvent(t, gatehousev1.ReasonExpired)
}

func TestIntegrationRotationKeepsBothHashesValidDuringGraceAndOnlyTheNewOneAfter(t *testing.T) {
	const every, grace = 2 * time.Hour, 30 * time.Minute
	f := newFixture(t)
	f.create(t, "rot", rotating(every, grace))
	if res := f.reconcile(t, "rot"); res.RequeueAfter != every {
		t.Fatalf("requeue after %v, want the rotation period", res.RequeueAfter)
	}
	_, oldKey := f.delivered(t, "rot-key")

	f.clk.Step(every)
	if res := f.reconcile(t, "rot"); res.RequeueAfter != grace {
		t.Fatalf("after rotating, requeue after %v, want the grace period", res.RequeueAfter)
	}
	sec, newKey := f.delivered(t, "rot-key")
	if newKey.ID() == oldKey.ID() {
		t.Fatal("the delivery secret still holds the old key")
	}
	if sec.Annotations[AnnotationIssuedAt] != t0.Add(every).Format(time.RFC3339) {
		t.Fatalf("issued-at %q", sec.Annotations[AnnotationIssuedAt])
	}
	_, rec := f.record(t, "rot")
	now := f.clk.Now()
	if rec.Check(newKey, now) != apikeyformat.Accepted || rec.Check(oldKey, now) != apikeyformat.Accepted ||
		rec.Check(oldKey, now.Add(grace-time.Second)) != apikeyformat.Accepted {
		t.Fatalf("during grace both keys must be accepted: %+v", rec.Keys)
	}
	ak := f.apiKey(t, "rot")
	if ak.Status.KeyID != newKey.ID() || ak.Status.PreviousKeyID != oldKey.ID() ||
		!ak.Status.LastRotationTime.Time.Equal(now) || !ak.Status.NextRotationTime.Time.Equal(now.Add(every)) ||
		!ak.Status.PreviousKeyValidUntil.Time.Equal(now.Add(grace)) {
		t.Fatalf("status after rotation: %+v", ak.Status)
	}
	f.waitForEvent(t, gatehousev1.ReasonRotated)

	f.clk.Step(grace)
	if res := f.reconcile(t, "rot"); res.RequeueAfter != every-grace {
		t.Fatalf("after grace, requeue after %v, want the next rotation", res.RequeueAfter)
	}
	_, rec = f.record(t, "rot")
	if len(rec.Keys) != 1 || rec.Check(newKey, f.clk.Now()) != apikeyformat.Accepted || rec.Check(oldKey, f.clk.Now()) != apikeyformat.UnknownKey {
		t.Fatalf("after grace only the new key may be accepted: %+v", rec.Keys)
	}
	if ak := f.apiKey(t, "rot"); ak.Status.PreviousKeyID != "" {
		t.Fatalf("status still names the previous key: %+v", ak.Status)
	}
}

func TestIntegrationAManualRotationRequestRotatesOnce(t *testing.T) {
	f := newFixture(t)
	f.create(t, "manual")
	f.reconcile(t, "manual")
	_, first := f.delivered(t, "manual-key")
	f.clk.Step(time.Hour)
	f.update(t, "manual", func(ak *gatehousev1.APIKey) {
		ak.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: f.clk.Now().Format(time.RFC3339)}
	})
	f.reconcile(t, "manual")
	_, second := f.delivered(t, "manual-key")
	if second.ID() == first.ID() {
		t.Fatal("the request did not rotate the key")
	}
	f.clk.Step(time.Minute)
	f.reconcile(t, "manual")
	if _, third := f.delivered(t, "manual-key"); third.ID() != second.ID() {
		t.Fatal("one request rotated twice")
	}
	// No rotation period, so no grace: the old key is gone at once.
	if _, rec := f.record(t, "manual"); len(rec.Keys) != 1 {
		t.Fatalf("record keys %+v", rec.Keys)
	}
}

func TestIntegrationDisablingRevokesTheRecordWithinOneReconcile(t *testing.T) {
	f := newFixture(t)
	f.create(t, "off")
	f.reconcile(t, "off")
	_, key := f.delivered(t, "off-key")
	f.update(t, "off", func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true })
	f.reconcile(t, "off")
	_, rec := f.record(t, "off")
	if rec.State != apikeyformat.StateRevoked || rec.Check(key, f.clk.Now()) != apikeyformat.Revoked {
		t.Fatalf("record after one reconcile: %+v", rec)
	}
	ak := f.apiKey(t, "off")
	if s, r := condStatus(ak, gatehousev1.ConditionRevoked); s != metav1.ConditionTrue || r != gatehousev1.ReasonDisabled {
		t.Fatalf("Revoked = %s/%s", s, r)
	}
	if s, _ := condStatus(ak, gatehousev1.ConditionReady); s != metav1.ConditionFalse {
		t.Fatalf("Ready = %s", s)
	}
	if ak.Status.ObservedGeneration != ak.Generation {
		t.Fatalf("observedGeneration %d, generation %d", ak.Status.ObservedGeneration, ak.Generation)
	}
	f.waitForEvent(t, gatehousev1.ReasonDisabled)

	f.update(t, "off", func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = false })
	f.reconcile(t, "off")
	if _, rec := f.record(t, "off"); rec.State != apikeyformat.StateActive || rec.Check(key, f.clk.Now()) != apikeyformat.Accepted {
		t.Fatalf("re-enabling did not restore the same key: %+v", rec)
	}
}

func TestIntegrationAnOperatorRestartBetweenTheStatusAndSecretWritesKeepsTheDeliveredKeyValid(t *testing.T) {
	const every, grace = 2 * time.Hour, time.Hour
	f := newFixture(t)
	f.create(t, "crash", rotating(every, grace))
	f.reconcile(t, "crash")
	_, oldKey := f.delivered(t, "crash-key")

	// The first operator records the new key in status, then dies before
	// the delivery Secret write reaches the API server.
	base, err := client.NewWithWatch(f.env.Config, client.Options{Scheme: f.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	errCrash := errors.New("operator killed")
	crashing := interceptor.NewClient(base, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return errCrash
			}
			return c.Update(ctx, obj, opts...)
		},
	})
	dying := &Reconciler{Client: crashing, APIReader: base, Scheme: f.env.Scheme, Recorder: f.r.Recorder, Clock: f.clk}
	f.clk.Step(every)
	rotatedAt := f.clk.Now()
	if _, err := dying.Reconcile(f.ctx, reqFor(f.ns, "crash")); !errors.Is(err, errCrash) {
		t.Fatalf("the crashing reconcile should fail on the secret write, got %v", err)
	}
	if _, still := f.delivered(t, "crash-key"); still.ID() != oldKey.ID() {
		t.Fatal("the crashing reconcile wrote the delivery secret")
	}
	undelivered, rec := f.record(t, "crash")
	if rec.Keys[0].KeyID == oldKey.ID() || undelivered.Status.DeliveredKeyID != oldKey.ID() {
		t.Fatalf("the crashing reconcile did not record the new key first: %+v", undelivered.Status)
	}
	if rec.Check(oldKey, f.clk.Now()) != apikeyformat.Accepted {
		t.Fatal("the key its client holds was refused after the crash")
	}

	// A fresh operator, a few minutes later, with its own entropy.
	f.clk.Step(3 * time.Minute)
	fresh := &Reconciler{Client: f.env.Client, APIReader: f.env.Client, Scheme: f.env.Scheme, Recorder: f.r.Recorder, Clock: f.clk, Rand: rand.Reader}
	res, err := fresh.Reconcile(f.ctx, reqFor(f.ns, "crash"))
	if err != nil {
		t.Fatal(err)
	}
	_, after := f.delivered(t, "crash-key")
	ak, rec := f.record(t, "crash")
	if after.ID() == oldKey.ID() || after.ID() == rec.Keys[len(rec.Keys)-1].KeyID && len(rec.Keys) == 1 {
		t.Fatal("the restart did not deliver a new key")
	}
	if rec.Keys[0].KeyID != after.ID() || ak.Status.DeliveredKeyID != after.ID() {
		t.Fatalf("status does not name the delivered key first: %+v", ak.Status)
	}
	now := f.clk.Now()
	if rec.Check(after, now) != apikeyformat.Accepted || rec.Check(oldKey, now) != apikeyformat.Accepted {
		t.Fatal("both the delivered and the previous key must be valid after the restart")
	}
	for _, k := range rec.Keys {
		if k.KeyID == oldKey.ID() && !k.NotAfter.Equal(rotatedAt.Add(grace)) {
			t.Fatalf("the old key's grace should end %v (rotation + grace), got %v", rotatedAt.Add(grace), k.NotAfter)
		}
	}
	if res.RequeueAfter != grace-3*time.Minute {
		t.Fatalf("requeue after %v", res.RequeueAfter)
	}
}

func reqFor(ns, name string) ctrl.Request {
	return ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

func TestIntegrationACallerSuppliedHashPutsNoPlaintextAnywhere(t *testing.T) {
	f := newFixture(t)
	key, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.create(t, "offline", func(ak *gatehousev1.APIKey) {
		ak.Spec.SecretName = ""
		ak.Spec.Hash = &gatehousev1.APIKeyHash{KeyID: key.ID(), SHA256: key.Hash()}
	})
	f.reconcile(t, "offline")
	_, rec := f.record(t, "offline")
	if rec.Check(key, f.clk.Now()) != apikeyformat.Accepted {
		t.Fatalf("record %+v", rec)
	}
	f.update(t, "offline", func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true })
	f.reconcile(t, "offline")
	f.waitForEvent(t, gatehousev1.ReasonDisabled)

	secrets := &corev1.SecretList{}
	if err := f.env.Client.List(f.ctx, secrets, client.InNamespace(f.ns), client.MatchingLabels{gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue}); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 0 {
		t.Fatalf("a caller-supplied hash must not create Secrets, found %d", len(secrets.Items))
	}
	dump := f.dump(t)
	secretPart := key.Plaintext()[len(apikeyformat.Prefix)+17 : len(apikeyformat.Prefix)+17+52]
	if bytes.Contains(dump, []byte(key.Plaintext())) || bytes.Contains(dump, []byte(secretPart)) {
		t.Fatal("the plaintext key (or its secret part) is stored in the cluster")
	}
	if !bytes.Contains(dump, []byte(key.Hash())) || !bytes.Contains(dump, []byte(key.ID())) {
		t.Fatal("the scan found neither the hash nor the key ID: it scanned nothing useful")
	}
	if strings.Contains(f.log.String(), secretPart) {
		t.Fatal("the plaintext reached the log")
	}
}

func TestIntegrationASecretNameTakenByAForeignSecretIsAConflictThatTouchesNothing(t *testing.T) {
	f := newFixture(t)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: f.ns},
		StringData: map[string]string{"password": "hunter2"},
	}
	if err := f.env.Client.Create(f.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	f.create(t, "clash", func(ak *gatehousev1.APIKey) { ak.Spec.SecretName = "taken" })
	f.reconcile(t, "clash")

	ak := f.apiKey(t, "clash")
	s, r := condStatus(ak, gatehousev1.ConditionReady)
	if s != metav1.ConditionFalse || r != gatehousev1.ReasonSecretConflict {
		t.Fatalf("Ready = %s/%s", s, r)
	}
	got := &corev1.Secret{}
	if err := f.env.Client.Get(f.ctx, client.ObjectKeyFromObject(foreign), got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != foreign.ResourceVersion || len(got.OwnerReferences) != 0 {
		t.Fatal("the operator modified a Secret it does not own")
	}
	if len(ak.Status.Keys) != 0 {
		t.Fatalf("a conflicting APIKey got a key: %+v", ak.Status.Keys)
	}
	f.waitForEvent(t, gatehousev1.ReasonSecretConflict)

	// Once the name is free the key is issued.
	if err := f.env.Client.Delete(f.ctx, got); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, "clash")
	if s, _ := condStatus(f.apiKey(t, "clash"), gatehousev1.ConditionReady); s != metav1.ConditionTrue {
		t.Fatalf("Ready = %s after the conflict went away", s)
	}
	f.delivered(t, "taken")
}

func TestIntegrationAnAPIKeyBeingDeletedIsRevokedAndNothingIsRecreated(t *testing.T) {
	f := newFixture(t)
	const finalizer = "test.gatehouse.dev/hold"
	f.create(t, "bye", func(ak *gatehousev1.APIKey) { ak.Finalizers = []string{finalizer} })
	f.reconcile(t, "bye")
	ak := f.apiKey(t, "bye")
	_, key := f.delivered(t, "bye-key")
	if err := f.env.Client.Delete(f.ctx, ak); err != nil {
		t.Fatal(err)
	}
	// The test harness has no garbage collector: delete the delivery
	// Secret as it would, and check the operator does not recreate it.
	sec, _ := f.delivered(t, "bye-key")
	if err := f.env.Client.Delete(f.ctx, sec); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, "bye")
	_, rec := f.record(t, "bye")
	if rec.State != apikeyformat.StateRevoked || rec.Check(key, f.clk.Now()) != apikeyformat.Revoked {
		t.Fatalf("a deleting APIKey's record must be revoked: %+v", rec)
	}
	if err := f.env.Client.Get(f.ctx, client.ObjectKeyFromObject(sec), &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the operator recreated the delivery secret of a deleting APIKey: %v", err)
	}
	f.waitForEvent(t, gatehousev1.ReasonKeyRevoked)

	f.update(t, "bye", func(ak *gatehousev1.APIKey) { ak.Finalizers = nil })
	f.reconcile(t, "bye") // gone: nothing to do, no error
	if err := f.env.Client.Get(f.ctx, client.ObjectKeyFromObject(sec), &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a deleted APIKey got a delivery secret: %v", err)
	}
}

func TestIntegrationChangingTheSecretNameMovesDeliveryAndDeletesTheOldSecret(t *testing.T) {
	f := newFixture(t)
	f.create(t, "mv")
	f.reconcile(t, "mv")
	_, oldKey := f.delivered(t, "mv-key")
	f.update(t, "mv", func(ak *gatehousev1.APIKey) { ak.Spec.SecretName = "mv-key-2" })
	f.reconcile(t, "mv")
	_, newKey := f.delivered(t, "mv-key-2")
	if err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "mv-key"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the old delivery secret is left behind: %v", err)
	}
	_, rec := f.record(t, "mv")
	if rec.Keys[0].KeyID != newKey.ID() || rec.Check(oldKey, f.clk.Now()) == apikeyformat.Accepted {
		t.Fatalf("record %+v", rec.Keys)
	}
}

// A cache that holds only the operator's own Secrets (a label-filtered
// informer) does not show a foreign Secret; the failed create must lead to
// a SecretConflict, not to endless retries.
func TestIntegrationAForeignSecretHiddenFromTheCacheIsStillAConflict(t *testing.T) {
	f := newFixture(t)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hidden", Namespace: f.ns}, StringData: map[string]string{"a": "b"}}
	if err := f.env.Client.Create(f.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	base, err := client.NewWithWatch(f.env.Config, client.Options{Scheme: f.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	blind := interceptor.NewClient(base, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok && key.Name == "hidden" {
				return apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	f.r.Client, f.r.APIReader = blind, base
	f.create(t, "hiding", func(ak *gatehousev1.APIKey) { ak.Spec.SecretName = "hidden" })
	f.reconcile(t, "hiding")
	if s, r := condStatus(f.apiKey(t, "hiding"), gatehousev1.ConditionReady); s != metav1.ConditionFalse || r != gatehousev1.ReasonSecretConflict {
		t.Fatalf("Ready = %s/%s", s, r)
	}
	got := &corev1.Secret{}
	if err := base.Get(f.ctx, client.ObjectKeyFromObject(foreign), got); err != nil || got.ResourceVersion != foreign.ResourceVersion {
		t.Fatalf("the foreign secret changed: %v", err)
	}
}

func TestIntegrationSwitchingToACallerSuppliedHashDeletesTheDeliverySecret(t *testing.T) {
	f := newFixture(t)
	f.create(t, "switch")
	f.reconcile(t, "switch")
	_, generated := f.delivered(t, "switch-key")
	minted, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.update(t, "switch", func(ak *gatehousev1.APIKey) {
		ak.Spec.SecretName = ""
		ak.Spec.Hash = &gatehousev1.APIKeyHash{KeyID: minted.ID(), SHA256: minted.Hash()}
	})
	f.reconcile(t, "switch")
	if err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "switch-key"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the delivery secret of the replaced key is left behind: %v", err)
	}
	_, rec := f.record(t, "switch")
	if rec.Check(minted, f.clk.Now()) != apikeyformat.Accepted || rec.Check(generated, f.clk.Now()) != apikeyformat.UnknownKey {
		t.Fatalf("record %+v", rec.Keys)
	}
	if ak := f.apiKey(t, "switch"); ak.Status.KeyID != minted.ID() {
		t.Fatalf("status key %s", ak.Status.KeyID)
	}
}

func TestIntegrationDisablingAnAPIKeyBlockedByAConflictStillRevokesIt(t *testing.T) {
	f := newFixture(t)
	f.create(t, "stuck")
	f.reconcile(t, "stuck")
	_, key := f.delivered(t, "stuck-key")
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses", Namespace: f.ns}, StringData: map[string]string{"a": "b"}}
	if err := f.env.Client.Create(f.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	f.update(t, "stuck", func(ak *gatehousev1.APIKey) {
		ak.Spec.SecretName = "someone-elses"
		ak.Spec.Disabled = true
	})
	f.reconcile(t, "stuck")
	if s, r := condStatus(f.apiKey(t, "stuck"), gatehousev1.ConditionReady); s != metav1.ConditionFalse || r != gatehousev1.ReasonSecretConflict {
		t.Fatalf("Ready = %s/%s", s, r)
	}
	if _, rec := f.record(t, "stuck"); rec.Check(key, f.clk.Now()) != apikeyformat.Revoked {
		t.Fatalf("the key of a blocked, disabled APIKey is still accepted: %+v", rec)
	}
	// The blocked APIKey keeps its own old Secret and leaves the foreign one alone.
	f.delivered(t, "stuck-key")
	got := &corev1.Secret{}
	if err := f.env.Client.Get(f.ctx, client.ObjectKeyFromObject(foreign), got); err != nil || got.ResourceVersion != foreign.ResourceVersion {
		t.Fatalf("the foreign secret changed: %v", err)
	}
}
