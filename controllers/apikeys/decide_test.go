package apikeys

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func testAPIKey(mutate ...func(*gatehousev1.APIKey)) *gatehousev1.APIKey {
	ak := &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: "shop", Generation: 1, UID: "uid-1"},
		Spec: gatehousev1.APIKeySpec{
			Subject:    "service:billing",
			Scopes:     []string{"orders:read"},
			SecretName: "billing-key",
		},
	}
	for _, m := range mutate {
		m(ak)
	}
	return ak
}

func withRotation(every, grace time.Duration) func(*gatehousev1.APIKey) {
	return func(ak *gatehousev1.APIKey) {
		ak.Spec.Rotation = &gatehousev1.APIKeyRotation{Every: metav1.Duration{Duration: every}, GracePeriod: &metav1.Duration{Duration: grace}}
	}
}

// keys hands out fresh keys and counts them.
type keys struct {
	made []apikeyformat.Key
}

func (k *keys) next() (apikeyformat.Key, error) {
	key, err := apikeyformat.Generate(rand.Reader)
	if err == nil {
		k.made = append(k.made, key)
	}
	return key, err
}

func mustDecide(t *testing.T, obs observation, k *keys) decision {
	t.Helper()
	d, err := decide(obs, k.next)
	if err != nil {
		t.Fatalf("decide: %v", err)
	}
	return d
}

// apply returns what the reconciler observes after writing d, at now: the
// status (and, after a delivery, the delivered status) and the Secret.
func apply(t *testing.T, obs observation, d decision, now time.Time) observation {
	t.Helper()
	next := obs
	next.Now = now
	next.APIKey = obs.APIKey.DeepCopy()
	if d.Status != nil {
		next.APIKey.Status = *d.Status.DeepCopy()
	}
	if d.Delivery != nil {
		k := d.Delivery.Key
		next.Delivery = deliveryState{Exists: true, Key: &k}
		next.APIKey.Status = *d.Delivered.DeepCopy()
	}
	if d.DeleteLegacy {
		next.Legacy, next.LegacyExists = nil, false
	}
	return next
}

// check is what a validator decides for key on the APIKey as observed.
func check(obs observation, key apikeyformat.Key, now time.Time) apikeyformat.Decision {
	return apikeyformat.RecordOf(obs.APIKey).Check(key, now)
}

func statusKeyIDs(st *gatehousev1.APIKeyStatus) []string {
	var out []string
	for _, k := range st.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func condition(t *testing.T, st *gatehousev1.APIKeyStatus, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, st.Conditions)
	}
	return *c
}

func eventReasons(d decision) []string {
	var out []string
	for _, e := range d.Events {
		out = append(out, e.Reason)
	}
	return out
}

func TestANewAPIKeyIsRecordedInStatusBeforeItIsDeliveredUnderTheSameHash(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(), Now: t0.Add(1500 * time.Millisecond)}
	d := mustDecide(t, obs, k)
	if len(k.made) != 1 || d.Delivery == nil || d.Delivered == nil {
		t.Fatalf("want exactly one key delivered, generated %d, delivery %v", len(k.made), d.Delivery != nil)
	}
	st := d.Status
	if len(st.Keys) != 1 || st.Keys[0].KeyID != d.Delivery.Key.ID() || st.Keys[0].SHA256 != d.Delivery.Key.Hash() {
		t.Fatalf("status does not hold the delivered key's hash: %+v", st.Keys)
	}
	if st.DeliveredKeyID != "" {
		t.Fatal("the status written before the Secret must not claim the key delivered")
	}
	if d.Delivered.DeliveredKeyID != d.Delivery.Key.ID() || d.Delivered.DeliverySecretName != "billing-key" {
		t.Fatalf("delivered status: %+v", d.Delivered)
	}
	if st.State != gatehousev1.APIKeyActive || !st.Keys[0].IssuedAt.Time.Equal(t0.Add(time.Second)) || st.Keys[0].NotAfter != nil {
		t.Fatalf("status key fields: %+v", st)
	}
	after := apply(t, obs, d, obs.Now)
	if got := check(after, d.Delivery.Key, obs.Now); got != apikeyformat.Accepted {
		t.Fatalf("validators refuse the key status lists: %s", got)
	}
	ready := condition(t, d.Status, gatehousev1.ConditionReady)
	if ready.Status != metav1.ConditionTrue || ready.Reason != gatehousev1.ReasonIssued || ready.ObservedGeneration != 1 {
		t.Fatalf("Ready = %+v", ready)
	}
	if c := condition(t, d.Delivered, gatehousev1.ConditionDelivered); c.Status != metav1.ConditionTrue {
		t.Fatalf("Delivered = %+v", c)
	}
	if got := eventReasons(d); len(got) != 1 || got[0] != gatehousev1.ReasonIssued {
		t.Fatalf("events = %v", got)
	}
	if d.RequeueAfter != 0 {
		t.Fatalf("nothing is due, yet requeue after %v", d.RequeueAfter)
	}
}

