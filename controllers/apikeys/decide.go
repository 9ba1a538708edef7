package apikeys

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/conditions"
)

// The decision half of the controller: pure functions from what was read
// (the APIKey, its delivery Secret, a previous version's record, the time)
// to what must be written. Nothing here talks to the API server, so every
// rule about issuance, rotation, grace, expiry, revocation, delivery and
// migration is unit tested with plain values.
//
// The APIKey's status is the source of truth for its hashes. The delivery
// Secret is output only: anyone who may write Secrets in the namespace may
// write it, so the operator never derives a hash from it. A Secret that went
// missing or was altered is reported (condition Delivered=False) and the key
// stays valid; a rotation delivers a new key.

const (
	// LegacyRecordNameSuffix is what previous versions appended to an
	// APIKey's name to name its record ConfigMap.
	LegacyRecordNameSuffix = "-gatehouse-record"

	// DeliverySecretType is the type of delivery Secrets. A type of its own
	// lets secret scanners, policies and people recognise a Gatehouse API key.
	DeliverySecretType = "auth.gatehouse.dev/api-key"

	// AnnotationIssuedAt is, on a delivery Secret, when the key it holds was
	// generated (RFC 3339). Informational for the Secret's reader: the
	// operator takes issue times from status.
	AnnotationIssuedAt = "auth.gatehouse.dev/issued-at"

	// maxPreviousKeys bounds the keys kept in their grace period, so that a
	// burst of manual rotations cannot grow the status without limit (the
	// CRD allows five keys in all). The newest ones are kept.
	maxPreviousKeys = 4

	// Event actions (events.k8s.io/v1 requires one).
	actionIssue     = "Issue"
	actionRotate    = "Rotate"
	actionRevoke    = "Revoke"
	actionExpire    = "Expire"
	actionDeliver   = "Deliver"
	actionMigrate   = "Migrate"
	actionReconcile = "Reconcile"
)

// LegacyRecordName is the name previous versions gave the record ConfigMap
// of the APIKey called name. Names too long for the suffix were shortened
// and made unique with a hash.
func LegacyRecordName(name string) string {
	const maxLen = 253
	if len(name)+len(LegacyRecordNameSuffix) <= maxLen {
		return name + LegacyRecordNameSuffix
	}
	sum := sha256.Sum256([]byte(name))
	short := name[:maxLen-len(LegacyRecordNameSuffix)-9]
	for len(short) > 0 && (short[len(short)-1] == '-' || short[len(short)-1] == '.') {
		short = short[:len(short)-1]
	}
	return short + "-" + hex.EncodeToString(sum[:4]) + LegacyRecordNameSuffix
}

// deliveryState is what the reconciler found under spec.secretName. It is
// compared with status, never trusted.
type deliveryState struct {
	// Exists: a Secret of that name exists.
	Exists bool
	// Foreign: it exists and this APIKey is not its controller.
	Foreign bool
	// Key is the well-formed key it holds; nil when absent or unusable.
	Key *apikeyformat.Key
}

// observation is everything a decision depends on.
type observation struct {
	APIKey   *gatehousev1.APIKey
	Now      time.Time
	Delivery deliveryState
	// Legacy is the record a previous version wrote, read from the
	// ConfigMap status.recordConfigMapName names, only when this APIKey
	// (by UID) controls that ConfigMap; nil otherwise.
	Legacy *apikeyformat.Record
	// LegacyExists: that ConfigMap exists and this APIKey controls it, so
	// it is to be deleted once status holds the hashes (or kept up to date,
	// with KeepLegacy).
	LegacyExists bool
	// KeepLegacy: keep a record ConfigMap mirrored from status for
	// sidecars of earlier versions instead of deleting it.
	KeepLegacy bool

	// The objects as read (nil when absent): writes update exactly these
	// versions, so a decision taken on a stale view fails with a conflict.
	secret   *corev1.Secret
	legacyCM *corev1.ConfigMap
}

