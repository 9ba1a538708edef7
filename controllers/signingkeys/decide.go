package signingkeys

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/keyring"
)

// decision is what one reconcile writes, decided once from an
// observation. write applies it in order: Secret, status, legacy
// ConfigMaps.
type decision struct {
	// keySet, when writeSecret, is stored in the Secret first.
	keySet      *keyring.KeySet
	writeSecret bool
	// told are told (Events, log) once the Secret holds them: a retry
	// would not decide them again.
	told []Change
	// status is the whole status to write (when it differs from the
	// observed one).
	status gatehousev1.SigningKeyStatus
	// warning, when set, is also told as an Event once the status is
	// written (a new Ready=False reason).
	warning *Change
	// deleteLegacy deletes the observed legacy JWKS ConfigMaps after the
	// status write.
	deleteLegacy bool
	// requeueAfter hands over to the next reconcile: at once when the
	// status publishes a key the schedule must see as published, at the
	// next transition otherwise; zero for none.
	requeueAfter time.Duration
}

// handOver is the RequeueAfter of a reconcile whose status write the next
// reconcile must build on.
const handOver = time.Millisecond

// decide is the controller's one pure decision per reconcile, in named
// steps: the spec, the issuer claim, the Secret's name, the trusted keys,
// recovery of lost keys, the schedule, and what the status publishes.
func decide(obs observation, now time.Time, prefix keyring.IssuerPrefix, gen keyring.Generator) (decision, error) {
	sk := obs.sk
	p, err := PolicyFor(sk)
	if err != nil {
		return notReady(obs, now, gatehousev1.ReasonInvalidSpec, fmt.Sprintf("The spec is invalid: %v.", err), false, 0), nil
	}
	if d, stop := checkIssuer(obs, now, prefix); stop {
		return d, nil
	}
	if obs.secretForeign {
		msg := fmt.Sprintf("Secret %s exists and is not controlled by this SigningKey; rename or delete it.", keyring.SecretName(sk.Name))
		return notReady(obs, now, gatehousev1.ReasonSecretConflict, msg, false, conflictRetry), nil
	}
	ks, tampered := trustKeys(obs)
	ks, lost, rewrite := recoverLost(obs, ks, p, now)
	published := keyring.PublishedKeys([]byte(sk.Status.JWKS))
	plan, err := Decide(ks, p, kidSet(published), now, gen)
	if err != nil {
		return decision{}, fmt.Errorf("deciding keys: %w", err)
	}
	d := decision{keySet: plan.KeySet, writeSecret: plan.Changed || rewrite || obs.secret == nil}
	d.told = append(append(tampered, lost...), plan.Changes...)
	if d.status, err = publish(obs, plan.KeySet, p, now, tampered); err != nil {
		return decision{}, err
	}
	d.deleteLegacy = len(obs.legacy) > 0
	d.requeueAfter = nextReconcile(plan, published, d.status.JWKS, now)
	return d, nil
}

// notReady keeps the keys as they are and records a problem in the Ready
// condition; withdraw also stops publishing (an issuer this SigningKey may
// not serve).
func notReady(obs observation, now time.Time, reason, msg string, withdraw bool, retry time.Duration) decision {
	sk := obs.sk
	st := *sk.Status.DeepCopy()
	st.ObservedGeneration = sk.Generation
	if withdraw {
		st.JWKS, st.Issuer = "", ""
	}
	d := decision{status: st, requeueAfter: retry, deleteLegacy: withdraw && len(obs.legacy) > 0}
	if conditions.Set(&d.status.Conditions, sk.Generation, metav1.NewTime(now), gatehousev1.ConditionReady, metav1.ConditionFalse, reason, msg) {
		d.warning = &Change{Type: corev1.EventTypeWarning, Reason: reason, Message: msg}
	}
	return d
}