func TestDecidingAgainOnTheWrittenStateChangesNothing(t *testing.T) {
	cases := []struct {
		name   string
		apiKey *gatehousev1.APIKey
	}{
		{"A plain generated key is stable.", testAPIKey()},
		{"A rotating key inside its period is stable.", testAPIKey(withRotation(30*24*time.Hour, 24*time.Hour))},
		{"A disabled key is stable.", testAPIKey(func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true })},
		{"An expired key is stable.", testAPIKey(func(ak *gatehousev1.APIKey) { ak.Spec.ExpiresAt = &metav1.Time{Time: t0.Add(-time.Hour)} })},
		{"A caller-supplied hash is stable.", testAPIKey(func(ak *gatehousev1.APIKey) {
			ak.Spec.SecretName = ""
			ak.Spec.Hash = &gatehousev1.APIKeyHash{KeyID: "abcdefghijklmnop", SHA256: strings.Repeat("ab", 32)}
		})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &keys{}
			obs := observation{APIKey: tc.apiKey, Now: t0}
			first := mustDecide(t, obs, k)
			obs = apply(t, obs, first, t0.Add(time.Minute))
			second := mustDecide(t, obs, k)
			if len(k.made) > 1 || second.Delivery != nil {
				t.Fatalf("generated %d keys", len(k.made))
			}
			if len(second.Events) != 0 {
				t.Fatalf("events on an unchanged state: %+v", second.Events)
			}
			if !equality.Semantic.DeepEqual(&obs.APIKey.Status, second.Status) {
				t.Fatalf("status changed:\n%+v\n%+v", obs.APIKey.Status, *second.Status)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	const every, grace = 30 * 24 * time.Hour, 24 * time.Hour
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(every, grace)), Now: t0}
	first := mustDecide(t, obs, k)
	if first.RequeueAfter != every {
		t.Fatalf("a new rotating key should wake at its rotation, got %v", first.RequeueAfter)
	}
	if !first.Status.NextRotationTime.Time.Equal(t0.Add(every)) {
		t.Fatalf("nextRotationTime = %v", first.Status.NextRotationTime)
	}
	oldKey := first.Delivery.Key

	// One second early: nothing happens, wake in exactly one second.
	obs = apply(t, obs, first, t0.Add(every-time.Second))
	early := mustDecide(t, obs, k)
	if len(k.made) != 1 || early.RequeueAfter != time.Second {
		t.Fatalf("early: generated %d, requeue %v", len(k.made), early.RequeueAfter)
	}

	// Due: a new key, the old one valid for the grace period.
	rotatedAt := t0.Add(every)
	obs.Now = rotatedAt
	rot := mustDecide(t, obs, k)
	if len(k.made) != 2 || rot.Delivery.Key.ID() == oldKey.ID() {
		t.Fatalf("rotation did not generate exactly one new key (%d)", len(k.made))
	}
	newKey := rot.Delivery.Key
	if ks := rot.Status.Keys; len(ks) != 2 || ks[1].KeyID != oldKey.ID() || !ks[1].NotAfter.Time.Equal(rotatedAt.Add(grace)) {
		t.Fatalf("status keys after rotation: %+v", ks)
	}
	rotated := apply(t, obs, rot, rotatedAt)
	for _, c := range []struct {
		key  apikeyformat.Key
		at   time.Time
		want apikeyformat.Decision
	}{
		{newKey, rotatedAt, apikeyformat.Accepted},
		{oldKey, rotatedAt, apikeyformat.Accepted},
		{oldKey, rotatedAt.Add(grace - time.Second), apikeyformat.Accepted},
		{oldKey, rotatedAt.Add(grace), apikeyformat.GraceOver},
	} {
		if got := check(rotated, c.key, c.at); got != c.want {
			t.Errorf("Check(%s at +%v) = %s, want %s", c.key.ID(), c.at.Sub(rotatedAt), got, c.want)
		}
	}
	if rot.RequeueAfter != grace {
		t.Fatalf("after a rotation the next wake-up is the end of grace, got %v", rot.RequeueAfter)
	}
	st := rot.Delivered
	if st.KeyID != newKey.ID() || st.PreviousKeyID != oldKey.ID() || !st.PreviousKeyValidUntil.Time.Equal(rotatedAt.Add(grace)) ||
		!st.LastRotationTime.Time.Equal(rotatedAt) || !st.NextRotationTime.Time.Equal(rotatedAt.Add(every)) {
		t.Fatalf("status after rotation: %+v", st)
	}
	if got := eventReasons(rot); len(got) != 1 || got[0] != gatehousev1.ReasonRotated {
		t.Fatalf("events = %v", got)
	}

	// End of grace: the old key is dropped, nothing else changes.
	obs = apply(t, obs, rot, rotatedAt.Add(grace))
	after := mustDecide(t, obs, k)
	if len(k.made) != 2 || len(after.Status.Keys) != 1 || after.Status.Keys[0].KeyID != newKey.ID() {
		t.Fatalf("after grace: generated %d, keys %v", len(k.made), statusKeyIDs(after.Status))
	}
	if after.Status.PreviousKeyID != "" || after.Status.PreviousKeyValidUntil != nil || !after.Status.LastRotationTime.Time.Equal(rotatedAt) {
		t.Fatalf("status after grace: %+v", after.Status)
	}
	if after.RequeueAfter != every-grace {
		t.Fatalf("after grace the next wake-up is the next rotation, got %v", after.RequeueAfter)
	}
}