// keyMaterial is a generated key and when it was generated.
type keyMaterial struct {
	Key      apikeyformat.Key
	IssuedAt time.Time
}

// keyEvent is an Event to emit once the writes succeeded. Notes name key IDs,
// never keys.
type keyEvent struct {
	Type   string
	Reason string
	Action string
	Note   string
}

// decision is what the reconciler must write, in this order: Status, then
// the delivery Secret (Delivery), then Delivered, then the deletions.
type decision struct {
	// Status is the desired status; nil leaves the status as it is. When
	// Delivery is set it lists the new key but does not yet claim it
	// delivered: a crash before the Secret is written leaves a key nobody
	// holds, which the next reconcile replaces.
	Status *gatehousev1.APIKeyStatus
	// Delivery is a new key the delivery Secret must hold; nil leaves
	// every delivery Secret as it is.
	Delivery *keyMaterial
	// Delivered is the status to write once Delivery is written.
	Delivered *gatehousev1.APIKeyStatus
	// Events are emitted after every write succeeded.
	Events []keyEvent
	// RequeueAfter is when the next time-driven change is due (expiry, next
	// rotation, end of a grace period); zero when none is.
	RequeueAfter time.Duration
	// Log holds key IDs worth logging ("issued", "rotatedFrom"...).
	Log []any
	// DeleteStale asks for the deletion of delivery Secrets this APIKey
	// controls under another name than spec.secretName. A blocked APIKey
	// keeps its old Secret.
	DeleteStale bool
	// NameTaken says the delivery Secret's name is held by a Secret this
	// APIKey does not control. The operator's cache holds only its own
	// Secrets, so that Secret's deletion is never heard of: the name is
	// checked again after a while (Reconciler.ConflictRecheck).
	NameTaken bool
	// DeleteLegacy asks for the deletion of the previous version's record
	// ConfigMap, after Status is written: the hashes are in status by then.
	// The next reconcile, finding it gone, clears status.recordConfigMapName.
	DeleteLegacy bool
	// MirrorLegacy asks for the record ConfigMap of earlier versions'
	// sidecars (status.recordConfigMapName) to be written from the status,
	// after every other write (KeepLegacy).
	MirrorLegacy bool
}

// decide computes the desired state in named steps. newKey generates key
// material and is called at most once.
func decide(obs observation, newKey func() (apikeyformat.Key, error)) (decision, error) {
	d, err := decideKeys(obs, newKey)
	if err == nil && obs.KeepLegacy {
		keepLegacy(obs, &d)
	}
	return d, err
}

// keepLegacy turns the deletion of a previous version's record into its
// upkeep: the status names the record ConfigMap (so that an operator
// started later without KeepLegacy finds and deletes it) and the writer
// mirrors the status into it. An APIKey being deleted gets none: the
// garbage collector takes the ConfigMap with it.
func keepLegacy(obs observation, d *decision) {
	d.DeleteLegacy = false
	if obs.APIKey.DeletionTimestamp != nil {
		return
	}
	name := LegacyRecordName(obs.APIKey.Name)
	for _, st := range []*gatehousev1.APIKeyStatus{d.Status, d.Delivered} {
		if st != nil && len(st.Keys) > 0 {
			st.RecordConfigMapName = name
		}
	}
	d.MirrorLegacy = true
}