// checkIssuer stops a SigningKey whose issuer is outside its namespace's
// prefix or owned by an older SigningKey: it publishes nothing (so
// neither discovery nor the token endpoint can serve it) until it owns
// the issuer.
func checkIssuer(obs observation, now time.Time, prefix keyring.IssuerPrefix) (decision, bool) {
	sk := obs.sk
	if err := prefix.Allows(sk.Namespace, sk.Spec.Issuer); err != nil {
		msg := fmt.Sprintf("The issuer is not allowed in this namespace: %v. Nothing is published or signed.", err)
		return notReady(obs, now, gatehousev1.ReasonIssuerOutsidePrefix, msg, true, 0), true
	}
	owner := keyring.IssuerOwner(append(slices.Clone(obs.claimants), *sk), prefix)
	if owner != nil && (owner.Namespace != sk.Namespace || owner.Name != sk.Name) {
		msg := fmt.Sprintf("SigningKey %s/%s, created earlier, already claims issuer %s. Nothing is published or signed until it lets go.", owner.Namespace, owner.Name, sk.Spec.Issuer)
		return notReady(obs, now, gatehousev1.ReasonIssuerConflict, msg, true, conflictRetry), true
	}
	return decision{}, false
}

// trustKeys keeps the keys of the Secret that the operator published (its
// status lists them): a key someone else wrote into the Secret is dropped
// and reported, never published or signed with.
func trustKeys(obs observation) (*keyring.KeySet, []Change) {
	if obs.keySet == nil {
		return &keyring.KeySet{}, nil
	}
	trusted := trustedKeyIDs(obs.sk)
	ks := obs.keySet.Clone()
	var dropped []string
	ks.Keys = slices.DeleteFunc(ks.Keys, func(k keyring.Key) bool {
		if trusted[k.ID] {
			return false
		}
		dropped = append(dropped, k.ID)
		return true
	})
	if len(dropped) == 0 {
		return ks, nil
	}
	msg := fmt.Sprintf("Secret %s holds key(s) %s that this SigningKey never published (written by someone else, or left by an interrupted write); they are discarded, never published or signed with.",
		keyring.SecretName(obs.sk.Name), strings.Join(dropped, ", "))
	return ks, []Change{{Type: corev1.EventTypeWarning, Reason: gatehousev1.ReasonKeyTampered, Message: msg}}
}

// recoverLost brings back, as lost keys, the published keys whose private
// part is gone from the Secret, so that tokens they signed verify until
// their overlap ends. rewrite asks for the Secret to be rewritten (its
// unusable entries dropped).
func recoverLost(obs observation, ks *keyring.KeySet, p Policy, now time.Time) (out *keyring.KeySet, told []Change, rewrite bool) {
	sk := obs.sk
	recovered, lost, gone := Recover(ks, sk.Status.Keys, keyring.PublishedKeys([]byte(sk.Status.JWKS)), p, now)
	invalid := obs.keySet != nil && len(obs.keySet.Invalid) > 0
	secretGone := obs.secret == nil && len(sk.Status.Keys) > 0
	if !secretGone && !obs.docBroken && len(lost)+len(gone) == 0 && !invalid {
		return ks, nil, obs.keySet != nil && len(ks.Keys) != len(obs.keySet.Keys)
	}
	msg := fmt.Sprintf("Private keys in Secret %s were lost (the Secret was deleted or edited).", keyring.SecretName(sk.Name))
	if len(lost) > 0 {
		msg += fmt.Sprintf(" Keys %s stay published, retired, so tokens they signed verify until the overlap ends.", strings.Join(lost, ", "))
	}
	if len(gone) > 0 {
		msg += fmt.Sprintf(" Keys %s are gone from the JWKS too: tokens they signed now fail.", strings.Join(gone, ", "))
	}
	msg += " A new key signs from now on."
	return recovered, []Change{{Type: corev1.EventTypeWarning, Reason: gatehousev1.ReasonKeyLost, Message: msg}}, true
}

