package snapshot

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// A source that learns what changed (the xDS source) hands the builder
// deltas, and Apply derives the next snapshot from the last one in time
// proportional to the change, not to the number of keys:
//
//   - the base is a record table as Build makes it (pointer-free, its
//     records sorted by APIKey name, so that a name is found by binary
//     search without an index of names);
//   - the overlay maps every key ID whose answer differs from the base's
//     to its entry (a changed record's, each compiled into a table of its
//     own, or the base's) or to nothing (removed, or in conflict). A
//     lookup asks the overlay, then the base. Entries name their table by
//     number, so that the overlay holds no pointers either;
//   - the tables of changed records are appended to a slice that
//     snapshots share: a snapshot reads only the tables it was made with,
//     and the builder never writes those again;
//   - the overlay is persistent (overlay.go): a snapshot's copy costs a
//     bucket array and the buckets the change touched. Once the overlay
//     outgrows its bound, Compact folds it into a new base. With the bound
//     a share of the keys, that O(keys) work is amortised to O(1) per
//     change, and readers never wait for it: they hold immutable
//     snapshots.
//
// A key ID listed more than once (by two APIKeys, or twice by one) is not
// served, as in Build: the builder remembers every listing of such IDs,
// so that the last listing left serves the ID again.

// Delta is a change to the inputs of the last snapshot Apply made.
type Delta struct {
	// Records are APIKeys added or changed, compiled as by
	// apikeyformat.RecordOf: each replaces the APIKey of its name (the
	// last one wins). Records of another namespace are ignored.
	Records []*apikeyformat.Record
	// Removed are the names of APIKeys removed, applied before Records.
	Removed []string
	// Policy, when set, holds every AuthPolicy, SigningKey and JWKS
	// ConfigMap, from which the policy is compiled again; nil leaves the
	// policy as it was. No policy change rebuilds the record table.
	Policy *PolicyInputs
}

// Overlay bounds: Compact folds the overlay into the base once it holds
// more than max(minOverlay, keys/overlayShare) key IDs or names.
const (
	minOverlay   = 1024
	overlayShare = 16
)

// liveRecords is the state Apply changes. Only the goroutine that owns the
// Builder touches it; snapshots get immutable copies of what they read.
type liveRecords struct {
	// base holds one record per name, sorted by APIKey name.
	base *recordTable
	// tables are the tables of the records changed since base was built,
	// appended to; a keyRef's tab n is tables[n-1].
	tables []*recordTable
	// changed holds the names changed since base was built: the number of
	// the table of the name's current record, noTable when the APIKey was
	// removed.
	changed map[string]uint32
	// overlay maps every key ID whose answer differs from base.index's.
	overlay *overlayWriter
	// conflicts holds every listing of the key IDs listed more than once.
	conflicts map[keyID][]listing
	// keys is the number of key IDs indexed.
	keys int
	// minOverlay is the overlay's smallest bound (tests lower it).
	minOverlay int

	recordProblems []string
	problemsStale  bool
	policy         *Policy
	policyProblems []string
}

// listing is one place a key ID is listed: an APIKey and the position of
// the key among its record's keys.
type listing struct {
	name string
	pos  uint32
}

func newLiveRecords(minBound int) *liveRecords {
	return &liveRecords{
		base: &recordTable{}, changed: map[string]uint32{}, overlay: newOverlayWriter(), conflicts: map[keyID][]listing{},
		minOverlay: cmp.Or(minBound, minOverlay),
	}
}