// decideKeys is decide without the legacy-record mode.
func decideKeys(obs observation, newKey func() (apikeyformat.Key, error)) (decision, error) {
	ak := obs.APIKey
	if ak.DeletionTimestamp != nil {
		return decideDeleting(obs), nil
	}
	// Times written to objects have whole seconds, as metav1.Time does, so
	// that re-reading them compares equal.
	stamp := obs.Now.UTC().Truncate(time.Second)
	st := ak.Status.DeepCopy()
	st.ObservedGeneration = ak.Generation
	setCond := conditionSetter(st, ak.Generation, obs.Now)

	var d decision
	migrate(obs, st, &d)
	state := keyState(&ak.Spec, obs.Now)
	setExpiryAndRevocation(&ak.Spec, obs.Now, setCond)

	if reason, msg := specProblem(obs); reason != "" {
		return decideBlocked(obs, st, state, reason, msg, d), nil
	}

	var fresh *keyMaterial
	if ak.Spec.SecretName != "" {
		known, nEvents, nLog := st.Keys, len(d.Events), len(d.Log)
		var err error
		if st.Keys, fresh, err = generatedKeys(obs, st, state, stamp, newKey, &d); err != nil {
			return decision{}, err
		}
		if fresh != nil && obs.Delivery.Foreign {
			// Nothing can be delivered: keep the keys their holders have,
			// and announce no new one.
			st.Keys, d.Events, d.Log = known, d.Events[:nEvents], d.Log[:nLog]
			d = decideBlocked(obs, st, state, gatehousev1.ReasonSecretConflict, fmt.Sprintf(
				"Secret %s exists and is not controlled by this APIKey; choose another spec.secretName or delete that Secret.", ak.Spec.SecretName), d)
			d.NameTaken = true
			return d, nil
		}
	} else {
		st.Keys = hashKeys(obs, st, stamp, &d)
		st.DeliveredKeyID, st.DeliverySecretName = "", ""
	}
	announceState(prevState(&ak.Status), state, st.Keys[0].KeyID, &ak.Spec, &d)
	st.State = state
	fillKeyFields(ak, st, fresh, stamp)
	setReady(st, state, &ak.Spec, setCond)
	d.DeleteStale = true
	d.DeleteLegacy = obs.LegacyExists
	d.RequeueAfter = nextWake(ak, st, obs.Now)

	if fresh == nil {
		setDelivery(obs, st, setCond, &d)
		d.Status = st
		return d, nil
	}
	// The status lists the new key before the Secret holds it; Delivered
	// then records the delivery.
	d.Delivery = fresh
	d.Status = st
	delivered := st.DeepCopy()
	delivered.DeliveredKeyID, delivered.DeliverySecretName = fresh.Key.ID(), ak.Spec.SecretName
	conditions.Set(&delivered.Conditions, ak.Generation, metav1.NewTime(obs.Now), gatehousev1.ConditionDelivered, metav1.ConditionTrue,
		gatehousev1.ReasonDelivered, fmt.Sprintf("Secret %s holds key %s.", ak.Spec.SecretName, fresh.Key.ID()))
	d.Delivered = delivered
	return d, nil
}

type setCondFunc func(t string, s metav1.ConditionStatus, reason, msg string)

func conditionSetter(st *gatehousev1.APIKeyStatus, generation int64, now time.Time) setCondFunc {
	return func(t string, s metav1.ConditionStatus, reason, msg string) {
		conditions.Set(&st.Conditions, generation, metav1.NewTime(now), t, s, reason, msg)
	}
}

// migrate takes over, once, the hashes a previous version of the operator
// kept in its record ConfigMap: only when status has none yet, only from the
// ConfigMap this APIKey controls (observe checks the owner's UID), and only
// the keys that the operator-written status.keyID and status.previousKeyID
// name. A record listing any other key ID contributes nothing for it.
func migrate(obs observation, st *gatehousev1.APIKeyStatus, d *decision) {
	if !obs.LegacyExists {
		st.RecordConfigMapName = ""
	}
	if len(st.Keys) > 0 || obs.Legacy == nil || st.KeyID == "" {
		return
	}
	var cur, prev *apikeyformat.RecordKey
	for i := range obs.Legacy.Keys {
		switch rk := &obs.Legacy.Keys[i]; rk.KeyID {
		case st.KeyID:
			cur = rk
		case st.PreviousKeyID:
			prev = rk
		}
	}
	if cur == nil {
		return
	}
	st.Keys = []gatehousev1.APIKeyStatusKey{{KeyID: cur.KeyID, SHA256: cur.SHA256, IssuedAt: metaTime(cur.IssuedAt)}}
	if st.IssuedAt != nil {
		st.Keys[0].IssuedAt = st.IssuedAt.DeepCopy()
	}
	if prev != nil && st.PreviousKeyID != "" && st.PreviousKeyValidUntil != nil {
		st.Keys = append(st.Keys, gatehousev1.APIKeyStatusKey{KeyID: prev.KeyID, SHA256: prev.SHA256,
			IssuedAt: metaTime(prev.IssuedAt), NotAfter: st.PreviousKeyValidUntil.DeepCopy()})
	}
	if obs.APIKey.Spec.SecretName != "" {
		// The previous version delivered its current key before recording it.
		st.DeliveredKeyID, st.DeliverySecretName = st.KeyID, obs.APIKey.Spec.SecretName
	}
	d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonMigrated, Action: actionMigrate,
		Note: fmt.Sprintf("Took over the hash of key %s from the previous version's record ConfigMap into status.", st.KeyID)})
	d.Log = append(d.Log, "migrated", st.KeyID)
}