// publish derives the status from the decided key set: the public JWKS,
// the issuer it is published for, the keys and the Ready condition.
func publish(obs observation, ks *keyring.KeySet, p Policy, now time.Time, tampered []Change) (gatehousev1.SigningKeyStatus, error) {
	sk := obs.sk
	doc, err := ks.JWKS(now)
	if err != nil {
		return gatehousev1.SigningKeyStatus{}, fmt.Errorf("assembling jwks: %w", err)
	}
	st := *sk.Status.DeepCopy()
	derived := StatusWithNextRotation(ks, p, now)
	st.ObservedGeneration = sk.Generation
	st.ActiveKeyID, st.NextRotationTime, st.LastRotationTime, st.Keys = derived.ActiveKeyID, derived.NextRotationTime, derived.LastRotationTime, derived.Keys
	st.SecretName = keyring.SecretName(sk.Name)
	st.JWKS, st.Issuer = string(doc), sk.Spec.Issuer

	var revoked, lost []string
	published := 0
	for _, k := range ks.Keys {
		switch {
		case !k.RevokedAt.IsZero():
			revoked = append(revoked, k.ID)
		case k.Lost:
			lost = append(lost, k.ID)
			published++
		default:
			published++
		}
	}
	reason := gatehousev1.ReasonKeysPublished
	msg := fmt.Sprintf("Key %s signs; %d key(s) are published in status.jwks.", derived.ActiveKeyID, published)
	if len(lost) > 0 {
		reason = gatehousev1.ReasonKeyLost
		msg += fmt.Sprintf(" The private part of key(s) %s was lost; they stay published, retired, until their overlap ends.", strings.Join(lost, ", "))
	}
	if len(revoked) > 0 {
		reason = gatehousev1.ReasonKeyRevoked
		msg += fmt.Sprintf(" Revoked key(s) %s are withdrawn from the JWKS: tokens signed by them fail verification.", strings.Join(revoked, ", "))
	}
	if len(tampered) > 0 {
		reason = gatehousev1.ReasonKeyTampered
		msg += " " + tampered[0].Message
	}
	conditions.Set(&st.Conditions, sk.Generation, metav1.NewTime(now), gatehousev1.ConditionReady, metav1.ConditionTrue, reason, msg)
	return st, nil
}

// nextReconcile hands over: at once when this status publishes a key for
// the first time (the schedule counts a key as published only once a
// reconcile has read it back from the status), else at the next
// transition the schedule named.
func nextReconcile(plan Plan, before map[string]jwk.Key, doc string, now time.Time) time.Duration {
	for kid := range keyring.PublishedKeys([]byte(doc)) {
		if _, ok := before[kid]; !ok {
			return handOver
		}
	}
	if plan.NextTransition.IsZero() {
		return 0
	}
	return max(plan.NextTransition.Sub(now), handOver)
}

func kidSet(keys map[string]jwk.Key) map[string]bool {
	out := make(map[string]bool, len(keys))
	for kid := range keys {
		out[kid] = true
	}
	return out
}

// Policy is what a SigningKey's spec and annotations ask for.
type Policy struct {
	Algorithm   jwa.SignatureAlgorithm
	RSABits     int
	Every       time.Duration
	Overlap     time.Duration
	Propagation time.Duration
	// Revoked holds spec.revokedKeyIDs.
	Revoked map[string]bool
	// RotationRequest is the rotate-requested-at annotation value.
	RotationRequest string
}