func TestARotationWithoutGraceDropsTheOldKeyAtOnce(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(time.Hour, 0)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Hour))
	d := mustDecide(t, obs, k)
	if len(k.made) != 2 || len(d.Status.Keys) != 1 || d.Status.Keys[0].KeyID != k.made[1].ID() {
		t.Fatalf("keys %v", statusKeyIDs(d.Status))
	}
}

func TestRotationRequests(t *testing.T) {
	cases := []struct {
		name        string
		requestedAt string
		wantRotate  bool
		wantRequeue time.Duration
	}{
		{"A request later than the issue time rotates now.", t0.Add(time.Minute).Format(time.RFC3339), true, 0},
		{"A request at the issue time does not rotate.", t0.Format(time.RFC3339), false, 0},
		{"A request before the issue time does not rotate.", t0.Add(-time.Hour).Format(time.RFC3339), false, 0},
		{"A request in the future schedules a rotation then.", t0.Add(3 * time.Hour).Format(time.RFC3339), false, time.Hour},
		{"A malformed request is ignored.", "tomorrow", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &keys{}
			obs := observation{APIKey: testAPIKey(), Now: t0}
			obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(2*time.Hour))
			obs.APIKey.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: tc.requestedAt}
			d := mustDecide(t, obs, k)
			if rotated := len(k.made) == 2; rotated != tc.wantRotate {
				t.Fatalf("rotated = %v, want %v", rotated, tc.wantRotate)
			}
			if d.RequeueAfter != tc.wantRequeue {
				t.Fatalf("requeue after %v, want %v", d.RequeueAfter, tc.wantRequeue)
			}
			if !tc.wantRotate {
				return
			}
			// The same request never rotates twice.
			obs = apply(t, obs, d, t0.Add(3*time.Hour))
			mustDecide(t, obs, k)
			if len(k.made) != 2 {
				t.Fatalf("one request rotated %d times", len(k.made)-1)
			}
		})
	}
}

func TestAKeyRecordedButNeverDeliveredIsReplacedAndTheDeliveredOneKeepsItsGrace(t *testing.T) {
	const every, grace = 2 * time.Hour, time.Hour
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(every, grace)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(every))
	rot := mustDecide(t, obs, k)
	oldKey, undelivered := k.made[0], k.made[1]

	// The operator stopped after the status write, before the Secret write:
	// the Secret still holds the old key, the status lists the new one
	// without claiming it delivered.
	crashed := obs
	crashed.APIKey = obs.APIKey.DeepCopy()
	crashed.APIKey.Status = *rot.Status.DeepCopy()
	crashed.Now = t0.Add(every + 5*time.Minute)
	if got := check(crashed, oldKey, crashed.Now); got != apikeyformat.Accepted {
		t.Fatalf("the key clients hold was refused after the crash: %s", got)
	}
	d := mustDecide(t, crashed, k)
	if len(k.made) != 3 || d.Delivery == nil || d.Delivery.Key.ID() != k.made[2].ID() {
		t.Fatalf("want one replacement for the undelivered key, generated %d", len(k.made))
	}
	after := apply(t, crashed, d, crashed.Now)
	if got := check(after, oldKey, crashed.Now); got != apikeyformat.Accepted {
		t.Fatalf("the delivered key lost its grace: %s", got)
	}
	for _, sk := range after.APIKey.Status.Keys {
		if sk.KeyID == oldKey.ID() && !sk.NotAfter.Time.Equal(t0.Add(every+grace)) {
			t.Fatalf("the old key's grace moved: %v", sk.NotAfter)
		}
	}
	if got := check(after, k.made[2], crashed.Now); got != apikeyformat.Accepted {
		t.Fatalf("the replacement key is refused: %s", got)
	}
	_ = undelivered
}