// keyState is the state the spec and the time call for.
func keyState(spec *gatehousev1.APIKeySpec, now time.Time) gatehousev1.APIKeyState {
	switch {
	case spec.Disabled:
		return gatehousev1.APIKeyRevoked
	case spec.ExpiresAt != nil && !now.Before(spec.ExpiresAt.Time):
		return gatehousev1.APIKeyExpired
	}
	return gatehousev1.APIKeyActive
}

func prevState(st *gatehousev1.APIKeyStatus) gatehousev1.APIKeyState {
	if st.State == "" {
		return gatehousev1.APIKeyActive
	}
	return st.State
}

// setExpiryAndRevocation sets the Expired and Revoked conditions.
func setExpiryAndRevocation(spec *gatehousev1.APIKeySpec, now time.Time, setCond setCondFunc) {
	switch {
	case spec.ExpiresAt != nil && !now.Before(spec.ExpiresAt.Time):
		setCond(gatehousev1.ConditionExpired, metav1.ConditionTrue, gatehousev1.ReasonExpired,
			fmt.Sprintf("The key expired at %s.", spec.ExpiresAt.UTC().Format(time.RFC3339)))
	case spec.ExpiresAt != nil:
		setCond(gatehousev1.ConditionExpired, metav1.ConditionFalse, gatehousev1.ReasonNotExpired,
			fmt.Sprintf("The key expires at %s.", spec.ExpiresAt.UTC().Format(time.RFC3339)))
	default:
		setCond(gatehousev1.ConditionExpired, metav1.ConditionFalse, gatehousev1.ReasonNotExpired, "The key does not expire.")
	}
	if spec.Disabled {
		setCond(gatehousev1.ConditionRevoked, metav1.ConditionTrue, gatehousev1.ReasonDisabled,
			"spec.disabled is true: validators refuse the key.")
	} else {
		setCond(gatehousev1.ConditionRevoked, metav1.ConditionFalse, gatehousev1.ReasonEnabled, "The key is not disabled.")
	}
}

// specProblem names what in the spec prevents any key from being recorded.
func specProblem(obs observation) (reason, msg string) {
	spec := &obs.APIKey.Spec
	switch {
	case (spec.SecretName != "") == (spec.Hash != nil):
		return gatehousev1.ReasonInvalidSpec, "Exactly one of spec.secretName and spec.hash must be set."
	case spec.Hash != nil && (!apikeyformat.ValidKeyID(spec.Hash.KeyID) || !validHexHash(spec.Hash.SHA256)):
		return gatehousev1.ReasonInvalidSpec, "spec.hash must hold a 16-character key ID and a lowercase hex SHA-256."
	}
	return "", ""
}

