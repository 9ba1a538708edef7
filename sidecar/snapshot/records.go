package snapshot

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"math"
	"slices"
	"strings"
	"time"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// The API key records of a snapshot are held in a compact form, because a
// sidecar may hold 100,000 of them and the garbage collector marks every
// pointer of the live heap on every cycle: the index is a map from a
// fixed-size binary key ID to a fixed-size entry, the records are a slice
// of fixed-size structs, and their strings are slices of one shared string.
// None of these hold pointers, so the collector does not look inside them
// at all. Every decision is the one apikeyformat.Record.Check and KeyValid would
// take on the record the entry came from (see records_test.go).

// keyIDBytes is the binary size of a key ID: 16 base32 characters.
const keyIDBytes = 10

type keyID [keyIDBytes]byte

var keyIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// parseKeyID decodes a key ID as apikey writes them (16 lower-case base32
// characters). Anything else is not a key ID: ok is false.
func parseKeyID(s string) (id keyID, ok bool) {
	if !apikeyformat.ValidKeyID(s) {
		return id, false
	}
	var buf [16]byte
	copy(buf[:], s)
	n, err := keyIDEncoding.Decode(id[:], buf[:])
	return id, err == nil && n == keyIDBytes
}

// Times are unix nanoseconds; an absent bound is noBound. Times outside the
// int64 nanosecond range (before 1678, after 2262) are clamped to its ends,
// which changes no decision taken by a clock inside it.
const (
	minNanos = math.MinInt64 + 1
	maxNanos = math.MaxInt64
)

var (
	earliest = time.Unix(0, minNanos)
	latest   = time.Unix(0, maxNanos)
)

func nanos(t time.Time) int64 {
	switch {
	case t.Before(earliest):
		return minNanos
	case t.After(latest):
		return maxNanos
	}
	return t.UnixNano()
}

// optNanos is nanos(*t), or def when t is nil.
func optNanos(t *time.Time, def int64) int64 {
	if t == nil {
		return def
	}
	return nanos(*t)
}

// keyEntry is one indexed key ID. notBefore is math.MinInt64 and notAfter
// math.MaxInt64 when the record leaves them open: then no clock hits them.
// Its fields are ordered to pack it into 64 bytes.
type keyEntry struct {
	notBefore int64
	notAfter  int64
	hash      [sha256.Size]byte
	rec       uint32
	// badHash marks a stored hash that is not hex: no key matches it.
	badHash bool
	id      keyID
}

// strRef is a string of the record table's arena.
type strRef struct{ off, n uint32 }

type recordState uint8

const (
	stateInvalid recordState = iota
	stateActive
	stateRevoked
	stateExpired
)

// recordInfo is what a record says about all of its keys.
type recordInfo struct {
	subject strRef
	// name is "namespace/name": it names the record's rate limiter.
	name      strRef
	expiresAt int64  // maxNanos: never
	scopes    uint32 // index into recordTable.scopes
	rps       int32
	burst     int32
	// keys are the record's entries in recordTable.keys.
	firstKey, nKeys uint32
	state           recordState
}

// scopeSet is one distinct list of scopes; records share them.
type scopeSet struct {
	list   []string
	joined string // the list joined by spaces, as the identity header carries it
}

// recordTable holds the records of one snapshot.
type recordTable struct {
	// index maps a key ID to its entry in keys.
	index  map[keyID]uint32
	recs   []recordInfo
	keys   []keyEntry // in record order
	scopes []scopeSet
	arena  string
}

func (t *recordTable) str(r strRef) string { return t.arena[r.off : r.off+r.n] }

// tableBuilder assembles a recordTable.
type tableBuilder struct {
	t        recordTable
	arena    strings.Builder
	scopeIdx map[string]uint32
}

func newTableBuilder(records int) *tableBuilder {
	return &tableBuilder{
		t: recordTable{
			recs: make([]recordInfo, 0, records),
			keys: make([]keyEntry, 0, records+records/8),
		},
		scopeIdx: map[string]uint32{},
	}
}

func (b *tableBuilder) addString(s string) strRef {
	r := strRef{off: uint32(b.arena.Len()), n: uint32(len(s))} //nolint:gosec // bounded by the sources' sizes, far below 4 GiB
	b.arena.WriteString(s)
	return r
}

func (b *tableBuilder) internScopes(list []string) uint32 {
	k := strings.Join(list, "\x00")
	if i, ok := b.scopeIdx[k]; ok {
		return i
	}
	i := uint32(len(b.t.scopes)) //nolint:gosec // fewer scope sets than records
	b.t.scopes = append(b.t.scopes, scopeSet{list: append([]string(nil), list...), joined: strings.Join(list, " ")})
	b.scopeIdx[k] = i
	return i
}

