package keyring

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	corev1 "k8s.io/api/core/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// Defaults of spec.rotation, matching the CRD defaults, for objects
// written before those existed or built in code.
const (
	DefaultEvery       = 720 * time.Hour
	DefaultOverlap     = time.Hour
	DefaultPropagation = 5 * time.Minute
)

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
	alg, err := Algorithm(sk.Spec.Algorithm)
	if err != nil {
		return Policy{}, err
	}
	p := Policy{
		Algorithm: alg, Every: DefaultEvery, Overlap: DefaultOverlap, Propagation: DefaultPropagation,
		Revoked:         map[string]bool{},
		RotationRequest: sk.Annotations[gatehousev1.AnnotationRotateRequestedAt],
	}
	if alg == jwa.RS256 || alg == jwa.PS256 {
		p.RSABits = DefaultRSABits
		if sk.Spec.RSAKeySize != nil {
			p.RSABits = int(*sk.Spec.RSAKeySize)
		}
		if !validRSABits(p.RSABits) {
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
	KeySet  *KeySet
	Changed bool
	// Changes are the notable things Decide did.
	Changes []Change
	// NextTransition is the next instant at which Decide would act on its
	// own (a key to generate, activate or remove); zero when none.
	NextTransition time.Time
}

// Decide moves a key set to where the policy wants it at now. published
// holds the kids the JWKS ConfigMap is known to contain: a Next key is
// scheduled to activate only once published, and then no earlier than
// propagation after it was first seen there. gen is called for new keys.
//
// Guarantees, whatever the input: exactly one key can sign at now and at
// every later instant of the result; a key that ever signed stays published
// until overlap after it retired (unless revoked); a revoked key is never
// published or signing.
func Decide(in *KeySet, p Policy, published map[string]bool, now time.Time, gen Generator) (Plan, error) {
	ks := in.Clone()
	var changes []Change
	note := func(typ, reason, kid, format string, args ...any) {
		changes = append(changes, Change{Type: typ, Reason: reason, KeyID: kid, Message: fmt.Sprintf(format, args...)})
	}

	// Revocations first: whatever phase, a revoked key leaves the JWKS and
	// stops signing now. Its private part is destroyed; a tombstone stays
	// in the status for one overlap so people can see what happened.
	activeRevoked := false
	for i := range ks.Keys {
		k := &ks.Keys[i]
		if !p.Revoked[k.ID] || !k.RevokedAt.IsZero() {
			continue
		}
		wasActive := k.Phase(now) == gatehousev1.KeyPhaseActive
		activeRevoked = activeRevoked || wasActive
		k.RevokedAt, k.Private, k.Public, k.RemoveAt = now, nil, nil, now.Add(p.Overlap)
		msg := "Key %s was revoked and removed from the JWKS: tokens signed by it now fail verification."
		if wasActive {
			msg += " It was the active key; a replacement signs from now on."
		}
		note(corev1.EventTypeWarning, gatehousev1.ReasonKeyRevoked, k.ID, msg, k.ID)
	}

	// Lost keys (private part gone): one that never signed is dropped; the
	// active one retires now but stays published for its overlap, so the
	// tokens it signed keep verifying.
	ks.Keys = slices.DeleteFunc(ks.Keys, func(k Key) bool {
		if !k.Lost || k.Phase(now) != gatehousev1.KeyPhaseNext {
			return false
		}
		note(corev1.EventTypeWarning, gatehousev1.ReasonKeyLost, k.ID, "The private part of next key %s was lost before it signed; it is withdrawn.", k.ID)
		return true
	})
	for i := range ks.Keys {
		k := &ks.Keys[i]
		if k.Lost && k.Phase(now) == gatehousev1.KeyPhaseActive {
			k.RetiresAt, k.RemoveAt = now, now.Add(max(k.Overlap, p.Overlap))
			note(corev1.EventTypeWarning, gatehousev1.ReasonKeyLost, k.ID,
				"The private part of active key %s was lost; it is retired and stays published for %s so tokens it signed still verify, and a new key signs from now on.", k.ID, max(k.Overlap, p.Overlap))
		}
	}

	// Drop what is past its removal time.
	ks.Keys = slices.DeleteFunc(ks.Keys, func(k Key) bool {
		if k.RemoveAt.IsZero() || now.Before(k.RemoveAt) {
			return false
		}
		if k.RevokedAt.IsZero() {
			note(corev1.EventTypeNormal, ReasonKeyRemoved, k.ID, "Key %s left the JWKS, %s after it retired.", k.ID, k.RemoveAt.Sub(k.RetiresAt))
		}
		return true
	})

	// Exactly one active key: retire any other key whose interval still
	// covers now (only a corrupted set has one), then make sure there is
	// an active key at all.
	ai := ks.activeIndex(now)
	for i := range ks.Keys {
		k := &ks.Keys[i]
		if i != ai && k.Phase(now) == gatehousev1.KeyPhaseActive {
			k.RetiresAt, k.RemoveAt = now, now.Add(max(k.Overlap, p.Overlap))
		}
	}
	if ai < 0 {
		var err error
		if ai, err = ensureActive(ks, p, published, now, gen, activeRevoked, note); err != nil {
			return Plan{}, err
		}
	}
	// Indices stay valid below: keys are only appended from here on.
	active := &ks.Keys[ai]
	active.Overlap = max(active.Overlap, p.Overlap)

	// Rotation requests: one rotation per new annotation value later than
	// the activation of the current key.
	if r := p.RotationRequest; r != "" && r != ks.LastRotationRequest {
		ks.LastRotationRequest = r
		switch t, err := time.Parse(time.RFC3339, r); {
		case err != nil:
			note(corev1.EventTypeWarning, ReasonBadRotateRequest, "", "Ignoring annotation %s: %q is not an RFC 3339 time.", gatehousev1.AnnotationRotateRequestedAt, r)
		case t.After(active.ActivatesAt) && publishedCount(ks, now) >= MaxPublishedKeys:
			// Every rotation keeps the retired key published for the
			// overlap, so a burst of requests would grow the JWKS without
			// bound (and past what verifiers accept). Revocation still works.
			note(corev1.EventTypeWarning, ReasonRotationIgnored, active.ID, "Ignoring rotation request %s: %d keys are still published; retry once retired keys have left the JWKS.", r, publishedCount(ks, now))
		case t.After(active.ActivatesAt):
			ks.RotationRequestedAt = now
			note(corev1.EventTypeNormal, ReasonRotationRequested, active.ID, "Rotation of key %s requested at %s: the next key is published now and signs after the propagation interval.", active.ID, r)
		}
	}
	if !ks.RotationRequestedAt.IsZero() && !active.ActivatesAt.Before(ks.RotationRequestedAt) {
		ks.RotationRequestedAt = time.Time{}
	}

	// When should the next key sign? On schedule, sooner when requested or
	// when the spec's algorithm or size no longer matches the active key.
	target := active.ActivatesAt.Add(p.Every)
	if !ks.RotationRequestedAt.IsZero() {
		target = minTime(target, ks.RotationRequestedAt)
	}
	if active.Algorithm != p.Algorithm || rsaBits(active.Public) != p.RSABits {
		target = minTime(target, now)
	}

	next := pendingIndex(ks, now)
	if next < 0 && !now.Before(target.Add(-p.Propagation)) {
		key, err := newKey(gen, p, now)
		if err != nil {
			return Plan{}, err
		}
		ks.Keys = append(ks.Keys, key)
		active = &ks.Keys[ai]
		next = len(ks.Keys) - 1
		note(corev1.EventTypeNormal, ReasonKeyCreated, key.ID, "Key %s was generated and is being published; it signs once verifiers have had %s to fetch it.", key.ID, p.Propagation)
	}
	var nextTransition time.Time
	if next >= 0 {
		n := &ks.Keys[next]
		n.Overlap = max(n.Overlap, p.Overlap)
		if n.PublishedAt.IsZero() && published[n.ID] {
			n.PublishedAt = now
		}
		if !n.PublishedAt.IsZero() {
			// Scheduling sets both ends in one write of the Secret, so a
			// reader never sees two active keys or none.
			at := maxTime(n.PublishedAt.Add(p.Propagation), target, now)
			n.ActivatesAt = at
			active.RetiresAt, active.RemoveAt = at, at.Add(active.Overlap)
			if !at.After(now) {
				// Due already (the operator ran late): the hand-over
				// happens now, and the new active key needs its own
				// schedule, so decide once more.
				sub, err := Decide(ks, p, published, now, gen)
				if err != nil {
					return Plan{}, err
				}
				changed, err := differs(in, sub.KeySet)
				if err != nil {
					return Plan{}, err
				}
				return Plan{KeySet: sub.KeySet, Changed: changed, Changes: append(changes, sub.Changes...), NextTransition: sub.NextTransition}, nil
			}
			nextTransition = at
		} else if !active.RetiresAt.IsZero() {
			// A successor that is not yet published cannot be scheduled.
			active.RetiresAt, active.RemoveAt = time.Time{}, time.Time{}
		}
	} else {
		active.RetiresAt, active.RemoveAt = time.Time{}, time.Time{}
		nextTransition = target.Add(-p.Propagation)
	}
	for i := range ks.Keys {
		if rm := ks.Keys[i].RemoveAt; !rm.IsZero() && rm.After(now) && i != ai {
			nextTransition = minNonZero(nextTransition, rm)
		}
	}
	if ks.Keys[ai].Phase(now) != gatehousev1.KeyPhaseActive {
		return Plan{}, errors.New("internal error: no active key after deciding")
	}

	changed, err := differs(in, ks)
	if err != nil {
		return Plan{}, err
	}
	return Plan{KeySet: ks, Changed: changed, Changes: changes, NextTransition: nextTransition}, nil
}

// MaxPublishedKeys bounds the keys a requested rotation may leave in the
// JWKS. Scheduled rotations never come near it (overlap < every).
const MaxPublishedKeys = 8

func publishedCount(ks *KeySet, now time.Time) int {
	n := 0
	for i := range ks.Keys {
		if ks.Keys[i].published(now) {
			n++
		}
	}
	return n
}

// ensureActive makes a key active at now: the published Next key when there
// is one (verifiers already know it), otherwise a new key. A new key signs
// at once: with no active key left (first key, revoked, lost) waiting for
// propagation would leave the issuer unable to sign.
func ensureActive(ks *KeySet, p Policy, published map[string]bool, now time.Time, gen Generator, emergency bool,
	note func(typ, reason, kid, format string, args ...any)) (int, error) {
	for i := range ks.Keys {
		k := &ks.Keys[i]
		if k.Phase(now) == gatehousev1.KeyPhaseNext && k.canSign() && k.Algorithm == p.Algorithm && (!k.PublishedAt.IsZero() || published[k.ID]) {
			if k.PublishedAt.IsZero() {
				k.PublishedAt = now
			}
			k.ActivatesAt, k.RetiresAt, k.RemoveAt = now, time.Time{}, time.Time{}
			note(corev1.EventTypeNormal, ReasonKeyActivated, k.ID, "Key %s, already published, signs from now on.", k.ID)
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
	msg := "Key %s was generated and signs from now on."
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
func pendingIndex(ks *KeySet, now time.Time) int {
	for i := range ks.Keys {
		if k := &ks.Keys[i]; k.Phase(now) == gatehousev1.KeyPhaseNext && k.canSign() {
			return i
		}
	}
	return -1
}

func newKey(gen Generator, p Policy, now time.Time) (Key, error) {
	priv, err := gen(p.Algorithm, p.RSABits)
	if err != nil {
		return Key{}, fmt.Errorf("generating key: %w", err)
	}
	if err := checkAlgorithm(priv, p.Algorithm); err != nil {
		return Key{}, err
	}
	if !isPrivate(priv) {
		return Key{}, errors.New("generator returned a public key")
	}
	// Re-derive kid, alg and use: the kid must be the thumbprint whatever
	// the generator did.
	if err := decorate(priv, p.Algorithm); err != nil {
		return Key{}, err
	}
	pub, err := PublicKey(priv)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: priv.KeyID(), Algorithm: p.Algorithm, Private: priv, Public: pub, CreatedAt: now, Overlap: p.Overlap}, nil
}

// differs reports whether two key sets would be stored differently.
func differs(a, b *KeySet) (bool, error) {
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
func Recover(ks *KeySet, reported []gatehousev1.SigningKeyStatusKey, publishedKeys map[string]jwk.Key, p Policy, now time.Time) (out *KeySet, lost, gone []string) {
	out = ks.Clone()
	for _, r := range reported {
		if out.Key(r.KeyID) != nil || r.Phase == gatehousev1.KeyPhaseRevoked {
			continue
		}
		k := Key{ID: r.KeyID, Lost: true, Overlap: p.Overlap}
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
		if k.Phase(now) == PhaseRemoved {
			continue
		}
		pub, ok := publishedKeys[r.KeyID]
		if !ok {
			gone = append(gone, r.KeyID)
			continue
		}
		alg, _ := pub.Algorithm().(jwa.SignatureAlgorithm)
		if checkAlgorithm(pub, alg) != nil {
			gone = append(gone, r.KeyID)
			continue
		}
		pubKey, err := PublicKey(pub)
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
	slices.SortStableFunc(out.Keys, func(a, b Key) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, lost, gone
}