// decideBlocked reports a spec or a Secret that prevents the operator from
// recording or delivering a key. The keys already in status stay valid
// (their holders have them), but the state follows the spec at once:
// revocation never waits for a conflict to be resolved.
func decideBlocked(obs observation, st *gatehousev1.APIKeyStatus, state gatehousev1.APIKeyState, reason, msg string, d decision) decision {
	ak := obs.APIKey
	d.DeleteLegacy = obs.LegacyExists && len(st.Keys) > 0
	if c := findCondition(ak.Status.Conditions, gatehousev1.ConditionReady); c == nil || c.Reason != reason {
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeWarning, Reason: reason, Action: actionReconcile, Note: msg})
	}
	if len(st.Keys) > 0 && state != prevState(&ak.Status) && state != gatehousev1.APIKeyActive {
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonKeyRevoked, Action: actionRevoke,
			Note: fmt.Sprintf("Marked key %s %s although the APIKey is blocked.", st.Keys[0].KeyID, state)})
		d.Log = append(d.Log, "revoked", st.Keys[0].KeyID, "state", string(state))
	}
	if len(st.Keys) > 0 {
		st.State = state
	}
	conditions.Set(&st.Conditions, ak.Generation, metav1.NewTime(obs.Now), gatehousev1.ConditionReady, metav1.ConditionFalse, reason, msg)
	d.Status = st
	d.DeleteStale = false
	d.RequeueAfter = blockedWake(ak, st, obs.Now)
	return d
}

// blockedWake is when a blocked APIKey's state next changes by the clock
// alone: its expiry, or the end of a previous key's grace. Rotations wait
// until it is unblocked. Only future times count, so a blocked APIKey is
// never requeued in a loop.
func blockedWake(ak *gatehousev1.APIKey, st *gatehousev1.APIKeyStatus, now time.Time) time.Duration {
	var wake []time.Time
	if e := ak.Spec.ExpiresAt; e != nil {
		wake = append(wake, e.Time)
	}
	for i, k := range st.Keys {
		if i > 0 {
			wake = append(wake, k.NotAfter.Time)
		}
	}
	var next time.Duration
	for _, t := range wake {
		if d := t.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// generatedKeys picks the keys of an operator-generated APIKey. The current
// key is status.keys[0] if it was delivered to spec.secretName; a new key
// is generated when there is none, when the current one was never
// delivered there (a crash between the writes, a changed spec.secretName, a
// switch from spec.hash), or when a rotation is due. The key it replaces
// stays valid for the grace period (harmless for a key never delivered:
// nobody holds it). fresh is the new key, nil when none was generated.
func generatedKeys(obs observation, st *gatehousev1.APIKeyStatus, state gatehousev1.APIKeyState, stamp time.Time,
	newKey func() (apikeyformat.Key, error), d *decision) (keys []gatehousev1.APIKeyStatusKey, fresh *keyMaterial, err error) {
	ak := obs.APIKey
	spec := &ak.Spec
	known := st.Keys
	why := ""
	switch {
	case len(known) == 0:
		why = "issued"
	case known[0].KeyID != st.DeliveredKeyID || st.DeliverySecretName != spec.SecretName:
		why = "undelivered"
	case state == gatehousev1.APIKeyActive:
		if due, w, ok := nextRotation(spec, ak.Annotations, issuedAt(known[0], stamp)); ok && !obs.Now.Before(due) {
			why = w
		}
	}
	grace := time.Duration(0)
	if spec.Rotation != nil && spec.Rotation.GracePeriod != nil {
		grace = spec.Rotation.GracePeriod.Duration
	}
	if why == "" {
		return append(known[:1:1], previousKeys(known[1:], stamp.Add(grace), obs.Now)...), nil, nil
	}
	k, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("generating api key: %w", err)
	}
	fresh = &keyMaterial{Key: k, IssuedAt: stamp}
	keys = append([]gatehousev1.APIKeyStatusKey{{KeyID: k.ID(), SHA256: k.Hash(), IssuedAt: &metav1.Time{Time: stamp}}},
		previousKeys(known, stamp.Add(grace), obs.Now)...)
	announceNewKey(spec, known, k.ID(), why, grace, stamp, d)
	return keys, fresh, nil
}

// announceNewKey records the Event and log line of a generated key.
func announceNewKey(spec *gatehousev1.APIKeySpec, known []gatehousev1.APIKeyStatusKey, id, why string, grace time.Duration, stamp time.Time, d *decision) {
	switch why {
	case "issued":
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonIssued, Action: actionIssue,
			Note: fmt.Sprintf("Issued key %s and delivered it in Secret %s.", id, spec.SecretName)})
		d.Log = append(d.Log, "issued", id)
	case "undelivered":
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonIssued, Action: actionIssue,
			Note: fmt.Sprintf("Key %s was never delivered in Secret %s; issued key %s and delivered it there.", known[0].KeyID, spec.SecretName, id)})
		d.Log = append(d.Log, "issued", id, "undelivered", known[0].KeyID)
	default:
		old := known[0].KeyID
		note := fmt.Sprintf("Rotated key %s to %s (%s).", old, id, why)
		if grace > 0 {
			note = fmt.Sprintf("Rotated key %s to %s (%s); key %s stays valid until %s.", old, id, why, old, stamp.Add(grace).Format(time.RFC3339))
		}
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonRotated, Action: actionRotate, Note: note})
		d.Log = append(d.Log, "rotatedFrom", old, "rotatedTo", id, "trigger", why)
	}
}