func TestTheDeliverySecretIsOutputOnly(t *testing.T) {
	forged, _ := apikeyformat.Generate(rand.Reader)
	cases := []struct {
		name     string
		delivery func(real apikeyformat.Key) deliveryState
		wantMsg  string
	}{
		{"A deleted delivery Secret is reported and the key stays valid.",
			func(apikeyformat.Key) deliveryState { return deliveryState{} }, "is missing"},
		{"A delivery Secret overwritten with another key is reported and that key is not accepted.",
			func(apikeyformat.Key) deliveryState { return deliveryState{Exists: true, Key: &forged} }, "no longer holds"},
		{"A delivery Secret replaced by one this APIKey does not control is reported.",
			func(apikeyformat.Key) deliveryState { return deliveryState{Exists: true, Foreign: true} }, "no longer holds"},
		{"A delivery Secret whose key was edited into garbage is reported.",
			func(apikeyformat.Key) deliveryState { return deliveryState{Exists: true} }, "no longer holds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &keys{}
			obs := observation{APIKey: testAPIKey(withRotation(48*time.Hour, time.Hour)), Now: t0}
			obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Hour))
			real := k.made[0]
			obs.Delivery = tc.delivery(real)
			d := mustDecide(t, obs, k)
			if len(k.made) != 1 || d.Delivery != nil {
				t.Fatalf("the operator generated or delivered a key because of the Secret (%d keys)", len(k.made))
			}
			if ids := statusKeyIDs(d.Status); len(ids) != 1 || ids[0] != real.ID() || d.Status.Keys[0].SHA256 != real.Hash() {
				t.Fatalf("status keys changed: %v", ids)
			}
			after := apply(t, obs, d, obs.Now)
			if got := check(after, real, obs.Now); got != apikeyformat.Accepted {
				t.Fatalf("the real key is refused: %s", got)
			}
			if got := check(after, forged, obs.Now); got == apikeyformat.Accepted {
				t.Fatal("a key planted in the delivery Secret is accepted")
			}
			c := condition(t, d.Status, gatehousev1.ConditionDelivered)
			if c.Status != metav1.ConditionFalse || c.Reason != gatehousev1.ReasonDeliverySecretChanged || !strings.Contains(c.Message, tc.wantMsg) {
				t.Fatalf("Delivered = %+v", c)
			}
			if r := condition(t, d.Status, gatehousev1.ConditionReady); r.Status != metav1.ConditionTrue {
				t.Fatalf("Ready = %+v", r)
			}
			if got := eventReasons(d); len(got) != 1 || got[0] != gatehousev1.ReasonDeliverySecretChanged {
				t.Fatalf("events = %v", got)
			}
			if d2 := mustDecide(t, after, k); len(d2.Events) != 0 {
				t.Fatalf("the report repeats: %v", eventReasons(d2))
			}
			// A rotation delivers a new key; the old one keeps its grace.
			after.APIKey.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: obs.Now.Add(time.Second).Format(time.RFC3339)}
			after.Now = obs.Now.Add(time.Second)
			if tc.name == "A delivery Secret replaced by one this APIKey does not control is reported." {
				return // delivering needs the name back: that is a SecretConflict
			}
			rot := mustDecide(t, after, k)
			if rot.Delivery == nil || len(k.made) != 2 {
				t.Fatal("a rotation request did not deliver a new key")
			}
			if c := condition(t, rot.Delivered, gatehousev1.ConditionDelivered); c.Status != metav1.ConditionTrue {
				t.Fatalf("Delivered after rotation = %+v", c)
			}
		})
	}
}

func TestAChangedSecretNameDeliversANewKeyThereAndKeepsTheOldOneForItsGrace(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(48*time.Hour, time.Hour)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Minute))
	obs.APIKey.Spec.SecretName = "billing-key-2"
	obs.Delivery = deliveryState{}
	d := mustDecide(t, obs, k)
	if d.Delivery == nil || len(k.made) != 2 || d.Delivered.DeliverySecretName != "billing-key-2" {
		t.Fatalf("no new key delivered to the new name (%d keys)", len(k.made))
	}
	after := apply(t, obs, d, obs.Now)
	if check(after, k.made[0], obs.Now) != apikeyformat.Accepted || check(after, k.made[1], obs.Now) != apikeyformat.Accepted {
		t.Fatal("both the old key (grace) and the new key must be accepted")
	}
	if !d.DeleteStale {
		t.Fatal("the Secret under the old name must be deleted")
	}
}

func TestExpiry(t *testing.T) {
	expiresAt := t0.Add(10 * time.Hour)
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(48*time.Hour, time.Hour), func(ak *gatehousev1.APIKey) {
		ak.Spec.ExpiresAt = &metav1.Time{Time: expiresAt}
	}), Now: t0}
	first := mustDecide(t, obs, k)
	if first.RequeueAfter != 10*time.Hour {
		t.Fatalf("wake-up should be the expiry, got %v", first.RequeueAfter)
	}
	if c := condition(t, first.Status, gatehousev1.ConditionExpired); c.Status != metav1.ConditionFalse || c.Reason != gatehousev1.ReasonNotExpired {
		t.Fatalf("Expired = %+v", c)
	}
	obs = apply(t, obs, first, expiresAt)
	// Validators refuse at expiry from the spec alone, before the operator acts.
	if got := check(obs, k.made[0], expiresAt); got != apikeyformat.Expired {
		t.Fatalf("at expiry a validator says %s", got)
	}
	d := mustDecide(t, obs, k)
	if d.Status.State != gatehousev1.APIKeyExpired || len(k.made) != 1 {
		t.Fatalf("state %s, generated %d", d.Status.State, len(k.made))
	}
	if c := condition(t, d.Status, gatehousev1.ConditionExpired); c.Status != metav1.ConditionTrue {
		t.Fatalf("Expired = %+v", c)
	}
	if c := condition(t, d.Status, gatehousev1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != gatehousev1.ReasonExpired {
		t.Fatalf("Ready = %+v", c)
	}
	if got := eventReasons(d); len(got) != 1 || got[0] != gatehousev1.ReasonExpired {
		t.Fatalf("events = %v", got)
	}
	if d.RequeueAfter != 0 || d.Status.NextRotationTime != nil {
		t.Fatalf("an expired key has nothing due: requeue %v, next rotation %v", d.RequeueAfter, d.Status.NextRotationTime)
	}
	// Long after, an expired key is never rotated.
	obs = apply(t, obs, d, expiresAt.Add(100*time.Hour))
	mustDecide(t, obs, k)
	if len(k.made) != 1 {
		t.Fatal("an expired key was rotated")
	}
}