// Apply derives a snapshot from the last one Apply made (from nothing the
// first time) and d. A source uses either Build or Apply: a Build starts
// Apply's state afresh. Small deltas cost O(change) and a copy of the
// overlay; a delta larger than the overlay's bound (the first, complete
// state) rebuilds the record table from the last one and the delta.
func (b *Builder) Apply(d Delta) *Snapshot {
	if b.live == nil {
		b.live = newLiveRecords(b.minOverlay)
		b.prev, b.memo = nil, nil // Build's memo: Apply has no use for it
	}
	l := b.live
	records := b.inNamespaceRecords(d.Records)
	if n := len(records) + len(d.Removed); n > l.bound() || len(l.changed)+n > 2*l.bound() {
		l.rebuild(d.Removed, records)
	} else {
		for _, name := range d.Removed {
			l.remove(name)
		}
		for _, r := range records {
			l.remove(r.Name)
			l.add(r)
		}
	}
	if d.Policy != nil {
		var problems []string
		l.policy = b.policyOf(*d.Policy, func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) })
		l.policyProblems = problems
	}
	return b.liveSnapshot()
}

// Compact folds the overlay into a new base once it has outgrown its
// bound, and returns the snapshot of the same state on the new base; nil
// when there was nothing to do. Call it after installing Apply's snapshot,
// so that the change it carried is not held up by the O(keys) work.
func (b *Builder) Compact() *Snapshot {
	l := b.live
	if l == nil || max(len(l.changed), l.overlay.o.len()) <= l.bound() {
		return nil
	}
	l.rebuild(nil, nil)
	return b.liveSnapshot()
}

func (b *Builder) inNamespaceRecords(records []*apikeyformat.Record) []*apikeyformat.Record {
	if !slices.ContainsFunc(records, func(r *apikeyformat.Record) bool { return !b.inNamespace(r.Namespace) }) {
		return records
	}
	return slices.DeleteFunc(slices.Clone(records), func(r *apikeyformat.Record) bool { return !b.inNamespace(r.Namespace) })
}

// liveSnapshot is a snapshot of the live state, with its own copy of the
// overlay.
func (b *Builder) liveSnapshot() *Snapshot {
	l := b.live
	b.gen++
	s := &Snapshot{Generation: b.gen, BuiltAt: b.opts.Clock(), Policy: l.policy, records: l.base, keys: l.keys,
		tables: l.tables[:len(l.tables):len(l.tables)], overlay: l.overlay.publish()}
	if l.problemsStale {
		l.recordProblems, l.problemsStale = l.conflictProblems(), false
	}
	if n := len(l.recordProblems) + len(l.policyProblems); n > 0 {
		s.Problems = append(append(make([]string, 0, n), l.recordProblems...), l.policyProblems...)
	}
	return s
}

func (l *liveRecords) bound() int { return max(l.minOverlay, l.keys/overlayShare) }

// apiKeyName is the APIKey name of record i: its "namespace/name" names
// the rate limiter, and neither part holds a "/".
func (t *recordTable) apiKeyName(i uint32) string {
	_, name, _ := strings.Cut(t.str(t.recs[i].name), "/")
	return name
}

// baseRecord finds the base's record of an APIKey name.
func (l *liveRecords) baseRecord(name string) (uint32, bool) {
	t := l.base
	i := sort.Search(len(t.recs), func(i int) bool { return t.apiKeyName(uint32(i)) >= name }) //nolint:gosec // i < len(recs) < 2^32
	return uint32(i), i < len(t.recs) && t.apiKeyName(uint32(i)) == name                       //nolint:gosec // as above
}

// table is the table of a keyRef.
func (l *liveRecords) table(tab uint32) *recordTable {
	if tab == 0 {
		return l.base
	}
	return l.tables[tab-1]
}

// current finds the current record of an APIKey name: record rec of
// table tab.
func (l *liveRecords) current(name string) (rec keyRef, ok bool) {
	if tab, ok := l.changed[name]; ok {
		return keyRef{tab, 0}, tab != noTable
	}
	i, ok := l.baseRecord(name)
	return keyRef{0, i}, ok
}

// remove forgets the APIKey of a name.
func (l *liveRecords) remove(name string) {
	rec, ok := l.current(name)
	if !ok {
		return
	}
	t := l.table(rec.tab)
	info := t.recs[rec.i]
	for p := range info.nKeys {
		l.unlist(t.keys[info.firstKey+p].id, listing{name, p})
	}
	if _, inBase := l.baseRecord(name); inBase {
		l.changed[name] = noTable
	} else {
		delete(l.changed, name)
	}
}

