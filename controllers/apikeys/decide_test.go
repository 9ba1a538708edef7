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

// apply returns what the reconciler observes after writing d, at now.
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
		next.Delivery = deliveryState{Exists: true, Key: &k, IssuedAt: d.Delivery.IssuedAt}
	}
	if d.Record != nil {
		doc, err := d.Record.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if next.Record, err = apikeyformat.UnmarshalRecord(doc); err != nil {
			t.Fatalf("the decided record does not decode: %v", err)
		}
	}
	return next
}

func recordJSON(t *testing.T, r *apikeyformat.Record) string {
	t.Helper()
	doc, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(doc)
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

func TestANewAPIKeyGetsOneKeyDeliveredAndRecordedUnderTheSameHash(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(), Now: t0.Add(1500 * time.Millisecond)}
	d := mustDecide(t, obs, k)
	if len(k.made) != 1 || d.Delivery == nil {
		t.Fatalf("want exactly one key delivered, generated %d, delivery %v", len(k.made), d.Delivery != nil)
	}
	rec := d.Record
	if rec == nil || len(rec.Keys) != 1 || rec.Keys[0].KeyID != d.Delivery.Key.ID() || rec.Keys[0].SHA256 != d.Delivery.Key.Hash() {
		t.Fatalf("record does not hold the delivered key's hash: %+v", rec)
	}
	if rec.State != apikeyformat.StateActive || rec.Subject != "service:billing" || rec.Name != "billing" || rec.Namespace != "shop" {
		t.Fatalf("record fields: %+v", rec)
	}
	if !d.Delivery.IssuedAt.Equal(t0.Add(time.Second)) || !rec.Keys[0].IssuedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("issue time should be the clock's, in whole seconds: %v", d.Delivery.IssuedAt)
	}
	if rec.Keys[0].NotBefore != nil || rec.Keys[0].NotAfter != nil {
		t.Fatal("the current key must have an open window")
	}
	if got := rec.Check(d.Delivery.Key, obs.Now); got != apikeyformat.Accepted {
		t.Fatalf("the record refuses its own key: %s", got)
	}
	ready := condition(t, d.Status, gatehousev1.ConditionReady)
	if ready.Status != metav1.ConditionTrue || ready.Reason != gatehousev1.ReasonIssued || ready.ObservedGeneration != 1 {
		t.Fatalf("Ready = %+v", ready)
	}
	if d.Status.KeyID != d.Delivery.Key.ID() || d.Status.RecordConfigMapName != "billing-gatehouse-record" {
		t.Fatalf("status = %+v", d.Status)
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
			if len(k.made) > 1 {
				t.Fatalf("generated %d keys", len(k.made))
			}
			if len(second.Events) != 0 {
				t.Fatalf("events on an unchanged state: %+v", second.Events)
			}
			if recordJSON(t, first.Record) != recordJSON(t, second.Record) {
				t.Fatalf("record changed:\n%+v\n%+v", first.Record, second.Record)
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
	if len(rot.Record.Keys) != 2 || rot.Record.Keys[1].KeyID != oldKey.ID() || !rot.Record.Keys[1].NotAfter.Equal(rotatedAt.Add(grace)) {
		t.Fatalf("record after rotation: %+v", rot.Record.Keys)
	}
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
		if got := rot.Record.Check(c.key, c.at); got != c.want {
			t.Errorf("Check(%s at +%v) = %s, want %s", c.key.ID(), c.at.Sub(rotatedAt), got, c.want)
		}
	}
	if rot.RequeueAfter != grace {
		t.Fatalf("after a rotation the next wake-up is the end of grace, got %v", rot.RequeueAfter)
	}
	st := rot.Status
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
	if len(k.made) != 2 || len(after.Record.Keys) != 1 || after.Record.Keys[0].KeyID != newKey.ID() {
		t.Fatalf("after grace: generated %d, keys %+v", len(k.made), after.Record.Keys)
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
	if len(k.made) != 2 || len(d.Record.Keys) != 1 || d.Record.Keys[0].KeyID != k.made[1].ID() {
		t.Fatalf("keys %+v", d.Record.Keys)
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

func TestAnOperatorRestartBetweenTheTwoWritesKeepsTheDeliveredKey(t *testing.T) {
	const every, grace = 2 * time.Hour, time.Hour
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(every, grace)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(every))
	rot := mustDecide(t, obs, k)
	oldID, newKey := k.made[0].ID(), k.made[1]

	// Only the delivery Secret was written before the crash; the fresh
	// reconciler starts a little later.
	crashed := obs
	crashed.Now = t0.Add(every + 5*time.Minute)
	crashed.Delivery = deliveryState{Exists: true, Key: &newKey, IssuedAt: rot.Delivery.IssuedAt}
	d := mustDecide(t, crashed, k)
	if len(k.made) != 2 {
		t.Fatalf("the restart generated another key (%d in all)", len(k.made))
	}
	if d.Record.Keys[0].KeyID != newKey.ID() || d.Record.Keys[1].KeyID != oldID {
		t.Fatalf("record after restart: %+v", d.Record.Keys)
	}
	if !d.Record.Keys[1].NotAfter.Equal(*rot.Record.Keys[1].NotAfter) {
		t.Fatalf("the old key's grace moved: %v, want %v", d.Record.Keys[1].NotAfter, rot.Record.Keys[1].NotAfter)
	}
	if d.RequeueAfter != grace-5*time.Minute {
		t.Fatalf("requeue after %v", d.RequeueAfter)
	}
}

func TestALostDeliverySecretIsReplacedLikeARotation(t *testing.T) {
	cases := []struct {
		name      string
		apiKey    *gatehousev1.APIKey
		wantGrace bool
	}{
		{"With a rotation grace period the lost key stays valid for it.", testAPIKey(withRotation(48*time.Hour, time.Hour)), true},
		{"Without rotation the lost key is dropped at once.", testAPIKey(), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &keys{}
			obs := observation{APIKey: tc.apiKey, Now: t0}
			obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Hour))
			obs.Delivery = deliveryState{}
			d := mustDecide(t, obs, k)
			if len(k.made) != 2 || d.Delivery.Key.ID() != k.made[1].ID() {
				t.Fatalf("want one replacement key, generated %d", len(k.made))
			}
			if got := eventReasons(d); len(got) != 1 || got[0] != gatehousev1.ReasonKeyLost {
				t.Fatalf("events = %v", got)
			}
			if kept := len(d.Record.Keys) == 2 && d.Record.Keys[1].KeyID == k.made[0].ID(); kept != tc.wantGrace {
				t.Fatalf("record keys %+v", d.Record.Keys)
			}
		})
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
	d := mustDecide(t, obs, k)
	if d.Record.State != apikeyformat.StateExpired || len(k.made) != 1 {
		t.Fatalf("state %s, generated %d", d.Record.State, len(k.made))
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

func TestDisablingRevokesInOneDecisionAndReEnablingRestoresTheSameKey(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(2*time.Hour, time.Hour)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Minute))
	obs.APIKey.Spec.Disabled = true
	obs.APIKey.Generation = 2
	d := mustDecide(t, obs, k)
	if d.Record.State != apikeyformat.StateRevoked || d.Record.Check(k.made[0], obs.Now) != apikeyformat.Revoked {
		t.Fatalf("record state %s", d.Record.State)
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
	if d.Record.State != apikeyformat.StateActive || len(k.made) != 2 ||
		d.Record.Check(k.made[0], obs.Now) != apikeyformat.Accepted || d.Record.Check(k.made[1], obs.Now) != apikeyformat.Accepted {
		t.Fatalf("re-enabled record: %+v (keys generated: %d)", d.Record, len(k.made))
	}
	if c := condition(t, d.Status, gatehousev1.ConditionRevoked); c.Status != metav1.ConditionFalse || c.Reason != gatehousev1.ReasonEnabled {
		t.Fatalf("Revoked = %+v", c)
	}
}

func TestConflictsTouchNothing(t *testing.T) {
	cases := []struct {
		name       string
		obs        observation
		wantReason string
	}{
		{"A delivery Secret name taken by a foreign Secret is a SecretConflict.",
			observation{APIKey: testAPIKey(), Now: t0, Delivery: deliveryState{Exists: true, Foreign: true}}, gatehousev1.ReasonSecretConflict},
		{"A record name taken by a foreign ConfigMap is a RecordConflict.",
			observation{APIKey: testAPIKey(), Now: t0, RecordForeign: true}, ReasonRecordConflict},
		{"Neither a secret name nor a hash is an InvalidSpec.",
			observation{APIKey: testAPIKey(func(ak *gatehousev1.APIKey) { ak.Spec.SecretName = "" }), Now: t0}, gatehousev1.ReasonInvalidSpec},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &keys{}
			d := mustDecide(t, tc.obs, k)
			if d.Delivery != nil || d.Record != nil || len(k.made) != 0 {
				t.Fatalf("a blocked APIKey writes key material: delivery %v, record %v, keys %d", d.Delivery != nil, d.Record != nil, len(k.made))
			}
			c := condition(t, d.Status, gatehousev1.ConditionReady)
			if c.Status != metav1.ConditionFalse || c.Reason != tc.wantReason || c.Message == "" {
				t.Fatalf("Ready = %+v", c)
			}
			if got := eventReasons(d); len(got) != 1 || got[0] != tc.wantReason {
				t.Fatalf("events = %v", got)
			}
			again := apply(t, tc.obs, d, t0.Add(time.Minute))
			if d2 := mustDecide(t, again, k); len(d2.Events) != 0 || !equality.Semantic.DeepEqual(d.Status, d2.Status) {
				t.Fatalf("a persisting conflict should neither repeat its event nor change status: %+v", d2.Events)
			}
		})
	}
}