// PolicyFor reads a Policy from sk. The API server validates the spec; the
// checks here guard against objects that bypassed validation.
func PolicyFor(sk *gatehousev1.SigningKey) (Policy, error) {
	alg, err := keyring.Algorithm(sk.Spec.Algorithm)
	if err != nil {
		return Policy{}, err
	}
	p := Policy{
		Algorithm: alg, Every: keyring.DefaultEvery, Overlap: keyring.DefaultOverlap, Propagation: keyring.DefaultPropagation,
		Revoked:         map[string]bool{},
		RotationRequest: sk.Annotations[gatehousev1.AnnotationRotateRequestedAt],
	}
	if alg == jwa.RS256 || alg == jwa.PS256 {
		p.RSABits = keyring.DefaultRSABits
		if sk.Spec.RSAKeySize != nil {
			p.RSABits = int(*sk.Spec.RSAKeySize)
		}
		if !keyring.ValidRSABits(p.RSABits) {
			return Policy{}, fmt.Errorf("spec.rsaKeySize %d is not one of 2048, 3072, 4096", p.RSABits)
		}
	} else if sk.Spec.RSAKeySize != nil {
		return Policy{}, errors.New("spec.rsaKeySize is only valid with RS256 or PS256")
	}
	if r := sk.Spec.Rotation; r != nil {
		if r.Every != nil {
			p.Every = r.Every.Duration
		}
		if r.Overlap != nil {
			p.Overlap = r.Overlap.Duration
		}
		if r.Propagation != nil {
			p.Propagation = r.Propagation.Duration
		}
	}
	switch {
	case p.Every < time.Hour:
		return Policy{}, errors.New("spec.rotation.every must be at least 1h")
	case p.Overlap < time.Minute || p.Overlap >= p.Every:
		return Policy{}, errors.New("spec.rotation.overlap must be at least 1m and shorter than spec.rotation.every")
	case p.Propagation < 0 || p.Propagation >= p.Every:
		return Policy{}, errors.New("spec.rotation.propagation must not be negative and shorter than spec.rotation.every")
	}
	for _, id := range sk.Spec.RevokedKeyIDs {
		p.Revoked[id] = true
	}
	return p, nil
}

// Change is something Decide did that people should hear about (an Event,
// a log line). Messages name key IDs only.
type Change struct {
	// Type is corev1.EventTypeNormal or corev1.EventTypeWarning.
	Type    string
	Reason  string
	KeyID   string
	Message string
}

// Event reasons besides the api/v1 ones.
const (
	ReasonKeyCreated        = "KeyCreated"
	ReasonKeyActivated      = "KeyActivated"
	ReasonKeyRetired        = "KeyRetired"
	ReasonKeyRemoved        = "KeyRemoved"
	ReasonRotationRequested = "RotationRequested"
	ReasonBadRotateRequest  = "InvalidRotationRequest"
	ReasonRotationIgnored   = "RotationRequestIgnored"
)

// Plan is the outcome of Decide.
type Plan struct {
	// KeySet is the new source of truth; write it to the Secret when
	// Changed, before anything derived from it.
	KeySet  *keyring.KeySet
	Changed bool
	// Changes are the notable things Decide did.
	Changes []Change
	// NextTransition is the next instant at which Decide would act on its
	// own (a key to generate, activate or remove); zero when none.
	NextTransition time.Time
}

// Decide moves a key set to where the policy wants it at now. published
// holds the kids the status's JWKS is known to contain: a Next key is
// scheduled to activate only once published, and then no earlier than
// propagation after it was first seen there. gen is called for new keys.
//
// Guarantees, whatever the input: exactly one key can sign at now and at
// every later instant of the result; a key that ever signed stays published
// until overlap after it retired (unless revoked); a revoked key is never
// published or signing.
func Decide(in *keyring.KeySet, p Policy, published map[string]bool, now time.Time, gen keyring.Generator) (Plan, error) {
	st := &scheduling{ks: in.Clone(), p: p, published: published, now: now, gen: gen}
	activeRevoked := st.revoke()
	st.dropLostNext()
	st.retireLostActive()
	st.dropRemoved()
	ai, err := st.oneActive(activeRevoked)
	if err != nil {
		return Plan{}, err
	}
	st.takeRotationRequest(ai)
	next, err := st.ensureNext(ai)
	if err != nil {
		return Plan{}, err
	}
	nextTransition, due := st.scheduleNext(ai, next)
	if due {
		// Due already (the operator ran late): the hand-over happens now,
		// and the new active key needs its own schedule, so decide once
		// more on the result.
		sub, err := Decide(st.ks, p, published, now, gen)
		if err != nil {
			return Plan{}, err
		}
		changed, err := differs(in, sub.KeySet)
		if err != nil {
			return Plan{}, err
		}
		return Plan{KeySet: sub.KeySet, Changed: changed, Changes: append(st.changes, sub.Changes...), NextTransition: sub.NextTransition}, nil
	}
	for i := range st.ks.Keys {
		if rm := st.ks.Keys[i].RemoveAt; !rm.IsZero() && rm.After(now) && i != ai {
			nextTransition = minNonZero(nextTransition, rm)
		}
	}
	if st.ks.Keys[ai].Phase(now) != gatehousev1.KeyPhaseActive {
		return Plan{}, errors.New("internal error: no active key after deciding")
	}
	changed, err := differs(in, st.ks)
	if err != nil {
		return Plan{}, err
	}
	return Plan{KeySet: st.ks, Changed: changed, Changes: st.changes, NextTransition: nextTransition}, nil
}

