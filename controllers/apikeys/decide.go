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
// (the APIKey, its delivery Secret, its record, the time) to what must be
// written. Nothing here talks to the API server, so every rule about
// issuance, rotation, grace, expiry and revocation is unit tested with plain
// values.

const (
	// RecordNameSuffix is appended to the APIKey's name to name its record
	// ConfigMap.
	RecordNameSuffix = "-gatehouse-record"

	// DeliverySecretType is the type of delivery Secrets. A type of its own
	// lets secret scanners, policies and people recognise a Gatehouse API key.
	DeliverySecretType = "auth.gatehouse.dev/api-key"

	// AnnotationIssuedAt is, on a delivery Secret, when the key it holds was
	// generated (RFC 3339). With the key itself it makes the delivery Secret
	// the complete source of truth for the current key: the record can be
	// rebuilt from it after a crash with the same windows it would have had.
	AnnotationIssuedAt = "auth.gatehouse.dev/issued-at"

	// ReasonRecordConflict means the record ConfigMap name is taken by a
	// ConfigMap this APIKey does not control.
	ReasonRecordConflict = "RecordConflict"

	// maxPreviousKeys bounds the keys kept in their grace period, so that a
	// burst of manual rotations cannot grow a record without limit. The
	// newest ones are kept.
	maxPreviousKeys = 4

	// Event actions (events.k8s.io/v1 requires one).
	actionIssue     = "Issue"
	actionRotate    = "Rotate"
	actionRevoke    = "Revoke"
	actionExpire    = "Expire"
	actionReconcile = "Reconcile"
)

// RecordName is the name of the record ConfigMap of the APIKey called name.
// Names too long for the suffix are shortened and made unique with a hash.
func RecordName(name string) string {
	const maxLen = 253
	if len(name)+len(RecordNameSuffix) <= maxLen {
		return name + RecordNameSuffix
	}
	sum := sha256.Sum256([]byte(name))
	short := name[:maxLen-len(RecordNameSuffix)-9]
	for len(short) > 0 && (short[len(short)-1] == '-' || short[len(short)-1] == '.') {
		short = short[:len(short)-1]
	}
	return short + "-" + hex.EncodeToString(sum[:4]) + RecordNameSuffix
}

// deliveryState is what the reconciler found under spec.secretName.
type deliveryState struct {
	// Exists: a Secret of that name exists.
	Exists bool
	// Foreign: it exists and this APIKey is not its controller.
	Foreign bool
	// Key is the well-formed key it holds; nil when absent or unusable.
	Key *apikeyformat.Key
	// IssuedAt is its AnnotationIssuedAt; zero when absent or malformed.
	IssuedAt time.Time
}