func TestDisablingRevokesBeforeTheOperatorActsAndReEnablingRestoresTheSameKey(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(2*time.Hour, time.Hour)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Minute))
	obs.APIKey.Spec.Disabled = true
	obs.APIKey.Generation = 2
	if got := check(obs, k.made[0], obs.Now); got != apikeyformat.Revoked {
		t.Fatalf("spec.disabled alone must revoke at validators, got %s", got)
	}
	d := mustDecide(t, obs, k)
	if d.Status.State != gatehousev1.APIKeyRevoked {
		t.Fatalf("status state %s", d.Status.State)
	}
	if c := condition(t, d.Status, gatehousev1.ConditionRevoked); c.Status != metav1.ConditionTrue || c.ObservedGeneration != 2 {
		t.Fatalf("Revoked = %+v", c)
	}
	if got := eventReasons(d); len(got) != 1 || got[0] != gatehousev1.ReasonDisabled {
		t.Fatalf("events = %v", got)
	}
	if d.RequeueAfter != 0 {
		t.Fatalf("a disabled key rotates never, but requeue after %v", d.RequeueAfter)
	}
	// Past the rotation time while disabled: no rotation.
	obs = apply(t, obs, d, t0.Add(5*time.Hour))
	d = mustDecide(t, obs, k)
	if len(k.made) != 1 {
		t.Fatal("a disabled key was rotated")
	}
	obs = apply(t, obs, d, t0.Add(5*time.Hour))
	obs.APIKey.Spec.Disabled = false
	d = mustDecide(t, obs, k)
	// The overdue rotation happens on re-enabling; the old key stays valid
	// for the grace period, so clients are not cut off.
	after := apply(t, obs, d, obs.Now)
	if d.Status.State != gatehousev1.APIKeyActive || len(k.made) != 2 ||
		check(after, k.made[0], obs.Now) != apikeyformat.Accepted || check(after, k.made[1], obs.Now) != apikeyformat.Accepted {
		t.Fatalf("re-enabled: %+v (keys generated: %d)", d.Status, len(k.made))
	}
	if c := condition(t, d.Status, gatehousev1.ConditionRevoked); c.Status != metav1.ConditionFalse || c.Reason != gatehousev1.ReasonEnabled {
		t.Fatalf("Revoked = %+v", c)
	}
}

func TestConflictsRecordNoKey(t *testing.T) {
	cases := []struct {
		name       string
		obs        observation
		wantReason string
	}{
		{"A delivery Secret name taken by a foreign Secret is a SecretConflict.",
			observation{APIKey: testAPIKey(), Now: t0, Delivery: deliveryState{Exists: true, Foreign: true}}, gatehousev1.ReasonSecretConflict},
		{"Neither a secret name nor a hash is an InvalidSpec.",
			observation{APIKey: testAPIKey(func(ak *gatehousev1.APIKey) { ak.Spec.SecretName = "" }), Now: t0}, gatehousev1.ReasonInvalidSpec},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &keys{}
			d := mustDecide(t, tc.obs, k)
			if d.Delivery != nil || len(d.Status.Keys) != 0 || d.DeleteStale {
				t.Fatalf("a blocked APIKey records or delivers key material: delivery %v, keys %v", d.Delivery != nil, statusKeyIDs(d.Status))
			}
			c := condition(t, d.Status, gatehousev1.ConditionReady)
			if c.Status != metav1.ConditionFalse || c.Reason != tc.wantReason || c.Message == "" {
				t.Fatalf("Ready = %+v", c)
			}
			if got := eventReasons(d); len(got) != 1 || got[0] != tc.wantReason {
				t.Fatalf("events = %v", got)
			}
			// Only a taken name can be freed without an edit the operator
			// hears of, so only it is checked again on a timer.
			if d.NameTaken != (tc.wantReason == gatehousev1.ReasonSecretConflict) {
				t.Fatalf("NameTaken = %v for %s", d.NameTaken, tc.wantReason)
			}
			again := apply(t, tc.obs, d, t0.Add(time.Minute))
			if d2 := mustDecide(t, again, k); len(d2.Events) != 0 || !equality.Semantic.DeepEqual(d.Status, d2.Status) {
				t.Fatalf("a persisting conflict should neither repeat its event nor change status: %+v", d2.Events)
			}
		})
	}
}