// scheduling is one run of Decide: the key set being changed and what it
// told. Its steps run in the order Decide calls them.
type scheduling struct {
	ks        *keyring.KeySet
	p         Policy
	published map[string]bool
	now       time.Time
	gen       keyring.Generator
	changes   []Change
}

func (st *scheduling) note(typ, reason, kid, format string, args ...any) {
	st.changes = append(st.changes, Change{Type: typ, Reason: reason, KeyID: kid, Message: fmt.Sprintf(format, args...)})
}

// revoke withdraws, whatever their phase, the keys spec.revokedKeyIDs
// names: they leave the JWKS and stop signing now. The private part is
// destroyed; a tombstone stays in the status for one overlap so people can
// see what happened. It reports whether the active key was revoked.
func (st *scheduling) revoke() bool {
	activeRevoked := false
	for i := range st.ks.Keys {
		k := &st.ks.Keys[i]
		if !st.p.Revoked[k.ID] || !k.RevokedAt.IsZero() {
			continue
		}
		wasActive := k.Phase(st.now) == gatehousev1.KeyPhaseActive
		activeRevoked = activeRevoked || wasActive
		k.RevokedAt, k.Private, k.Public, k.RemoveAt = st.now, nil, nil, st.now.Add(st.p.Overlap)
		msg := "Key %s was revoked and removed from the JWKS: tokens signed by it now fail verification."
		if wasActive {
			msg += " It was the active key; a replacement signs from now on."
		}
		st.note(corev1.EventTypeWarning, gatehousev1.ReasonKeyRevoked, k.ID, msg, k.ID)
	}
	return activeRevoked
}

// dropLostNext withdraws a lost key (private part gone) that never signed.
func (st *scheduling) dropLostNext() {
	st.ks.Keys = slices.DeleteFunc(st.ks.Keys, func(k keyring.Key) bool {
		if !k.Lost || k.Phase(st.now) != gatehousev1.KeyPhaseNext {
			return false
		}
		st.note(corev1.EventTypeWarning, gatehousev1.ReasonKeyLost, k.ID, "The private part of next key %s was lost before it signed; it is withdrawn.", k.ID)
		return true
	})
}

// retireLostActive retires a lost active key now; it stays published for
// its overlap, so the tokens it signed keep verifying.
func (st *scheduling) retireLostActive() {
	for i := range st.ks.Keys {
		k := &st.ks.Keys[i]
		if k.Lost && k.Phase(st.now) == gatehousev1.KeyPhaseActive {
			overlap := max(k.Overlap, st.p.Overlap)
			k.RetiresAt, k.RemoveAt = st.now, st.now.Add(overlap)
			st.note(corev1.EventTypeWarning, gatehousev1.ReasonKeyLost, k.ID,
				"The private part of active key %s was lost; it is retired and stays published for %s so tokens it signed still verify, and a new key signs from now on.", k.ID, overlap)
		}
	}
}

// dropRemoved drops what is past its removal time.
func (st *scheduling) dropRemoved() {
	st.ks.Keys = slices.DeleteFunc(st.ks.Keys, func(k keyring.Key) bool {
		if k.RemoveAt.IsZero() || st.now.Before(k.RemoveAt) {
			return false
		}
		if k.RevokedAt.IsZero() {
			st.note(corev1.EventTypeNormal, ReasonKeyRemoved, k.ID, "Key %s left the JWKS, %s after it retired.", k.ID, k.RemoveAt.Sub(k.RetiresAt))
		}
		return true
	})
}

