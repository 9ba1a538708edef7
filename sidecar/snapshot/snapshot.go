// Package snapshot compiles what a sidecar knows (API key hash records, JWKS
// documents and the AuthPolicy that selects its pod) into one immutable value.
//
// The request path reads a *Snapshot through Store without locks; a new
// Snapshot is built off the request path on every change of the inputs and
// swapped in atomically, so a check never blocks on a reload and never sees
// half of a state.
package snapshot

import (
	"math"
	"sync/atomic"
	"time"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/canonical"
)

// Snapshot is a compiled, immutable state. Never modify one after Build.
type Snapshot struct {
	// Generation counts builds; it only grows.
	Generation uint64
	// BuiltAt is when the snapshot was built (by the builder's clock).
	BuiltAt time.Time
	// Policy is the AuthPolicy that applies to this pod, nil when none
	// selects it (every request is then denied).
	Policy *Policy
	// Problems are non-fatal defects found while building (an undecodable
	// record, a JWKS that is missing), each a sentence without secrets. The
	// affected credentials are denied; the rest of the state is served.
	Problems []string

	// records is the base table; overlay, when not empty, holds the key
	// IDs whose answer differs from the base's since it was built, and
	// tables the changed records it refers to (Builder.Apply, delta.go).
	// All are immutable once published, and hold no pointer per key.
	records *recordTable
	overlay *overlay
	tables  []*recordTable
	// keys is the number of key IDs indexed.
	keys int
}

// keyRef is one key entry: entry i of the base (tab 0) or of table tab-1
// of a snapshot's tables. Tab noTable says the key ID is not indexed
// (removed, or in conflict).
type keyRef struct{ tab, i uint32 }

const noTable = math.MaxUint32

// table is the record table a keyRef refers to.
func (s *Snapshot) table(r keyRef) *recordTable {
	if r.tab == 0 {
		return s.records
	}
	return s.tables[r.tab-1]
}

// Record returns the hash record listing keyID, if any.
func (s *Snapshot) Record(keyID string) (KeyRecord, bool) {
	id, ok := parseKeyID(keyID)
	if !ok {
		return KeyRecord{}, false
	}
	if s.overlay != nil {
		if r, ok := s.overlay.get(id); ok {
			if r.tab == noTable {
				return KeyRecord{}, false
			}
			t := s.table(r)
			return KeyRecord{t: t, e: &t.keys[r.i]}, true
		}
	}
	if s.records == nil {
		return KeyRecord{}, false
	}
	i, ok := s.records.index[id]
	if !ok {
		return KeyRecord{}, false
	}
	return KeyRecord{t: s.records, e: &s.records.keys[i]}, true
}

// KeyCount is the number of API key IDs indexed.
func (s *Snapshot) KeyCount() int { return s.keys }

// Policy is a compiled AuthPolicy.
type Policy struct {
	Namespace string
	Name      string
	// APIKeysDisabled stops API keys from being accepted.
	APIKeysDisabled bool
	// APIKeyHeader is the lower-case name of the header carrying API keys.
	APIKeyHeader string
	// Issuers are the trusted JWT issuers, in policy order.
	Issuers []*Issuer
	// PathOptions say how request paths are canonicalised before matching
	// (spec.pathNormalization).
	PathOptions canonical.Options
	// Rules decide requests; the first match wins.
	Rules []*Rule

	byIss map[string]*Issuer
}

// IssuerFor returns the trusted issuer whose expected `iss` is iss.
func (p *Policy) IssuerFor(iss string) (*Issuer, bool) {
	i, ok := p.byIss[iss]
	return i, ok
}

// Issuer is a compiled trusted JWT issuer.
type Issuer struct {
	// Name is the entry's name in the policy.
	Name string
	// Issuer is the expected `iss` claim.
	Issuer string
	// Audiences are the accepted `aud` values; empty: not checked.
	Audiences []string
	// ClockSkew is the leeway for exp, nbf and iat.
	ClockSkew time.Duration
	// Keys holds the verification keys.
	Keys KeySet
	// Fingerprint identifies the verification settings (issuer, audiences,
	// skew): a cached verification result is reused only while the
	// fingerprint and the key it was verified with are unchanged.
	Fingerprint string
}

// Rule is a compiled AuthPolicy rule.
type Rule struct {
	Name  string
	Hosts []string
	// Paths are canonical patterns (a trailing "*" is a prefix match).
	Paths []string
	// Methods are upper case.
	Methods []string
	Action  gatehousev1.RuleAction
	// AcceptAPIKey and AcceptJWT say which credential types the rule takes.
	AcceptAPIKey bool
	AcceptJWT    bool
	Scopes       []string
	Claims       []gatehousev1.ClaimRequirement
}

// Store holds the current snapshot. The zero value holds none: the sidecar
// is not ready and denies every request.
type Store struct {
	current atomic.Pointer[Snapshot]
}

// Load returns the current snapshot, or nil before the first one.
func (s *Store) Load() *Snapshot { return s.current.Load() }

// Swap installs a new snapshot.
func (s *Store) Swap(sn *Snapshot) { s.current.Store(sn) }

// EachRecordName calls f with the "namespace/name" of every record that
// has at least one indexed key ID.
func (s *Snapshot) EachRecordName(f func(string)) {
	if t := s.records; t != nil {
		for i := range t.recs {
			for ki := t.recs[i].firstKey; ki < t.recs[i].firstKey+t.recs[i].nKeys; ki++ {
				if s.indexes(ki) {
					f(t.str(t.recs[i].name))
					break
				}
			}
		}
	}
	// A changed record is named once, however many of its keys are indexed.
	seen := map[keyRef]bool{}
	s.overlay.each(func(_ keyID, r keyRef) {
		if r.tab == noTable || r.tab == 0 {
			return // the base's records were named above
		}
		t := s.table(r)
		if rec := (keyRef{r.tab, t.keys[r.i].rec}); !seen[rec] {
			seen[rec] = true
			f(t.str(t.recs[rec.i].name))
		}
	})
}

// indexes says whether entry i of the base is the one its key ID finds.
func (s *Snapshot) indexes(i uint32) bool {
	id := s.records.keys[i].id
	if o, ok := s.overlay.get(id); ok {
		return o == keyRef{0, i}
	}
	bi, ok := s.records.index[id]
	return ok && bi == i
}
