package keyring

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	corev1 "k8s.io/api/core/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

const (
	// SecretType is the type of the Secret holding a SigningKey's private
	// keys.
	SecretType corev1.SecretType = gatehousev1.SigningKeySecretType
	// SecretDataKey is the data key of the key-set document in that Secret.
	SecretDataKey = "keys.json"
	// formatVersion is the version of the key-set document.
	formatVersion = 1
)

// SecretName is the name of the Secret holding the private keys of the
// SigningKey called name: "<name>-signing-keys".
func SecretName(name string) string { return suffixed(name, "-signing-keys") }

// JWKSConfigMapName is the ConfigMap the public JWKS of sk is written to:
// spec.jwksConfigMapName, or "<name>-jwks".
func JWKSConfigMapName(sk *gatehousev1.SigningKey) string {
	if sk.Spec.JWKSConfigMapName != "" {
		return sk.Spec.JWKSConfigMapName
	}
	return suffixed(sk.Name, "-jwks")
}

// suffixed appends suffix to name; a name too long for an object name is
// shortened and made unique with a hash of the full name.
func suffixed(name, suffix string) string {
	const maxLen = 253
	if len(name)+len(suffix) <= maxLen {
		return name + suffix
	}
	sum := sha256.Sum256([]byte(name))
	return name[:maxLen-len(suffix)-9] + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// ErrNoActiveKey is returned when no key may sign at the given time.
var ErrNoActiveKey = errors.New("no active signing key")

// PhaseRemoved is the phase of a key past its removal time; such keys are
// dropped from the key set by the next Decide.
const PhaseRemoved gatehousev1.KeyPhase = "Removed"

// Key is one key of a SigningKey and its schedule. Unset times are zero.
//
// The phase of a key is a function of these times (see Phase), never a
// stored field, so that the token endpoint and the controller agree on
// which key signs at any instant even when the controller runs late.
type Key struct {
	// ID is the kid: the RFC 7638 thumbprint of the public key.
	ID string
	// Algorithm is the key's JWS algorithm.
	Algorithm jwa.SignatureAlgorithm
	// Private is the private JWK (kid, alg, use set); nil once the key
	// was revoked or its private part was lost.
	Private jwk.Key
	// Public is the public JWK (kid, alg, use set); nil once revoked.
	Public jwk.Key

	// CreatedAt is when the key was generated.
	CreatedAt time.Time
	// PublishedAt is when the key was first seen in the JWKS ConfigMap.
	// A key is scheduled for activation only once published.
	PublishedAt time.Time
	// ActivatesAt is when the key starts signing; zero until scheduled.
	ActivatesAt time.Time
	// RetiresAt is when the key stops signing; zero until its successor
	// is scheduled. It always equals the successor's ActivatesAt, which
	// is what keeps exactly one key active at every instant.
	RetiresAt time.Time
	// RemoveAt is when the key leaves the JWKS (for a revoked key: when
	// its tombstone leaves the status).
	RemoveAt time.Time
	// RevokedAt is when spec.revokedKeyIDs withdrew the key.
	RevokedAt time.Time
	// Overlap is the longest token lifetime allowed while the key signed:
	// the largest spec.rotation.overlap seen while it was Next or Active.
	// The key stays published for Overlap after it retires.
	Overlap time.Duration
	// Lost marks a key whose private part vanished (the Secret was
	// deleted or edited); its public part was recovered from the JWKS.
	Lost bool
}

// Phase returns the key's phase at t.
func (k *Key) Phase(t time.Time) gatehousev1.KeyPhase {
	switch {
	case !k.RevokedAt.IsZero():
		return gatehousev1.KeyPhaseRevoked
	case !k.RemoveAt.IsZero() && !t.Before(k.RemoveAt):
		return PhaseRemoved
	case k.ActivatesAt.IsZero() || t.Before(k.ActivatesAt):
		return gatehousev1.KeyPhaseNext
	case k.RetiresAt.IsZero() || t.Before(k.RetiresAt):
		return gatehousev1.KeyPhaseActive
	default:
		return gatehousev1.KeyPhaseRetired
	}
}

// Published reports whether the key belongs in the JWKS at t.
func (k *Key) Published(t time.Time) bool {
	switch k.Phase(t) {
	case gatehousev1.KeyPhaseNext, gatehousev1.KeyPhaseActive, gatehousev1.KeyPhaseRetired:
		return k.Public != nil
	}
	return false
}

// CanSign reports whether the key holds a usable private part.
func (k *Key) CanSign() bool {
	return k.Private != nil && !k.Lost && k.RevokedAt.IsZero()
}

// KeySet is the source of truth of one SigningKey: every key it still
// holds and the rotation bookkeeping. It is stored, private parts and all,
// in the operator-only Secret.
type KeySet struct {
	// Keys, oldest first.
	Keys []Key
	// LastRotationRequest is the last rotate-requested-at annotation value
	// acted on, so that each value causes one rotation.
	LastRotationRequest string
	// RotationRequestedAt is when a requested rotation started; zero when
	// none is pending. Cleared once a key activated at or after it.
	RotationRequestedAt time.Time
	// Invalid lists the entries of the stored document that could not be
	// used (by kid when readable), for the controller to report.
	Invalid []string
}

// Clone returns a copy whose Keys slice may be changed freely. JWKs are
// shared: they are never mutated once made.
func (ks *KeySet) Clone() *KeySet {
	if ks == nil {
		return &KeySet{}
	}
	c := *ks
	c.Keys = slices.Clone(ks.Keys)
	c.Invalid = slices.Clone(ks.Invalid)
	return &c
}

// Key returns the key with kid id, or nil.
func (ks *KeySet) Key(id string) *Key {
	for i := range ks.Keys {
		if ks.Keys[i].ID == id {
			return &ks.Keys[i]
		}
	}
	return nil
}

// ActiveIndex returns the index of the key that signs at t, or -1. Should
// a corrupted set hold several keys whose intervals include t, the most
// recently activated one wins (Decide retires the others).
func (ks *KeySet) ActiveIndex(t time.Time) int {
	best := -1
	for i := range ks.Keys {
		k := &ks.Keys[i]
		if k.Phase(t) != gatehousev1.KeyPhaseActive || !k.CanSign() {
			continue
		}
		if best < 0 || k.ActivatesAt.After(ks.Keys[best].ActivatesAt) {
			best = i
		}
	}
	return best
}

// Active is the key that signs at a given time, for the token endpoint.
type Active struct {
	// Key is the private JWK with kid and alg set. Sign with the
	// algorithm of the key, jwa.SignatureAlgorithm(Key.Algorithm()).
	Key jwk.Key
	// RetiresAt is when the key stops signing; zero if not yet scheduled
	// (it then signs for at least another propagation interval).
	RetiresAt time.Time
	// MaxTokenLifetime is the longest lifetime of a token signed now: the
	// key stays published for this long after it retires, so a token
	// that lives no longer verifies until it expires.
	MaxTokenLifetime time.Duration
}

// ActiveKey returns the key whose phase is Active at now: never a Next,
// Retired, revoked or lost key.
func (ks *KeySet) ActiveKey(now time.Time) (Active, error) {
	if ks == nil {
		return Active{}, ErrNoActiveKey
	}
	i := ks.ActiveIndex(now)
	if i < 0 {
		return Active{}, ErrNoActiveKey
	}
	k := &ks.Keys[i]
	lifetime := k.Overlap
	if !k.RemoveAt.IsZero() {
		lifetime = min(lifetime, k.RemoveAt.Sub(now))
	}
	return Active{Key: k.Private, RetiresAt: k.RetiresAt, MaxTokenLifetime: lifetime}, nil
}

// ActiveSigningKey returns the private JWK (kid and alg set) that signs at
// now, or ErrNoActiveKey.
func (ks *KeySet) ActiveSigningKey(now time.Time) (jwk.Key, error) {
	a, err := ks.ActiveKey(now)
	return a.Key, err
}

// JWKS returns the public JWKS document of the keys published at now
// (Next, Active and Retired; never revoked or removed ones), each with
// only kid, alg, use and the public members, in a stable order so that
// equal sets give equal bytes.
func (ks *KeySet) JWKS(now time.Time) ([]byte, error) {
	set := jwk.NewSet()
	for i := range ks.Keys {
		k := &ks.Keys[i]
		if !k.Published(now) {
			continue
		}
		pub, err := PublicKey(k.Public)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k.ID, err)
		}
		if err := set.AddKey(pub); err != nil {
			return nil, fmt.Errorf("adding key %s: %w", k.ID, err)
		}
	}
	out, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encoding jwks: %w", err)
	}
	return out, nil
}