// observation is everything a decision depends on.
type observation struct {
	APIKey   *gatehousev1.APIKey
	Now      time.Time
	Delivery deliveryState
	// Record is the current record; nil when there is none or it is
	// unreadable (it is then rewritten).
	Record *apikeyformat.Record
	// RecordForeign: the record ConfigMap name is taken by a ConfigMap this
	// APIKey does not control.
	RecordForeign bool

	// The objects as read (nil when absent): writes update exactly these
	// versions, so a decision taken on a stale view fails with a conflict.
	secret   *corev1.Secret
	recordCM *corev1.ConfigMap
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

// decision is what the reconciler must write.
type decision struct {
	// Delivery is the key the delivery Secret must hold; nil leaves every
	// delivery Secret as it is.
	Delivery *keyMaterial
	// Record is the record to write; nil leaves the record as it is.
	Record *apikeyformat.Record
	// Status is the desired status; nil leaves the status as it is.
	Status *gatehousev1.APIKeyStatus
	// Events are emitted after every write succeeded.
	Events []keyEvent
	// RequeueAfter is when the next time-driven change is due (expiry, next
	// rotation, end of a grace period); zero when none is.
	RequeueAfter time.Duration
	// Log holds key IDs worth logging ("issued", "rotatedFrom"...).
	Log []any
	// DeleteStale asks for the deletion of delivery Secrets this APIKey
	// controls under another name than spec.secretName. Only a decision
	// that delivered the current key (or recorded a caller-supplied hash)
	// sets it: a blocked APIKey keeps its old Secret, and its key.
	DeleteStale bool
}

// decide computes the desired state. newKey generates key material and is
// called at most once.
func decide(obs observation, newKey func() (apikeyformat.Key, error)) (decision, error) {
	ak := obs.APIKey
	spec := &ak.Spec
	now := obs.Now
	// Times written to objects have whole seconds, as metav1.Time and the
	// annotations do, so that re-reading them compares equal.
	stamp := now.UTC().Truncate(time.Second)

	if ak.DeletionTimestamp != nil {
		return decideDeleting(obs), nil
	}

	st := ak.Status.DeepCopy()
	st.ObservedGeneration = ak.Generation
	st.RecordConfigMapName = RecordName(ak.Name)
	setCond := func(t string, s metav1.ConditionStatus, reason, msg string) {
		conditions.Set(&st.Conditions, ak.Generation, metav1.NewTime(now), t, s, reason, msg)
	}

	expired := spec.ExpiresAt != nil && !now.Before(spec.ExpiresAt.Time)
	if expired {
		setCond(gatehousev1.ConditionExpired, metav1.ConditionTrue, gatehousev1.ReasonExpired,
			fmt.Sprintf("The key expired at %s.", spec.ExpiresAt.UTC().Format(time.RFC3339)))
	} else if spec.ExpiresAt != nil {
		setCond(gatehousev1.ConditionExpired, metav1.ConditionFalse, gatehousev1.ReasonNotExpired,
			fmt.Sprintf("The key expires at %s.", spec.ExpiresAt.UTC().Format(time.RFC3339)))
	} else {
		setCond(gatehousev1.ConditionExpired, metav1.ConditionFalse, gatehousev1.ReasonNotExpired, "The key does not expire.")
	}
	if spec.Disabled {
		setCond(gatehousev1.ConditionRevoked, metav1.ConditionTrue, gatehousev1.ReasonDisabled,
			"spec.disabled is true: validators refuse the key.")
	} else {
		setCond(gatehousev1.ConditionRevoked, metav1.ConditionFalse, gatehousev1.ReasonEnabled, "The key is not disabled.")
	}

	state := apikeyformat.StateActive
	switch {
	case spec.Disabled:
		state = apikeyformat.StateRevoked
	case expired:
		state = apikeyformat.StateExpired
	}

	var d decision
	blocked := func(reason, msg string) (decision, error) {
		if c := readyCondition(ak.Status.Conditions); c == nil || c.Reason != reason {
			d.Events = append(d.Events, keyEvent{Type: "Warning", Reason: reason, Action: actionReconcile, Note: msg})
		}
		setCond(gatehousev1.ConditionReady, metav1.ConditionFalse, reason, msg)
		d.Status = st
		// A blocked APIKey may still have a record of ours from before
		// (spec.secretName was changed to a taken name). Disabling or
		// expiry must reach validators all the same: revocation never waits
		// for a conflict to be resolved.
		if obs.Record != nil && !obs.RecordForeign && state != apikeyformat.StateActive && obs.Record.State != state {
			rec := *obs.Record
			rec.State = state
			d.Record = &rec
			d.Events = append(d.Events, keyEvent{Type: "Normal", Reason: gatehousev1.ReasonKeyRevoked, Action: actionRevoke,
				Note: fmt.Sprintf("Marked key %s %s although the APIKey is blocked.", currentKeyID(&rec), state)})
			d.Log = append(d.Log, "revoked", currentKeyID(&rec), "state", string(state))
		}
		return d, nil
	}
	generated := spec.SecretName != ""
	switch {
	case generated == (spec.Hash != nil):
		return blocked(gatehousev1.ReasonInvalidSpec, "Exactly one of spec.secretName and spec.hash must be set.")
	case spec.Hash != nil && (!apikeyformat.ValidKeyID(spec.Hash.KeyID) || !validHexHash(spec.Hash.SHA256)):
		return blocked(gatehousev1.ReasonInvalidSpec, "spec.hash must hold a 16-character key ID and a lowercase hex SHA-256.")
	case obs.RecordForeign:
		return blocked(ReasonRecordConflict, fmt.Sprintf(
			"ConfigMap %s exists and is not controlled by this APIKey; delete or rename it to let the operator write the key's record.", RecordName(ak.Name)))
	case generated && obs.Delivery.Foreign:
		return blocked(gatehousev1.ReasonSecretConflict, fmt.Sprintf(
			"Secret %s exists and is not controlled by this APIKey; choose another spec.secretName or delete that Secret.", spec.SecretName))
	}

	var cur keyMaterial
	var previous []apikeyformat.RecordKey
	if generated {
		var err error
		cur, previous, err = decideGenerated(obs, state, stamp, newKey, &d)
		if err != nil {
			return decision{}, err
		}
		d.Delivery = &cur
	} else {
		cur.IssuedAt = stamp
		if rk := findKey(obs.Record, spec.Hash.KeyID); rk != nil && rk.SHA256 == spec.Hash.SHA256 && rk.IssuedAt != nil {
			cur.IssuedAt = rk.IssuedAt.UTC()
		}
		if cid := currentKeyID(obs.Record); cid != spec.Hash.KeyID {
			d.Events = append(d.Events, keyEvent{Type: "Normal", Reason: gatehousev1.ReasonIssued, Action: actionIssue,
				Note: fmt.Sprintf("Recorded the caller-supplied hash of key %s.", spec.Hash.KeyID)})
			d.Log = append(d.Log, "recorded", spec.Hash.KeyID)
		}
	}
	curID, curHash := cur.Key.ID(), cur.Key.Hash()
	if !generated {
		curID, curHash = spec.Hash.KeyID, spec.Hash.SHA256
	}

	rec := &apikeyformat.Record{
		Version:   apikeyformat.RecordVersion,
		Name:      ak.Name,
		Namespace: ak.Namespace,
		Subject:   spec.Subject,
		Scopes:    slices.Clone(spec.Scopes),
		State:     state,
		Keys:      append([]apikeyformat.RecordKey{{KeyID: curID, SHA256: curHash, IssuedAt: timePtr(cur.IssuedAt)}}, previous...),
	}
	if spec.ExpiresAt != nil {
		rec.ExpiresAt = timePtr(spec.ExpiresAt.UTC())
	}
	if rl := spec.RateLimit; rl != nil {
		burst := rl.RequestsPerSecond
		if rl.Burst != nil {
			burst = *rl.Burst
		}
		rec.RateLimit = &apikeyformat.RecordRateLimit{RequestsPerSecond: rl.RequestsPerSecond, Burst: burst}
	}
	if te := spec.TokenExchange; te != nil {
		lifetime := 15 * time.Minute
		if te.MaxLifetime != nil {
			lifetime = te.MaxLifetime.Duration
		}
		rec.TokenExchange = &apikeyformat.RecordTokenExchange{
			SigningKeyName:     te.SigningKeyName,
			Audiences:          slices.Clone(te.Audiences),
			MaxLifetimeSeconds: int64(lifetime / time.Second),
		}
	}
	d.Record = rec
	d.DeleteStale = true

	// State changes of the record are what validators act on: announce them.
	prevState := apikeyformat.StateActive
	if obs.Record != nil {
		prevState = obs.Record.State
	}
	if state != prevState {
		switch state {
		case apikeyformat.StateRevoked:
			d.Events = append(d.Events, keyEvent{Type: "Normal", Reason: gatehousev1.ReasonDisabled, Action: actionRevoke,
				Note: fmt.Sprintf("Revoked key %s: spec.disabled is true.", curID)})
			d.Log = append(d.Log, "revoked", curID)
		case apikeyformat.StateExpired:
			d.Events = append(d.Events, keyEvent{Type: "Warning", Reason: gatehousev1.ReasonExpired, Action: actionExpire,
				Note: fmt.Sprintf("Key %s expired at %s.", curID, spec.ExpiresAt.UTC().Format(time.RFC3339))})
			d.Log = append(d.Log, "expired", curID)
		case apikeyformat.StateActive:
			d.Events = append(d.Events, keyEvent{Type: "Normal", Reason: gatehousev1.ReasonEnabled, Action: actionIssue,
				Note: fmt.Sprintf("Key %s is active again.", curID)})
		}
	}

	// Status.
	if st.KeyID != "" && st.KeyID != curID && generated || len(previous) > 0 {
		st.LastRotationTime = &metav1.Time{Time: cur.IssuedAt}
	}
	st.KeyID = curID
	st.IssuedAt = &metav1.Time{Time: cur.IssuedAt}
	st.NextRotationTime = nil
	var next time.Time
	if generated && state == apikeyformat.StateActive {
		if t, _, ok := nextRotation(spec, ak.Annotations, cur.IssuedAt); ok {
			next = t
			st.NextRotationTime = &metav1.Time{Time: t}
		}
	}
	st.PreviousKeyID, st.PreviousKeyValidUntil = "", nil
	if len(previous) > 0 {
		st.PreviousKeyID = previous[0].KeyID
		st.PreviousKeyValidUntil = &metav1.Time{Time: *previous[0].NotAfter}
	}
	switch state {
	case apikeyformat.StateActive:
		setCond(gatehousev1.ConditionReady, metav1.ConditionTrue, gatehousev1.ReasonIssued,
			fmt.Sprintf("Key %s is recorded in ConfigMap %s.", curID, st.RecordConfigMapName))
	case apikeyformat.StateRevoked:
		setCond(gatehousev1.ConditionReady, metav1.ConditionFalse, gatehousev1.ReasonDisabled,
			fmt.Sprintf("Key %s is revoked: spec.disabled is true.", curID))
	case apikeyformat.StateExpired:
		setCond(gatehousev1.ConditionReady, metav1.ConditionFalse, gatehousev1.ReasonExpired,
			fmt.Sprintf("Key %s expired at %s.", curID, spec.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	d.Status = st

	// Wake up exactly when the next time-driven change is due.
	var wake []time.Time
	if spec.ExpiresAt != nil && now.Before(spec.ExpiresAt.Time) {
		wake = append(wake, spec.ExpiresAt.Time)
	}
	if !next.IsZero() {
		wake = append(wake, next)
	}
	for _, p := range previous {
		wake = append(wake, *p.NotAfter)
	}
	if len(wake) > 0 {
		earliest := slices.MinFunc(wake, func(a, b time.Time) int { return a.Compare(b) })
		d.RequeueAfter = max(earliest.Sub(now), time.Millisecond)
	}
	return d, nil
}

// decideGenerated picks the current key of an operator-generated APIKey and
// the previous keys still in their grace period.
//
// The delivery Secret is the source of truth: it is written before the
// record, so after a crash between the two writes it holds the newer key.
// Whenever the current key differs from the record's current key, the
// record's key becomes a previous key valid until the new key's issue time
// plus the grace period: the same window it would have had without the
// crash, and no key is generated twice or lost.
func decideGenerated(obs observation, state apikeyformat.State, stamp time.Time, newKey func() (apikeyformat.Key, error), d *decision) (keyMaterial, []apikeyformat.RecordKey, error) {
	ak := obs.APIKey
	spec := &ak.Spec
	var cur keyMaterial
	var replaced []apikeyformat.RecordKey
	fresh := false
	if k := obs.Delivery.Key; k != nil {
		cur = keyMaterial{Key: *k, IssuedAt: obs.Delivery.IssuedAt.UTC()}
		if cur.IssuedAt.IsZero() {
			// The annotation was edited away: the record still knows.
			cur.IssuedAt = stamp
			if rk := findKey(obs.Record, k.ID()); rk != nil && rk.IssuedAt != nil {
				cur.IssuedAt = rk.IssuedAt.UTC()
			}
		}
	} else {
		k, err := newKey()
		if err != nil {
			return keyMaterial{}, nil, fmt.Errorf("generating api key: %w", err)
		}
		cur, fresh = keyMaterial{Key: k, IssuedAt: stamp}, true
		if lost := currentKeyID(obs.Record); lost != "" {
			d.Events = append(d.Events, keyEvent{Type: "Warning", Reason: gatehousev1.ReasonKeyLost, Action: actionIssue,
				Note: fmt.Sprintf("Secret %s did not hold key %s (deleted, edited or renamed); issued key %s in its place, the old key stays valid for the rotation grace period.", spec.SecretName, lost, k.ID())})
			d.Log = append(d.Log, "issued", k.ID(), "lost", lost)
		} else {
			d.Events = append(d.Events, keyEvent{Type: "Normal", Reason: gatehousev1.ReasonIssued, Action: actionIssue,
				Note: fmt.Sprintf("Issued key %s and delivered it in Secret %s.", k.ID(), spec.SecretName)})
			d.Log = append(d.Log, "issued", k.ID())
		}
	}

	grace := time.Duration(0)
	if spec.Rotation != nil && spec.Rotation.GracePeriod != nil {
		grace = spec.Rotation.GracePeriod.Duration
	}
	if !fresh && state == apikeyformat.StateActive {
		if due, why, ok := nextRotation(spec, ak.Annotations, cur.IssuedAt); ok && !obs.Now.Before(due) {
			k, err := newKey()
			if err != nil {
				return keyMaterial{}, nil, fmt.Errorf("generating api key: %w", err)
			}
			old := cur
			cur = keyMaterial{Key: k, IssuedAt: stamp}
			replaced = append(replaced, apikeyformat.RecordKey{KeyID: old.Key.ID(), SHA256: old.Key.Hash(), IssuedAt: timePtr(old.IssuedAt)})
			note := fmt.Sprintf("Rotated key %s to %s (%s).", old.Key.ID(), k.ID(), why)
			if grace > 0 {
				note = fmt.Sprintf("Rotated key %s to %s (%s); key %s stays valid until %s.", old.Key.ID(), k.ID(), why, old.Key.ID(), stamp.Add(grace).Format(time.RFC3339))
			}
			d.Events = append(d.Events, keyEvent{Type: "Normal", Reason: gatehousev1.ReasonRotated, Action: actionRotate, Note: note})
			d.Log = append(d.Log, "rotatedFrom", old.Key.ID(), "rotatedTo", k.ID(), "trigger", why)
		}
	}
	return cur, previousKeys(obs.Record, replaced, cur, grace, obs.Now), nil
}

// previousKeys lists the keys other than cur that are still within their
// grace period, newest first: keys just replaced, the record's current key
// if cur replaced it, and the record's earlier previous keys.
func previousKeys(rec *apikeyformat.Record, replaced []apikeyformat.RecordKey, cur keyMaterial, grace time.Duration, now time.Time) []apikeyformat.RecordKey {
	end := cur.IssuedAt.Add(grace)
	candidates := slices.Clone(replaced)
	if rec != nil {
		for i, rk := range rec.Keys {
			rk.NotBefore = nil
			if i == 0 || rk.NotAfter == nil {
				// The record's current key was replaced by cur: its grace
				// starts when cur was issued.
				rk.NotAfter = timePtr(end)
			}
			candidates = append(candidates, rk)
		}
	}
	seen := map[string]bool{cur.Key.ID(): true}
	var out []apikeyformat.RecordKey
	for _, rk := range candidates {
		if seen[rk.KeyID] {
			continue
		}
		seen[rk.KeyID] = true
		if rk.NotAfter == nil {
			rk.NotAfter = timePtr(end)
		}
		if !now.Before(*rk.NotAfter) {
			continue
		}
		t := rk.NotAfter.UTC()
		rk.NotAfter = &t
		out = append(out, rk)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotAfter.After(*out[j].NotAfter) })
	if len(out) > maxPreviousKeys {
		out = out[:maxPreviousKeys]
	}
	return out
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
// (another finalizer, or foreground deletion): its record is revoked at once
// so that validators stop accepting the key before the garbage collector
// removes the record, and nothing new is created.
func decideDeleting(obs observation) decision {
	if obs.Record == nil || obs.RecordForeign || obs.Record.State == apikeyformat.StateRevoked {
		return decision{}
	}
	rec := *obs.Record
	rec.State = apikeyformat.StateRevoked
	id := currentKeyID(&rec)
	return decision{
		Record: &rec,
		Events: []keyEvent{{Type: "Normal", Reason: gatehousev1.ReasonKeyRevoked, Action: actionRevoke,
			Note: fmt.Sprintf("Revoked key %s: the APIKey is being deleted.", id)}},
		Log: []any{"revoked", id},
	}
}

func readyCondition(conds []metav1.Condition) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == gatehousev1.ConditionReady {
			return &conds[i]
		}
	}
	return nil
}

func findKey(rec *apikeyformat.Record, id string) *apikeyformat.RecordKey {
	if rec == nil {
		return nil
	}
	for i := range rec.Keys {
		if rec.Keys[i].KeyID == id {
			return &rec.Keys[i]
		}
	}
	return nil
}

func currentKeyID(rec *apikeyformat.Record) string {
	if rec == nil || len(rec.Keys) == 0 {
		return ""
	}
	return rec.Keys[0].KeyID
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

func timePtr(t time.Time) *time.Time { return &t }