func TestDisablingABlockedAPIKeyStillRevokesItsExistingRecord(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Minute))
	// spec.secretName now names a foreign Secret, and the key is disabled.
	obs.APIKey.Spec.SecretName = "taken"
	obs.APIKey.Spec.Disabled = true
	obs.Delivery = deliveryState{Exists: true, Foreign: true}
	d := mustDecide(t, obs, k)
	if c := condition(t, d.Status, gatehousev1.ConditionReady); c.Reason != gatehousev1.ReasonSecretConflict {
		t.Fatalf("Ready = %+v", c)
	}
	if d.Delivery != nil || len(k.made) != 1 || d.DeleteStale {
		t.Fatal("a blocked APIKey delivered or generated a key, or would delete its old delivery Secret")
	}
	if d.Record == nil || d.Record.State != apikeyformat.StateRevoked || d.Record.Check(k.made[0], obs.Now) != apikeyformat.Revoked {
		t.Fatalf("the existing record must be revoked: %+v", d.Record)
	}
	// Once revoked, nothing more to write.
	obs = apply(t, obs, d, t0.Add(2*time.Minute))
	if d := mustDecide(t, obs, k); d.Record != nil || len(d.Events) != 0 {
		t.Fatalf("a second decision rewrote the record or announced again: %+v", d.Events)
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
	if d.Record.Check(key, t0) != apikeyformat.Accepted || d.Status.KeyID != key.ID() {
		t.Fatalf("record %+v", d.Record)
	}
	if rl := d.Record.RateLimit; rl == nil || rl.RequestsPerSecond != 10 || rl.Burst != 10 {
		t.Fatalf("burst should default to the rate: %+v", rl)
	}
	if te := d.Record.TokenExchange; te == nil || te.MaxLifetimeSeconds != 300 || te.SigningKeyName != "platform" {
		t.Fatalf("token exchange %+v", te)
	}
}