// PublishedKeys parses a JWKS document (as read back from the ConfigMap)
// and returns its keys by kid, keeping only those whose kid is their
// thumbprint: a hand-edited entry never counts as ours.
func PublishedKeys(doc []byte) map[string]jwk.Key {
	out := map[string]jwk.Key{}
	set, err := jwk.Parse(doc)
	if err != nil {
		return out
	}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if IsPrivate(k) {
			continue
		}
		if tp, err := Thumbprint(k); err == nil && tp == k.KeyID() {
			out[tp] = k
		}
	}
	return out
}

// wire is the stored form of a KeySet (Secret data key SecretDataKey).
type wire struct {
	Version             int        `json:"version"`
	LastRotationRequest string     `json:"lastRotationRequest,omitempty"`
	RotationRequestedAt *time.Time `json:"rotationRequestedAt,omitempty"`
	Keys                []wireKey  `json:"keys"`
}

type wireKey struct {
	KeyID       string          `json:"kid"`
	Algorithm   string          `json:"alg"`
	CreatedAt   *time.Time      `json:"createdAt,omitempty"`
	PublishedAt *time.Time      `json:"publishedAt,omitempty"`
	ActivatesAt *time.Time      `json:"activatesAt,omitempty"`
	RetiresAt   *time.Time      `json:"retiresAt,omitempty"`
	RemoveAt    *time.Time      `json:"removeAt,omitempty"`
	RevokedAt   *time.Time      `json:"revokedAt,omitempty"`
	Overlap     string          `json:"overlap,omitempty"`
	Lost        bool            `json:"lost,omitempty"`
	JWK         json.RawMessage `json:"jwk,omitempty"`
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func tv(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// Marshal encodes the key set for the Secret. The output holds private
// keys: it must go nowhere but that Secret.
func (ks *KeySet) Marshal() ([]byte, error) {
	w := wire{Version: formatVersion, LastRotationRequest: ks.LastRotationRequest, RotationRequestedAt: tp(ks.RotationRequestedAt), Keys: []wireKey{}}
	for i := range ks.Keys {
		k := &ks.Keys[i]
		wk := wireKey{
			KeyID: k.ID, Algorithm: k.Algorithm.String(),
			CreatedAt: tp(k.CreatedAt), PublishedAt: tp(k.PublishedAt), ActivatesAt: tp(k.ActivatesAt),
			RetiresAt: tp(k.RetiresAt), RemoveAt: tp(k.RemoveAt), RevokedAt: tp(k.RevokedAt),
			Lost: k.Lost,
		}
		if k.Overlap > 0 {
			wk.Overlap = k.Overlap.String()
		}
		stored := k.Private
		if stored == nil && k.RevokedAt.IsZero() {
			stored = k.Public
		}
		if stored != nil {
			b, err := json.Marshal(stored)
			if err != nil {
				// jwx errors never include key material.
				return nil, fmt.Errorf("encoding key %s: %w", k.ID, err)
			}
			wk.JWK = b
		}
		w.Keys = append(w.Keys, wk)
	}
	return json.Marshal(w)
}

// ParseKeySet decodes a stored key set. Entries that cannot be used (a
// malformed or mismatched JWK, a kid that is not the key's thumbprint, an
// algorithm that does not fit the key, a missing private part) are left
// out and listed in Invalid; the error is set only when the document as a
// whole is unusable. Error messages never quote the document.
func ParseKeySet(data []byte) (*KeySet, error) {
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, errors.New("key set document is not valid json")
	}
	if w.Version != formatVersion {
		return nil, fmt.Errorf("unsupported key set version %d", w.Version)
	}
	ks := &KeySet{LastRotationRequest: w.LastRotationRequest, RotationRequestedAt: tv(w.RotationRequestedAt)}
	seen := map[string]bool{}
	for i, wk := range w.Keys {
		k, err := parseWireKey(wk)
		if err != nil || seen[wk.KeyID] {
			name := wk.KeyID
			if name == "" {
				name = fmt.Sprintf("#%d", i)
			}
			ks.Invalid = append(ks.Invalid, name)
			continue
		}
		seen[k.ID] = true
		ks.Keys = append(ks.Keys, k)
	}
	return ks, nil
}

func parseWireKey(wk wireKey) (Key, error) {
	k := Key{
		ID: wk.KeyID, Algorithm: jwa.SignatureAlgorithm(wk.Algorithm),
		CreatedAt: tv(wk.CreatedAt), PublishedAt: tv(wk.PublishedAt), ActivatesAt: tv(wk.ActivatesAt),
		RetiresAt: tv(wk.RetiresAt), RemoveAt: tv(wk.RemoveAt), RevokedAt: tv(wk.RevokedAt),
		Lost: wk.Lost,
	}
	if k.ID == "" {
		return k, errors.New("no kid")
	}
	if wk.Overlap != "" {
		d, err := time.ParseDuration(wk.Overlap)
		if err != nil || d < 0 {
			return k, errors.New("bad overlap")
		}
		k.Overlap = d
	}
	if !k.RevokedAt.IsZero() {
		// A tombstone: the key material is gone on purpose.
		return k, nil
	}
	if len(wk.JWK) == 0 {
		return k, errors.New("no jwk")
	}
	key, err := jwk.ParseKey(wk.JWK)
	if err != nil {
		return k, errors.New("malformed jwk")
	}
	if kid, err := Thumbprint(key); err != nil || kid != k.ID || key.KeyID() != k.ID {
		return k, errors.New("kid is not the key thumbprint")
	}
	if a, ok := key.Algorithm().(jwa.SignatureAlgorithm); !ok || a != k.Algorithm {
		return k, errors.New("jwk alg differs from the entry")
	}
	if err := CheckAlgorithm(key, k.Algorithm); err != nil {
		return k, err
	}
	if k.Lost {
		if IsPrivate(key) {
			return k, errors.New("lost key holds private material")
		}
		k.Public = key
		return k, nil
	}
	if !IsPrivate(key) {
		return k, errors.New("missing private part")
	}
	k.Private = key
	if k.Public, err = PublicKey(key); err != nil {
		return k, err
	}
	return k, nil
}

// LoadKeySet reads the key set from a SigningKey's private Secret. It
// checks the Secret's type so that a user's look-alike Secret is refused.
func LoadKeySet(secret *corev1.Secret) (*KeySet, error) {
	if secret == nil {
		return nil, errors.New("no signing key secret")
	}
	if secret.Type != SecretType {
		return nil, fmt.Errorf("secret %s has type %q, want %q", secret.Name, secret.Type, SecretType)
	}
	data, ok := secret.Data[SecretDataKey]
	if !ok {
		return nil, fmt.Errorf("secret %s has no %s", secret.Name, SecretDataKey)
	}
	ks, err := ParseKeySet(data)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", secret.Name, err)
	}
	return ks, nil
}

// Defaults of spec.rotation, matching the CRD defaults, for objects
// written before those existed or built in code.
const (
	DefaultEvery       = 720 * time.Hour
	DefaultOverlap     = time.Hour
	DefaultPropagation = 5 * time.Minute
)