func TestABlockedAPIKeyKeepsItsKeysAndStillRevokes(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(time.Hour, 0)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(2*time.Hour))
	// spec.secretName now names a foreign Secret and a rotation is due.
	obs.APIKey.Spec.SecretName = "taken"
	obs.Delivery = deliveryState{Exists: true, Foreign: true}
	d := mustDecide(t, obs, k)
	if c := condition(t, d.Status, gatehousev1.ConditionReady); c.Reason != gatehousev1.ReasonSecretConflict {
		t.Fatalf("Ready = %+v", c)
	}
	if d.Delivery != nil || d.DeleteStale {
		t.Fatal("a blocked APIKey delivered a key, or would delete its old delivery Secret")
	}
	// The rotation due since an hour ago waits for the name: no requeue
	// for it, which would come back at once and forever.
	if d.RequeueAfter != 0 || !d.NameTaken {
		t.Fatalf("RequeueAfter = %v, NameTaken = %v; want no clock-driven requeue and a re-check of the name", d.RequeueAfter, d.NameTaken)
	}
	if got := (&Reconciler{}).requeueAfter(d); got != DefaultConflictRecheck {
		t.Fatalf("requeued after %v, want the conflict re-check %v", got, DefaultConflictRecheck)
	}
	obs = apply(t, obs, d, obs.Now)
	if got := check(obs, k.made[0], obs.Now); got != apikeyformat.Accepted {
		t.Fatalf("the key its holder has was refused while blocked: %s", got)
	}
	obs.APIKey.Spec.Disabled = true
	d = mustDecide(t, obs, k)
	if d.Status.State != gatehousev1.APIKeyRevoked {
		t.Fatalf("a blocked APIKey was not revoked: %s", d.Status.State)
	}
	if got := check(apply(t, obs, d, obs.Now), k.made[0], obs.Now); got != apikeyformat.Revoked {
		t.Fatalf("validators say %s", got)
	}
}

func TestACallerSuppliedHashIsRecordedFromTheSpecAlone(t *testing.T) {
	key, _ := apikeyformat.Generate(rand.Reader)
	k := &keys{}
	obs := observation{APIKey: testAPIKey(func(ak *gatehousev1.APIKey) {
		ak.Spec.SecretName = ""
		ak.Spec.Hash = &gatehousev1.APIKeyHash{KeyID: key.ID(), SHA256: key.Hash()}
		ak.Spec.RateLimit = &gatehousev1.RateLimit{RequestsPerSecond: 10}
		lifetime := metav1.Duration{Duration: 5 * time.Minute}
		ak.Spec.TokenExchange = &gatehousev1.TokenExchange{SigningKeyName: "platform", MaxLifetime: &lifetime}
	}), Now: t0}
	d := mustDecide(t, obs, k)
	if len(k.made) != 0 || d.Delivery != nil {
		t.Fatal("a caller-supplied hash must not generate or deliver a key")
	}
	after := apply(t, obs, d, t0)
	rec := apikeyformat.RecordOf(after.APIKey)
	if rec.Check(key, t0) != apikeyformat.Accepted || d.Status.KeyID != key.ID() {
		t.Fatalf("record %+v", rec)
	}
	if rl := rec.RateLimit; rl == nil || rl.RequestsPerSecond != 10 || rl.Burst != 10 {
		t.Fatalf("burst should default to the rate: %+v", rl)
	}
	if te := rec.TokenExchange; te == nil || te.MaxLifetimeSeconds != 300 || te.SigningKeyName != "platform" {
		t.Fatalf("token exchange %+v", te)
	}
	// The author replaces the hash: the old key stops at once, before the
	// operator updates status.
	other, _ := apikeyformat.Generate(rand.Reader)
	after.APIKey.Spec.Hash = &gatehousev1.APIKeyHash{KeyID: other.ID(), SHA256: other.Hash()}
	if got := check(after, key, t0); got == apikeyformat.Accepted {
		t.Fatal("a replaced spec.hash still accepted the old key")
	}
}

func TestAnAPIKeyBeingDeletedIsRevokedAndNothingCreated(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Minute))
	obs.APIKey.DeletionTimestamp = &metav1.Time{Time: t0.Add(time.Minute)}
	obs.Delivery = deliveryState{}
	if got := check(obs, k.made[0], obs.Now); got != apikeyformat.Revoked {
		t.Fatalf("validators accept the key of an APIKey being deleted: %s", got)
	}
	d := mustDecide(t, obs, k)
	if len(k.made) != 1 || d.Delivery != nil || d.DeleteStale {
		t.Fatalf("a deleting APIKey created something: keys %d", len(k.made))
	}
	if d.Status == nil || d.Status.State != gatehousev1.APIKeyRevoked {
		t.Fatalf("status %+v", d.Status)
	}
}