// oneActive leaves exactly one active key and returns its index: it
// retires any other key whose interval still covers now (only a corrupted
// set has one), then makes sure there is an active key at all. Indices
// stay valid afterwards: keys are only appended from here on.
func (st *scheduling) oneActive(activeRevoked bool) (int, error) {
	ai := st.ks.ActiveIndex(st.now)
	for i := range st.ks.Keys {
		k := &st.ks.Keys[i]
		if i != ai && k.Phase(st.now) == gatehousev1.KeyPhaseActive {
			k.RetiresAt, k.RemoveAt = st.now, st.now.Add(max(k.Overlap, st.p.Overlap))
		}
	}
	if ai < 0 {
		var err error
		if ai, err = ensureActive(st.ks, st.p, st.published, st.now, st.gen, activeRevoked, st.note); err != nil {
			return -1, err
		}
	}
	active := &st.ks.Keys[ai]
	active.Overlap = max(active.Overlap, st.p.Overlap)
	return ai, nil
}

// takeRotationRequest acts on the rotate-requested-at annotation: one
// rotation per new value later than the activation of the current key.
func (st *scheduling) takeRotationRequest(ai int) {
	ks, active := st.ks, &st.ks.Keys[ai]
	if r := st.p.RotationRequest; r != "" && r != ks.LastRotationRequest {
		ks.LastRotationRequest = r
		switch t, err := time.Parse(time.RFC3339, r); {
		case err != nil:
			st.note(corev1.EventTypeWarning, ReasonBadRotateRequest, "", "Ignoring annotation %s: %q is not an RFC 3339 time.", gatehousev1.AnnotationRotateRequestedAt, r)
		case t.After(active.ActivatesAt) && publishedCount(ks, st.now) >= MaxPublishedKeys:
			// Every rotation keeps the retired key published for the
			// overlap, so a burst of requests would grow the JWKS without
			// bound (and past what verifiers accept). Revocation still works.
			st.note(corev1.EventTypeWarning, ReasonRotationIgnored, active.ID, "Ignoring rotation request %s: %d keys are still published; retry once retired keys have left the JWKS.", r, publishedCount(ks, st.now))
		case t.After(active.ActivatesAt):
			ks.RotationRequestedAt = st.now
			st.note(corev1.EventTypeNormal, ReasonRotationRequested, active.ID, "Rotation of key %s requested at %s: the next key is published now and signs after the propagation interval.", active.ID, r)
		}
	}
	if !ks.RotationRequestedAt.IsZero() && !active.ActivatesAt.Before(ks.RotationRequestedAt) {
		ks.RotationRequestedAt = time.Time{}
	}
}

// target is when the next key should sign: on schedule, sooner when
// requested or when the spec's algorithm or size no longer matches the
// active key.
func (st *scheduling) target(ai int) time.Time {
	active := &st.ks.Keys[ai]
	t := active.ActivatesAt.Add(st.p.Every)
	if !st.ks.RotationRequestedAt.IsZero() {
		t = minTime(t, st.ks.RotationRequestedAt)
	}
	if active.Algorithm != st.p.Algorithm || keyring.RSABits(active.Public) != st.p.RSABits {
		t = minTime(t, st.now)
	}
	return t
}

// ensureNext returns the index of the key waiting to sign next, generating
// it once the target is within the propagation interval; -1 for none yet.
func (st *scheduling) ensureNext(ai int) (int, error) {
	next := pendingIndex(st.ks, st.now)
	if next >= 0 || st.now.Before(st.target(ai).Add(-st.p.Propagation)) {
		return next, nil
	}
	key, err := newKey(st.gen, st.p, st.now)
	if err != nil {
		return -1, err
	}
	st.ks.Keys = append(st.ks.Keys, key)
	st.note(corev1.EventTypeNormal, ReasonKeyCreated, key.ID, "Key %s was generated and is being published; it signs once verifiers have had %s to fetch it.", key.ID, st.p.Propagation)
	return len(st.ks.Keys) - 1, nil
}