// add compiles rec into a table of its own and lists its keys. Its name
// has no current record.
func (l *liveRecords) add(rec *apikeyformat.Record) {
	tb := newTableBuilder(1)
	tb.addRecord(rec)
	t := tb.finish(nil)
	l.tables = append(l.tables, t)
	tab := uint32(len(l.tables)) //nolint:gosec // bounded by the overlay's bound
	l.changed[rec.Name] = tab
	for p := range t.recs[0].nKeys {
		l.list(t.keys[p].id, listing{rec.Name, p}, keyRef{tab, p})
	}
}

// list adds a listing of id, whose entry is ref: the ID is served from it
// if nothing else lists the ID, and by nobody otherwise.
func (l *liveRecords) list(id keyID, at listing, ref keyRef) {
	if all, ok := l.conflicts[id]; ok {
		l.conflicts[id] = append(all, at)
		l.problemsStale = true
		return
	}
	if cur, ok := l.served(id); ok {
		l.conflicts[id] = []listing{l.table(cur.tab).listingOf(cur.i), at}
		l.unserve(id)
		l.keys--
		l.problemsStale = true
		return
	}
	l.serve(id, ref)
	l.keys++
}

// unlist removes a listing of id, whose record is still current: the ID
// is served from the last listing left, if one is.
func (l *liveRecords) unlist(id keyID, at listing) {
	all, ok := l.conflicts[id]
	if !ok {
		l.unserve(id)
		l.keys--
		return
	}
	l.problemsStale = true
	if i := slices.Index(all, at); i >= 0 {
		all = slices.Delete(all, i, i+1)
	}
	if len(all) > 1 {
		l.conflicts[id] = all
		return
	}
	delete(l.conflicts, id)
	rec, _ := l.current(all[0].name)
	l.serve(id, keyRef{rec.tab, l.table(rec.tab).recs[rec.i].firstKey + all[0].pos})
	l.keys++
}

// listingOf is the listing of key entry i.
func (t *recordTable) listingOf(i uint32) listing {
	rec := t.keys[i].rec
	return listing{t.apiKeyName(rec), i - t.recs[rec].firstKey}
}

// served is the entry id is served from, if any.
func (l *liveRecords) served(id keyID) (keyRef, bool) {
	if r, ok := l.overlay.o.get(id); ok {
		return r, r.tab != noTable
	}
	if i, ok := l.base.index[id]; ok {
		return keyRef{0, i}, true
	}
	return keyRef{}, false
}

func (l *liveRecords) serve(id keyID, r keyRef) {
	if i, ok := l.base.index[id]; ok && r == (keyRef{0, i}) {
		l.overlay.delete(id) // the base says as much
		return
	}
	l.overlay.set(id, r)
}

func (l *liveRecords) unserve(id keyID) {
	if _, ok := l.base.index[id]; ok {
		l.overlay.set(id, keyRef{tab: noTable})
		return
	}
	l.overlay.delete(id)
}

// conflictProblems are the problems Build reports for the conflicts, in
// its order: by APIKey name and key, every listing after an ID's first.
func (l *liveRecords) conflictProblems() []string {
	type at struct {
		id keyID
		listing
	}
	var all []at
	for id, ls := range l.conflicts {
		for _, x := range ls {
			all = append(all, at{id, x})
		}
	}
	slices.SortFunc(all, func(a, b at) int { return cmp.Or(strings.Compare(a.name, b.name), cmp.Compare(a.pos, b.pos)) })
	seen := make(map[keyID]bool, len(l.conflicts))
	var out []string
	for _, a := range all {
		if seen[a.id] {
			out = append(out, fmt.Sprintf(conflictProblem, keyIDEncoding.EncodeToString(a.id[:])))
		}
		seen[a.id] = true
	}
	return out
}