func TestManualRotationsKeepABoundedNumberOfPreviousKeys(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(48*time.Hour, 24*time.Hour)), Now: t0}
	d := mustDecide(t, obs, k)
	for i := 1; i <= maxPreviousKeys+3; i++ {
		now := t0.Add(time.Duration(i) * time.Minute)
		obs = apply(t, obs, d, now)
		obs.APIKey.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: now.Format(time.RFC3339)}
		d = mustDecide(t, obs, k)
	}
	if len(d.Status.Keys) != 1+maxPreviousKeys {
		t.Fatalf("status holds %d keys", len(d.Status.Keys))
	}
	// The newest previous keys are the ones kept.
	if d.Status.Keys[1].KeyID != k.made[len(k.made)-2].ID() {
		t.Fatal("the newest previous key was dropped")
	}
}

func TestAFailingEntropySourceIsAnError(t *testing.T) {
	_, err := decide(observation{APIKey: testAPIKey(), Now: t0}, func() (apikeyformat.Key, error) {
		return apikeyformat.Generate(iotest.ErrReader(errors.New("no entropy")))
	})
	if err == nil {
		t.Fatal("want an error")
	}
}

// legacyState is an APIKey as the previous version left it: status with key
// IDs but no hashes, and its record ConfigMap.
func legacyState(t *testing.T, grace bool) (observation, apikeyformat.Key, apikeyformat.Key) {
	t.Helper()
	cur, _ := apikeyformat.Generate(rand.Reader)
	prev, _ := apikeyformat.Generate(rand.Reader)
	ak := testAPIKey(withRotation(48*time.Hour, 2*time.Hour))
	issued := metav1.NewTime(t0.Add(-time.Hour))
	ak.Status = gatehousev1.APIKeyStatus{KeyID: cur.ID(), IssuedAt: &issued, RecordConfigMapName: LegacyRecordName(ak.Name)}
	issuedT := issued.Time
	rec := &apikeyformat.Record{Version: 1, Name: ak.Name, Namespace: ak.Namespace, Subject: ak.Spec.Subject, State: apikeyformat.StateActive,
		Keys: []apikeyformat.RecordKey{{KeyID: cur.ID(), SHA256: cur.Hash(), IssuedAt: &issuedT}}}
	if grace {
		until := metav1.NewTime(t0.Add(time.Hour))
		ak.Status.PreviousKeyID, ak.Status.PreviousKeyValidUntil = prev.ID(), &until
		rec.Keys = append(rec.Keys, apikeyformat.RecordKey{KeyID: prev.ID(), SHA256: prev.Hash(), NotAfter: &until.Time})
	}
	return observation{APIKey: ak, Now: t0, Legacy: rec, LegacyExists: true, Delivery: deliveryState{Exists: true, Key: &cur}}, cur, prev
}

func TestMigrationTakesOverThePreviousVersionsHashesOnce(t *testing.T) {
	k := &keys{}
	obs, cur, prev := legacyState(t, true)
	if got := check(obs, cur, t0); got == apikeyformat.Accepted {
		t.Fatal("before migration a status without hashes must accept nothing")
	}
	d := mustDecide(t, obs, k)
	if len(k.made) != 0 || d.Delivery != nil {
		t.Fatalf("migration generated a key (%d)", len(k.made))
	}
	if !d.DeleteLegacy {
		t.Fatal("the record ConfigMap must be deleted once status holds the hashes")
	}
	after := apply(t, obs, d, t0)
	for _, key := range []apikeyformat.Key{cur, prev} {
		if got := check(after, key, t0); got != apikeyformat.Accepted {
			t.Fatalf("key %s refused after migration: %s", key.ID(), got)
		}
	}
	if got := check(after, prev, t0.Add(time.Hour)); got != apikeyformat.GraceOver {
		t.Fatalf("the previous key's grace was not kept: %s", got)
	}
	if got := eventReasons(d); len(got) != 1 || got[0] != gatehousev1.ReasonMigrated {
		t.Fatalf("events = %v", got)
	}
	// Gone: the next reconcile clears the field and changes nothing else.
	d2 := mustDecide(t, after, k)
	if d2.Status.RecordConfigMapName != "" || d2.DeleteLegacy || len(d2.Events) != 0 || len(k.made) != 0 {
		t.Fatalf("after the deletion: %+v", d2)
	}
}

func TestMigrationTrustsOnlyTheKeyIDsTheOperatorWroteInStatus(t *testing.T) {
	k := &keys{}
	obs, cur, _ := legacyState(t, false)
	// The record ConfigMap was edited to list another key first, and a
	// changed hash for the real key ID.
	planted, _ := apikeyformat.Generate(rand.Reader)
	obs.Legacy.Keys = []apikeyformat.RecordKey{{KeyID: planted.ID(), SHA256: planted.Hash()}, {KeyID: cur.ID(), SHA256: cur.Hash()}}
	d := mustDecide(t, obs, k)
	after := apply(t, obs, d, t0)
	if got := check(after, planted, t0); got == apikeyformat.Accepted {
		t.Fatal("a key ID status never named was taken over from the record")
	}
	if got := check(after, cur, t0); got != apikeyformat.Accepted {
		t.Fatalf("the real key was refused: %s", got)
	}
}

