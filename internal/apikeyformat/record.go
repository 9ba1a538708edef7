package apikeyformat

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// RecordVersion is the version of the record format written by this code.
const RecordVersion = 1

// State is the state of an API key as recorded for validators.
type State string

// Key states. Validators accept only StateActive (within its windows).
const (
	StateActive  State = "Active"
	StateRevoked State = "Revoked"
	StateExpired State = "Expired"
)

// Record is what a validator needs of one APIKey, and nothing secret:
// RecordOf compiles it from the APIKey's status (hashes, windows, state,
// written by the operator alone) and spec (everything else, written by the
// APIKey's author). Validators (sidecar, token endpoint) hold records, never
// read them from ConfigMaps.
//
// Previous versions of the operator wrote records as JSON under the data key
// "record.json" of ConfigMaps labelled auth.gatehouse.dev/record=apikey. The
// only reader of that form left is the one-time migration
// (UnmarshalRecord), which takes the hashes over into status.
//
// Example:
//
//	{
//	  "version": 1,
//	  "name": "billing",
//	  "namespace": "shop",
//	  "subject": "service:billing",
//	  "scopes": ["orders:read"],
//	  "state": "Active",
//	  "expiresAt": "2027-01-01T00:00:00Z",
//	  "rateLimit": {"requestsPerSecond": 100, "burst": 200},
//	  "tokenExchange": {"signingKeyName": "platform", "audiences": ["orders"], "maxLifetimeSeconds": 900},
//	  "keys": [
//	    {"keyID": "abcdefghijklmnop", "sha256": "<64 hex>", "issuedAt": "2026-11-26T10:00:00Z"},
//	    {"keyID": "qrstuvwxyz234567", "sha256": "<64 hex>", "issuedAt": "2026-10-27T10:00:00Z", "notAfter": "2026-11-27T10:00:00Z"}
//	  ]
//	}
//
// keys[0] is the current key; later entries are previous keys still inside
// their rotation grace period (notAfter). A key is valid when the record's
// state is Active, now is before expiresAt (if set), and now is within the
// key's [notBefore, notAfter) window (an absent bound is open).
//
// The operator sets notAfter on previous keys only and never sets notBefore:
// a key cannot be presented before it exists, so a lower bound would add no
// security and would refuse a brand-new key at a sidecar whose clock runs a
// little behind the operator's. issuedAt is informational (audit, status)
// and plays no part in Check.
type Record struct {
	Version       int                  `json:"version"`
	Name          string               `json:"name"`
	Namespace     string               `json:"namespace"`
	Subject       string               `json:"subject"`
	Scopes        []string             `json:"scopes,omitempty"`
	State         State                `json:"state"`
	ExpiresAt     *time.Time           `json:"expiresAt,omitempty"`
	RateLimit     *RecordRateLimit     `json:"rateLimit,omitempty"`
	TokenExchange *RecordTokenExchange `json:"tokenExchange,omitempty"`
	Keys          []RecordKey          `json:"keys"`
}

// RecordKey is one hashed key of a record.
type RecordKey struct {
	KeyID     string     `json:"keyID"`
	SHA256    string     `json:"sha256"`
	NotBefore *time.Time `json:"notBefore,omitempty"`
	NotAfter  *time.Time `json:"notAfter,omitempty"`
	// IssuedAt is when the key was generated (or first recorded, for a
	// caller-supplied hash). Informational: Check ignores it.
	IssuedAt *time.Time `json:"issuedAt,omitempty"`
}

// RecordRateLimit is a token bucket: requestsPerSecond sustained, burst at once.
type RecordRateLimit struct {
	RequestsPerSecond int32 `json:"requestsPerSecond"`
	Burst             int32 `json:"burst"`
}

// RecordTokenExchange is what the token endpoint may issue for this key.
type RecordTokenExchange struct {
	SigningKeyName     string   `json:"signingKeyName"`
	Audiences          []string `json:"audiences,omitempty"`
	MaxLifetimeSeconds int64    `json:"maxLifetimeSeconds"`
}

// Decision is why a key was accepted or refused by Record.Check.
type Decision string

// Check outcomes. They are static strings, safe for logs and metric labels.
const (
	Accepted      Decision = "accepted"
	UnknownKey    Decision = "unknown_key"
	WrongKey      Decision = "wrong_key"
	Revoked       Decision = "revoked"
	Expired       Decision = "expired"
	NotYetValid   Decision = "not_yet_valid"
	GraceOver     Decision = "grace_period_over"
	InvalidRecord Decision = "invalid_record"
)

// Check decides whether key k, whose ID this record lists, is valid at now.
// The hash comparison is constant time.
func (r *Record) Check(k Key, now time.Time) Decision {
	var rk *RecordKey
	for i := range r.Keys {
		if r.Keys[i].KeyID == k.ID() {
			rk = &r.Keys[i]
			break
		}
	}
	if rk == nil {
		return UnknownKey
	}
	if !HashMatches(k, rk.SHA256) {
		return WrongKey
	}
	switch r.State {
	case StateActive:
	case StateRevoked:
		return Revoked
	case StateExpired:
		return Expired
	default:
		return InvalidRecord
	}
	if r.ExpiresAt != nil && !now.Before(*r.ExpiresAt) {
		return Expired
	}
	if rk.NotBefore != nil && now.Before(*rk.NotBefore) {
		return NotYetValid
	}
	if rk.NotAfter != nil && !now.Before(*rk.NotAfter) {
		return GraceOver
	}
	return Accepted
}

// KeyValid reports whether the key with this ID may still be used at now,
// for revocation checks of tokens minted from it (no hash to compare).
func (r *Record) KeyValid(keyID string, now time.Time) bool {
	if r.State != StateActive || (r.ExpiresAt != nil && !now.Before(*r.ExpiresAt)) {
		return false
	}
	for _, rk := range r.Keys {
		if rk.KeyID != keyID {
			continue
		}
		return (rk.NotBefore == nil || !now.Before(*rk.NotBefore)) && (rk.NotAfter == nil || now.Before(*rk.NotAfter))
	}
	return false
}

// Marshal encodes a record.
func (r *Record) Marshal() ([]byte, error) { return json.Marshal(r) }

// UnmarshalRecord decodes and validates a record in the JSON form previous
// versions of the operator wrote to ConfigMaps (for the migration only).
func UnmarshalRecord(data []byte) (*Record, error) {
	r := &Record{}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("decoding api key record: %w", err)
	}
	if r.Version != RecordVersion {
		return nil, fmt.Errorf("unsupported api key record version %d", r.Version)
	}
	if len(r.Keys) == 0 {
		return nil, errors.New("api key record has no keys")
	}
	for _, k := range r.Keys {
		if !ValidKeyID(k.KeyID) || len(k.SHA256) != 64 {
			return nil, errors.New("api key record has a malformed key entry")
		}
	}
	return r, nil
}