// hashKeys records the caller-supplied hash as the only key: keys given by
// hash are not rotated, and the author's spec.hash replaces earlier keys.
func hashKeys(obs observation, st *gatehousev1.APIKeyStatus, stamp time.Time, d *decision) []gatehousev1.APIKeyStatusKey {
	h := obs.APIKey.Spec.Hash
	k := gatehousev1.APIKeyStatusKey{KeyID: h.KeyID, SHA256: h.SHA256, IssuedAt: &metav1.Time{Time: stamp}}
	if len(st.Keys) > 0 && st.Keys[0].KeyID == h.KeyID && st.Keys[0].SHA256 == h.SHA256 && st.Keys[0].IssuedAt != nil {
		k.IssuedAt = st.Keys[0].IssuedAt.DeepCopy()
	}
	if len(st.Keys) == 0 || st.Keys[0].KeyID != h.KeyID {
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonIssued, Action: actionIssue,
			Note: fmt.Sprintf("Recorded the caller-supplied hash of key %s.", h.KeyID)})
		d.Log = append(d.Log, "recorded", h.KeyID)
	}
	return []gatehousev1.APIKeyStatusKey{k}
}

// previousKeys lists the keys of old that are still within their grace
// period, newest first. A key without notAfter (a current key just
// replaced) gets end.
func previousKeys(old []gatehousev1.APIKeyStatusKey, end time.Time, now time.Time) []gatehousev1.APIKeyStatusKey {
	var out []gatehousev1.APIKeyStatusKey
	for _, k := range old {
		k = *k.DeepCopy()
		if k.NotAfter == nil {
			k.NotAfter = &metav1.Time{Time: end}
		}
		if !now.Before(k.NotAfter.Time) {
			continue
		}
		out = append(out, k)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotAfter.After(out[j].NotAfter.Time) })
	if len(out) > maxPreviousKeys {
		out = out[:maxPreviousKeys]
	}
	return out
}

// announceState records the Events of a state change: it is what
// validators act on.
func announceState(from, to gatehousev1.APIKeyState, id string, spec *gatehousev1.APIKeySpec, d *decision) {
	if from == to {
		return
	}
	switch to {
	case gatehousev1.APIKeyRevoked:
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonDisabled, Action: actionRevoke,
			Note: fmt.Sprintf("Revoked key %s: spec.disabled is true.", id)})
		d.Log = append(d.Log, "revoked", id)
	case gatehousev1.APIKeyExpired:
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeWarning, Reason: gatehousev1.ReasonExpired, Action: actionExpire,
			Note: fmt.Sprintf("Key %s expired at %s.", id, spec.ExpiresAt.UTC().Format(time.RFC3339))})
		d.Log = append(d.Log, "expired", id)
	case gatehousev1.APIKeyActive:
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonEnabled, Action: actionIssue,
			Note: fmt.Sprintf("Key %s is active again.", id)})
	}
}