func TestLegacyRecordNamesAreValidForEveryAPIKeyName(t *testing.T) {
	cases := map[string]string{
		"a short name":            "billing",
		"a name at the limit":     strings.Repeat("a", 253),
		"a long name with dashes": strings.Repeat("a-", 126) + "a",
	}
	seen := map[string]bool{}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			got := LegacyRecordName(in)
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Fatalf("%q: %v", got, errs)
			}
			if seen[got] {
				t.Fatalf("duplicate record name %q", got)
			}
			seen[got] = true
		})
	}
	if LegacyRecordName("billing") != "billing-gatehouse-record" {
		t.Fatal("short names keep the documented form")
	}
}

func TestKeepingLegacyRecordsMirrorsThemAndAnOperatorWithoutItDeletesThem(t *testing.T) {
	k := &keys{}
	obs, cur, _ := legacyState(t, false)
	obs.KeepLegacy = true
	d := mustDecide(t, obs, k)
	if d.DeleteLegacy || !d.MirrorLegacy {
		t.Fatalf("keeping legacy records: delete %v, mirror %v; want the record kept and mirrored", d.DeleteLegacy, d.MirrorLegacy)
	}
	after := apply(t, obs, d, t0)
	if got := check(after, cur, t0); got != apikeyformat.Accepted {
		t.Fatalf("the migrated key is refused: %s", got)
	}
	if after.APIKey.Status.RecordConfigMapName != LegacyRecordName(obs.APIKey.Name) {
		t.Fatalf("status names record %q, want %q", after.APIKey.Status.RecordConfigMapName, LegacyRecordName(obs.APIKey.Name))
	}
	// Steady state: nothing to change, the mirror still kept.
	if d2 := mustDecide(t, after, k); d2.DeleteLegacy || !d2.MirrorLegacy || d2.Status.RecordConfigMapName == "" {
		t.Fatalf("the next reconcile: delete %v, mirror %v, record %q", d2.DeleteLegacy, d2.MirrorLegacy, d2.Status.RecordConfigMapName)
	}
	// The operator restarted without the mode finds the record status
	// names, and deletes it.
	after.KeepLegacy = false
	if d3 := mustDecide(t, after, k); !d3.DeleteLegacy || d3.MirrorLegacy {
		t.Fatalf("without keeping: delete %v, mirror %v; want the record deleted", d3.DeleteLegacy, d3.MirrorLegacy)
	}
}

func TestANewAPIKeyGetsALegacyRecordNamedInStatusWhenRecordsAreKept(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(), Now: t0, KeepLegacy: true}
	d := mustDecide(t, obs, k)
	if !d.MirrorLegacy || d.Delivered == nil || d.Delivered.RecordConfigMapName != LegacyRecordName(obs.APIKey.Name) {
		t.Fatalf("a new key with records kept: mirror %v, delivered status %+v", d.MirrorLegacy, d.Delivered)
	}
	deleting := testAPIKey(func(ak *gatehousev1.APIKey) { now := metav1.NewTime(t0); ak.DeletionTimestamp = &now })
	if d := mustDecide(t, observation{APIKey: deleting, Now: t0, KeepLegacy: true}, k); d.MirrorLegacy {
		t.Fatal("an APIKey being deleted got its record mirrored; the garbage collector takes it")
	}
}

func TestABlockedAPIKeyWakesForItsExpiryAndTheGraceOfItsPreviousKey(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(time.Hour, 30*time.Minute)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(61*time.Minute))
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(62*time.Minute)) // rotated: the first key's grace ends at 91m
	if len(obs.APIKey.Status.Keys) != 2 {
		t.Fatalf("after the rotation status lists %v", statusKeyIDs(&obs.APIKey.Status))
	}
	obs.APIKey.Spec.SecretName = "taken"
	obs.Delivery = deliveryState{Exists: true, Foreign: true}
	expiry := t0.Add(4 * time.Hour)
	obs.APIKey.Spec.ExpiresAt = &metav1.Time{Time: expiry}

	d := mustDecide(t, obs, k)
	if want := obs.APIKey.Status.Keys[1].NotAfter.Sub(obs.Now); d.RequeueAfter != want {
		t.Fatalf("RequeueAfter = %v, want the end of the previous key's grace in %v", d.RequeueAfter, want)
	}
	if got := (&Reconciler{ConflictRecheck: time.Hour}).requeueAfter(d); got != d.RequeueAfter {
		t.Fatalf("requeued after %v, want the sooner grace end %v", got, d.RequeueAfter)
	}
	if got := (&Reconciler{ConflictRecheck: time.Second}).requeueAfter(d); got != time.Second {
		t.Fatalf("requeued after %v, want the sooner re-check 1s", got)
	}
	obs.Now = obs.APIKey.Status.Keys[1].NotAfter.Add(time.Minute)
	if d := mustDecide(t, obs, k); d.RequeueAfter != expiry.Sub(obs.Now) {
		t.Fatalf("RequeueAfter = %v, want the expiry in %v", d.RequeueAfter, expiry.Sub(obs.Now))
	}
}