func TestAnAPIKeyBeingDeletedGetsItsRecordRevokedAndNothingCreated(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Minute))
	obs.APIKey.DeletionTimestamp = &metav1.Time{Time: t0.Add(time.Minute)}
	obs.Delivery = deliveryState{}
	d := mustDecide(t, obs, k)
	if len(k.made) != 1 || d.Delivery != nil || d.Status != nil {
		t.Fatalf("a deleting APIKey created or changed something: keys %d", len(k.made))
	}
	if d.Record == nil || d.Record.State != apikeyformat.StateRevoked || d.Record.Keys[0].KeyID != k.made[0].ID() || d.DeleteStale {
		t.Fatalf("record %+v", d.Record)
	}
	obs.Record = nil
	if d := mustDecide(t, obs, k); d.Record != nil {
		t.Fatal("a deleting APIKey without a record must not create one")
	}
}

func TestAMissingIssueTimeAnnotationIsRestoredFromTheRecord(t *testing.T) {
	k := &keys{}
	obs := observation{APIKey: testAPIKey(withRotation(2*time.Hour, time.Hour)), Now: t0}
	obs = apply(t, obs, mustDecide(t, obs, k), t0.Add(time.Hour))
	obs.Delivery.IssuedAt = time.Time{}
	d := mustDecide(t, obs, k)
	if !d.Delivery.IssuedAt.Equal(t0) || d.RequeueAfter != time.Hour {
		t.Fatalf("issuedAt %v, requeue %v", d.Delivery.IssuedAt, d.RequeueAfter)
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
	if len(d.Record.Keys) != 1+maxPreviousKeys {
		t.Fatalf("record holds %d keys", len(d.Record.Keys))
	}
	// The newest previous keys are the ones kept.
	if d.Record.Keys[1].KeyID != k.made[len(k.made)-2].ID() {
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

func TestRecordNamesAreValidForEveryAPIKeyName(t *testing.T) {
	cases := map[string]string{
		"a short name":            "billing",
		"a name at the limit":     strings.Repeat("a", 253),
		"a long name with dashes": strings.Repeat("a-", 126) + "a",
	}
	seen := map[string]bool{}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			got := RecordName(in)
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Fatalf("%q: %v", got, errs)
			}
			if seen[got] {
				t.Fatalf("duplicate record name %q", got)
			}
			seen[got] = true
		})
	}
	if RecordName("billing") != "billing-gatehouse-record" {
		t.Fatal("short names keep the documented form")
	}
}