// fillKeyFields sets the summary fields people and `kubectl get` read.
func fillKeyFields(ak *gatehousev1.APIKey, st *gatehousev1.APIKeyStatus, fresh *keyMaterial, stamp time.Time) {
	cur := st.Keys[0]
	if fresh != nil && ak.Status.KeyID != "" && ak.Status.KeyID != cur.KeyID {
		st.LastRotationTime = &metav1.Time{Time: stamp}
	}
	st.KeyID = cur.KeyID
	st.IssuedAt = cur.IssuedAt.DeepCopy()
	st.NextRotationTime = nil
	if ak.Spec.SecretName != "" && st.State == gatehousev1.APIKeyActive {
		if t, _, ok := nextRotation(&ak.Spec, ak.Annotations, issuedAt(cur, stamp)); ok {
			st.NextRotationTime = &metav1.Time{Time: t}
		}
	}
	st.PreviousKeyID, st.PreviousKeyValidUntil = "", nil
	if len(st.Keys) > 1 {
		st.PreviousKeyID = st.Keys[1].KeyID
		st.PreviousKeyValidUntil = st.Keys[1].NotAfter.DeepCopy()
	}
}

// setReady sets the Ready condition of an APIKey whose keys are recorded.
func setReady(st *gatehousev1.APIKeyStatus, state gatehousev1.APIKeyState, spec *gatehousev1.APIKeySpec, setCond setCondFunc) {
	id := st.Keys[0].KeyID
	switch state {
	case gatehousev1.APIKeyActive:
		setCond(gatehousev1.ConditionReady, metav1.ConditionTrue, gatehousev1.ReasonIssued,
			fmt.Sprintf("Key %s is recorded in the APIKey's status.", id))
	case gatehousev1.APIKeyRevoked:
		setCond(gatehousev1.ConditionReady, metav1.ConditionFalse, gatehousev1.ReasonDisabled,
			fmt.Sprintf("Key %s is revoked: spec.disabled is true.", id))
	case gatehousev1.APIKeyExpired:
		setCond(gatehousev1.ConditionReady, metav1.ConditionFalse, gatehousev1.ReasonExpired,
			fmt.Sprintf("Key %s expired at %s.", id, spec.ExpiresAt.UTC().Format(time.RFC3339)))
	}
}

// setDelivery reports whether the delivery Secret still holds the current
// key. It never changes a key: the Secret is output, and a missing or
// altered one tells only that the client may no longer find its key there.
func setDelivery(obs observation, st *gatehousev1.APIKeyStatus, setCond setCondFunc, d *decision) {
	spec := &obs.APIKey.Spec
	if spec.SecretName == "" {
		setCond(gatehousev1.ConditionDelivered, metav1.ConditionFalse, gatehousev1.ReasonNotDelivered,
			"The key is given by spec.hash: its owner holds it, nothing is delivered.")
		return
	}
	cur := st.Keys[0]
	msg := ""
	switch ds := obs.Delivery; {
	case !ds.Exists:
		msg = fmt.Sprintf("Secret %s is missing.", spec.SecretName)
	case ds.Foreign || ds.Key == nil || ds.Key.ID() != cur.KeyID || !apikeyformat.HashMatches(*ds.Key, cur.SHA256):
		msg = fmt.Sprintf("Secret %s no longer holds key %s.", spec.SecretName, cur.KeyID)
	}
	if msg == "" {
		setCond(gatehousev1.ConditionDelivered, metav1.ConditionTrue, gatehousev1.ReasonDelivered,
			fmt.Sprintf("Secret %s holds key %s.", spec.SecretName, cur.KeyID))
		return
	}
	msg += fmt.Sprintf(" Key %s stays valid; annotate the APIKey with %s to deliver a new key.", cur.KeyID, gatehousev1.AnnotationRotateRequestedAt)
	if c := findCondition(obs.APIKey.Status.Conditions, gatehousev1.ConditionDelivered); c == nil || c.Message != msg {
		d.Events = append(d.Events, keyEvent{Type: corev1.EventTypeWarning, Reason: gatehousev1.ReasonDeliverySecretChanged, Action: actionDeliver, Note: msg})
	}
	setCond(gatehousev1.ConditionDelivered, metav1.ConditionFalse, gatehousev1.ReasonDeliverySecretChanged, msg)
}