// scheduleNext sets when the next key takes over, once it is published,
// and returns the next transition; due reports a hand-over that is due
// already.
func (st *scheduling) scheduleNext(ai, next int) (nextTransition time.Time, due bool) {
	active := &st.ks.Keys[ai]
	if next < 0 {
		active.RetiresAt, active.RemoveAt = time.Time{}, time.Time{}
		return st.target(ai).Add(-st.p.Propagation), false
	}
	n := &st.ks.Keys[next]
	n.Overlap = max(n.Overlap, st.p.Overlap)
	if n.PublishedAt.IsZero() && st.published[n.ID] {
		n.PublishedAt = st.now
	}
	if n.PublishedAt.IsZero() {
		// A successor that is not yet published cannot be scheduled.
		active.RetiresAt, active.RemoveAt = time.Time{}, time.Time{}
		return time.Time{}, false
	}
	// Scheduling sets both ends in one write of the Secret, so a reader
	// never sees two active keys or none.
	at := maxTime(n.PublishedAt.Add(st.p.Propagation), st.target(ai), st.now)
	n.ActivatesAt = at
	active.RetiresAt, active.RemoveAt = at, at.Add(active.Overlap)
	return at, !at.After(st.now)
}

// MaxPublishedKeys bounds the keys a requested rotation may leave in the
// JWKS. Scheduled rotations never come near it (overlap < every).
const MaxPublishedKeys = 8

func publishedCount(ks *keyring.KeySet, now time.Time) int {
	n := 0
	for i := range ks.Keys {
		if ks.Keys[i].Published(now) {
			n++
		}
	}
	return n
}

// ensureActive makes a key active at now: the published Next key when there
// is one (verifiers already know it), otherwise a new key. A new key signs
// at once: with no active key left (first key, revoked, lost) waiting for
// propagation would leave the issuer unable to sign.
func ensureActive(ks *keyring.KeySet, p Policy, published map[string]bool, now time.Time, gen keyring.Generator, emergency bool,
	note func(typ, reason, kid, format string, args ...any)) (int, error) {
	for i := range ks.Keys {
		k := &ks.Keys[i]
		if k.Phase(now) == gatehousev1.KeyPhaseNext && k.CanSign() && k.Algorithm == p.Algorithm && (!k.PublishedAt.IsZero() || published[k.ID]) {
			if k.PublishedAt.IsZero() {
				k.PublishedAt = now
			}
			k.ActivatesAt, k.RetiresAt, k.RemoveAt = now, time.Time{}, time.Time{}
			note(corev1.EventTypeNormal, ReasonKeyActivated, k.ID, "keyring.Key %s, already published, signs from now on.", k.ID)
			return i, nil
		}
	}
	key, err := newKey(gen, p, now)
	if err != nil {
		return -1, err
	}
	key.ActivatesAt = now
	ks.Keys = append(ks.Keys, key)
	ks.RotationRequestedAt = time.Time{}
	msg := "keyring.Key %s was generated and signs from now on."
	typ := corev1.EventTypeNormal
	if emergency || len(ks.Keys) > 1 {
		msg += " It was activated without a propagation interval: verifiers that have not yet re-read the JWKS reject its tokens until they do."
		typ = corev1.EventTypeWarning
	}
	note(typ, ReasonKeyActivated, key.ID, msg, key.ID)
	return len(ks.Keys) - 1, nil
}

// pendingIndex returns the index of the key waiting to become active (the
// oldest usable Next key), or -1.
func pendingIndex(ks *keyring.KeySet, now time.Time) int {
	for i := range ks.Keys {
		if k := &ks.Keys[i]; k.Phase(now) == gatehousev1.KeyPhaseNext && k.CanSign() {
			return i
		}
	}
	return -1
}