// addRecord appends rec and returns its index.
func (b *tableBuilder) addRecord(rec *apikeyformat.Record) uint32 {
	i := uint32(len(b.t.recs)) //nolint:gosec // fewer records than 4 billion
	info := recordInfo{
		subject:   b.addString(rec.Subject),
		name:      b.addString(rec.Namespace + "/" + rec.Name),
		scopes:    b.internScopes(rec.Scopes),
		expiresAt: optNanos(rec.ExpiresAt, maxNanos),
		firstKey:  uint32(len(b.t.keys)), //nolint:gosec // as above
	}
	switch rec.State {
	case apikeyformat.StateActive:
		info.state = stateActive
	case apikeyformat.StateRevoked:
		info.state = stateRevoked
	case apikeyformat.StateExpired:
		info.state = stateExpired
	}
	if rl := rec.RateLimit; rl != nil {
		info.rps, info.burst = rl.RequestsPerSecond, rl.Burst
	}
	for _, k := range rec.Keys {
		id, ok := parseKeyID(k.KeyID)
		if !ok {
			// UnmarshalRecord validates key IDs; an entry that is not one
			// could never match a parsed key.
			continue
		}
		e := keyEntry{id: id, notBefore: optNanos(k.NotBefore, math.MinInt64), notAfter: optNanos(k.NotAfter, math.MaxInt64), rec: i}
		if n, err := hex.Decode(e.hash[:], []byte(k.SHA256)); err != nil || n != sha256.Size {
			e.badHash = true
		}
		b.t.keys = append(b.t.keys, e)
		info.nKeys++
	}
	b.t.recs = append(b.t.recs, info)
	return i
}

// copyRecord appends record i of prev, unchanged, and returns its index.
func (b *tableBuilder) copyRecord(prev *recordTable, i uint32) uint32 {
	old := prev.recs[i]
	ni := uint32(len(b.t.recs)) //nolint:gosec // as above
	info := old
	info.subject = b.addString(prev.str(old.subject))
	info.name = b.addString(prev.str(old.name))
	info.scopes = b.internScopes(prev.scopes[old.scopes].list)
	info.firstKey = uint32(len(b.t.keys)) //nolint:gosec // as above
	for _, k := range prev.keys[old.firstKey : old.firstKey+old.nKeys] {
		k.rec = ni
		b.t.keys = append(b.t.keys, k)
	}
	b.t.recs = append(b.t.recs, info)
	return ni
}

func (b *tableBuilder) finish(index map[keyID]uint32) *recordTable {
	// The builder's buffer grew by doubling; keep an exact copy, and
	// exact slices, since the table lives until the next change.
	b.t.arena = strings.Clone(b.arena.String())
	if cap(b.t.keys) > len(b.t.keys)+len(b.t.keys)/16 {
		b.t.keys = slices.Clone(b.t.keys)
	}
	b.t.index = index
	t := b.t
	return &t
}

// KeyRecord is the record of one indexed key ID, as the engine needs it.
// It is a small value; its strings are shared with the snapshot.
type KeyRecord struct {
	t *recordTable
	e *keyEntry
}

func (r KeyRecord) info() *recordInfo { return &r.t.recs[r.e.rec] }

// keySum is sha256.Sum256([]byte(plain)), hashed from a copy on the stack:
// the conversion of a string longer than 32 bytes copies it to the heap,
// and this runs on every check.
func keySum(plain string) [sha256.Size]byte {
	var buf [apikeyformat.Len]byte
	if len(plain) > len(buf) {
		return sha256.Sum256([]byte(plain))
	}
	return sha256.Sum256(buf[:copy(buf[:], plain)])
}

// Check decides whether key k, whose ID r was found under, is valid at
// now: the decision of apikeyformat.Record.Check. The hash comparison is
// constant time.
func (r KeyRecord) Check(k apikeyformat.Key, now time.Time) apikeyformat.Decision {
	sum := keySum(k.Plaintext())
	if subtle.ConstantTimeCompare(sum[:], r.e.hash[:]) != 1 || r.e.badHash {
		return apikeyformat.WrongKey
	}
	info := r.info()
	switch info.state {
	case stateActive:
	case stateRevoked:
		return apikeyformat.Revoked
	case stateExpired:
		return apikeyformat.Expired
	default:
		return apikeyformat.InvalidRecord
	}
	t := nanos(now)
	if t >= info.expiresAt {
		return apikeyformat.Expired
	}
	if t < r.e.notBefore {
		return apikeyformat.NotYetValid
	}
	if t >= r.e.notAfter {
		return apikeyformat.GraceOver
	}
	return apikeyformat.Accepted
}

// KeyValid reports whether the key may still be used at now, for
// revocation checks of tokens minted from it: apikeyformat.Record.KeyValid.
func (r KeyRecord) KeyValid(now time.Time) bool {
	info := r.info()
	t := nanos(now)
	return info.state == stateActive && t < info.expiresAt && t >= r.e.notBefore && t < r.e.notAfter
}

// Subject is the record's subject.
func (r KeyRecord) Subject() string { return r.t.str(r.info().subject) }

// Scopes are the record's scopes, shared: do not modify them.
func (r KeyRecord) Scopes() []string { return r.t.scopes[r.info().scopes].list }

// ScopesJoined is Scopes joined by single spaces.
func (r KeyRecord) ScopesJoined() string { return r.t.scopes[r.info().scopes].joined }

// Name is the record's "namespace/name".
func (r KeyRecord) Name() string { return r.t.str(r.info().name) }

// RateLimit is the record's token bucket (0 requests per second: none).
func (r KeyRecord) RateLimit() (requestsPerSecond, burst int32) {
	info := r.info()
	return info.rps, info.burst
}