// nextWake is when the next time-driven change is due: expiry, the next
// rotation, the end of a grace period. Zero when none is.
func nextWake(ak *gatehousev1.APIKey, st *gatehousev1.APIKeyStatus, now time.Time) time.Duration {
	var wake []time.Time
	if e := ak.Spec.ExpiresAt; e != nil && now.Before(e.Time) {
		wake = append(wake, e.Time)
	}
	if st.NextRotationTime != nil {
		wake = append(wake, st.NextRotationTime.Time)
	}
	for _, k := range st.Keys[1:] {
		wake = append(wake, k.NotAfter.Time)
	}
	if len(wake) == 0 {
		return 0
	}
	earliest := slices.MinFunc(wake, func(a, b time.Time) int { return a.Compare(b) })
	return max(earliest.Sub(now), time.Millisecond)
}

// nextRotation is when the key issued at issuedAt is due for rotation and
// why: the schedule (issuedAt + every) or a rotation request annotation
// later than issuedAt, whichever comes first. A request in the future
// schedules a one-off rotation at that time. ok is false when no rotation
// is due ever.
func nextRotation(spec *gatehousev1.APIKeySpec, annotations map[string]string, issuedAt time.Time) (at time.Time, why string, ok bool) {
	if spec.Rotation != nil && spec.Rotation.Every.Duration > 0 {
		at, why, ok = issuedAt.Add(spec.Rotation.Every.Duration), "scheduled", true
	}
	if req, err := rotationRequest(annotations); err == nil && !req.IsZero() && req.After(issuedAt) {
		if !ok || req.Before(at) {
			at, why, ok = req, "requested", true
		}
	}
	return at, why, ok
}

// rotationRequest parses the rotation request annotation; zero when unset.
func rotationRequest(annotations map[string]string) (time.Time, error) {
	v, found := annotations[gatehousev1.AnnotationRotateRequestedAt]
	if !found {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("parsing %s: %w", gatehousev1.AnnotationRotateRequestedAt, err)
	}
	return t, nil
}

// decideDeleting handles an APIKey that is being deleted but still exists
// (another finalizer, or foreground deletion). Validators already refuse
// its keys (apikeyformat.RecordOf reads the deletion timestamp); the state
// says so too, and nothing new is created.
func decideDeleting(obs observation) decision {
	ak := obs.APIKey
	if len(ak.Status.Keys) == 0 || ak.Status.State == gatehousev1.APIKeyRevoked {
		return decision{}
	}
	st := ak.Status.DeepCopy()
	st.State = gatehousev1.APIKeyRevoked
	id := st.Keys[0].KeyID
	return decision{
		Status: st,
		Events: []keyEvent{{Type: corev1.EventTypeNormal, Reason: gatehousev1.ReasonKeyRevoked, Action: actionRevoke,
			Note: fmt.Sprintf("Revoked key %s: the APIKey is being deleted.", id)}},
		Log: []any{"revoked", id},
	}
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// issuedAt is when k was issued, or def when status does not say.
func issuedAt(k gatehousev1.APIKeyStatusKey, def time.Time) time.Time {
	if k.IssuedAt == nil {
		return def
	}
	return k.IssuedAt.UTC()
}

func metaTime(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	return &metav1.Time{Time: t.UTC()}
}

func validHexHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && (s[i] < 'a' || s[i] > 'f') {
			return false
		}
	}
	return true
}