func newKey(gen keyring.Generator, p Policy, now time.Time) (keyring.Key, error) {
	priv, err := gen(p.Algorithm, p.RSABits)
	if err != nil {
		return keyring.Key{}, fmt.Errorf("generating key: %w", err)
	}
	if err := keyring.CheckAlgorithm(priv, p.Algorithm); err != nil {
		return keyring.Key{}, err
	}
	if !keyring.IsPrivate(priv) {
		return keyring.Key{}, errors.New("generator returned a public key")
	}
	// Re-derive kid, alg and use: the kid must be the thumbprint whatever
	// the generator did.
	if err := keyring.Decorate(priv, p.Algorithm); err != nil {
		return keyring.Key{}, err
	}
	pub, err := keyring.PublicKey(priv)
	if err != nil {
		return keyring.Key{}, err
	}
	return keyring.Key{ID: priv.KeyID(), Algorithm: p.Algorithm, Private: priv, Public: pub, CreatedAt: now, Overlap: p.Overlap}, nil
}

// differs reports whether two key sets would be stored differently.
func differs(a, b *keyring.KeySet) (bool, error) {
	if a == nil {
		return true, nil
	}
	x, err := a.Marshal()
	if err != nil {
		return false, err
	}
	y, err := b.Marshal()
	if err != nil {
		return false, err
	}
	return string(x) != string(y), nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(ts ...time.Time) time.Time {
	m := ts[0]
	for _, t := range ts[1:] {
		if t.After(m) {
			m = t
		}
	}
	return m
}

func minNonZero(a, b time.Time) time.Time {
	if a.IsZero() {
		return b
	}
	return minTime(a, b)
}

// Recover rebuilds what can be rebuilt when the Secret lost keys: every
// key the status still reports as published (Next, Active, Retired at now)
// that is missing from ks, and whose public part the JWKS ConfigMap still
// holds under its thumbprint, comes back as a Lost key with the reported
// times. Decide then retires it (if it was active) and keeps it published
// for its overlap, so tokens it already signed verify until they expire.
// It returns the kids of keys lost for good (no public part left).
//
// Only kids the status lists are recovered: the status is written by the
// operator alone, so a key added to the ConfigMap by hand is never adopted.
func Recover(ks *keyring.KeySet, reported []gatehousev1.SigningKeyStatusKey, publishedKeys map[string]jwk.Key, p Policy, now time.Time) (out *keyring.KeySet, lost, gone []string) {
	out = ks.Clone()
	for _, r := range reported {
		if out.Key(r.KeyID) != nil || r.Phase == gatehousev1.KeyPhaseRevoked {
			continue
		}
		k := keyring.Key{ID: r.KeyID, Lost: true, Overlap: p.Overlap}
		if r.CreatedAt != nil {
			k.CreatedAt = r.CreatedAt.UTC()
		}
		if r.ActivatesAt != nil {
			k.ActivatesAt = r.ActivatesAt.UTC()
		}
		if r.RetiresAt != nil {
			k.RetiresAt = r.RetiresAt.UTC()
		}
		if r.RemoveAt != nil {
			// The status has whole seconds; round up so a key never
			// leaves early.
			k.RemoveAt = r.RemoveAt.UTC().Add(time.Second)
		}
		if k.Phase(now) == keyring.PhaseRemoved {
			continue
		}
		pub, ok := publishedKeys[r.KeyID]
		if !ok {
			gone = append(gone, r.KeyID)
			continue
		}
		alg, _ := pub.Algorithm().(jwa.SignatureAlgorithm)
		if keyring.CheckAlgorithm(pub, alg) != nil {
			gone = append(gone, r.KeyID)
			continue
		}
		pubKey, err := keyring.PublicKey(pub)
		if err != nil {
			gone = append(gone, r.KeyID)
			continue
		}
		k.Algorithm, k.Public = alg, pubKey
		if !k.RetiresAt.IsZero() && k.RemoveAt.IsZero() {
			k.RemoveAt = k.RetiresAt.Add(p.Overlap)
		}
		out.Keys = append(out.Keys, k)
		lost = append(lost, r.KeyID)
	}
	slices.SortStableFunc(out.Keys, func(a, b keyring.Key) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, lost, gone
}
