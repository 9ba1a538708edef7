package snapshot

import (
	"slices"
	"strings"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// recordSource is one record of a new base: record i of table t, or rec
// to compile.
type recordSource struct {
	name string
	t    *recordTable
	i    uint32
	rec  *apikeyformat.Record
}

// rebuild makes a new base of the current records with the removals and
// records given (a delta applied in the same stroke), and empties the
// overlay: O(keys).
func (l *liveRecords) rebuild(removed []string, records []*apikeyformat.Record) {
	fresh, replaced := l.freshRecords(removed, records)
	tb := newTableBuilder(len(l.base.recs) + len(fresh))
	index := make(map[keyID]uint32, l.keys+len(fresh))
	conflicted := map[keyID]bool{}
	l.mergeInto(fresh, replaced, func(src recordSource) {
		var idx uint32
		if src.rec != nil {
			idx = tb.addRecord(src.rec)
		} else {
			idx = tb.copyRecord(src.t, src.i)
		}
		info := tb.t.recs[idx]
		for ki := info.firstKey; ki < info.firstKey+info.nKeys; ki++ {
			id := tb.t.keys[ki].id
			if _, dup := index[id]; dup || conflicted[id] {
				conflicted[id] = true
				delete(index, id)
				continue
			}
			index[id] = ki
		}
	})
	t := tb.finish(index)
	l.base, l.keys = t, len(index)
	l.tables, l.changed, l.overlay = nil, map[string]uint32{}, newOverlayWriter()
	l.conflicts = listings(t, conflicted)
	l.problemsStale = true
}

// freshRecords are the records that are not the base's, sorted by name:
// the delta's (the last of a name wins) and the changed ones it leaves
// alone; replaced holds every name whose base record is not kept.
func (l *liveRecords) freshRecords(removed []string, records []*apikeyformat.Record) ([]recordSource, map[string]bool) {
	replaced := make(map[string]bool, len(removed)+len(records)+len(l.changed))
	fresh := make([]recordSource, 0, len(records)+len(l.changed))
	for _, r := range slices.Backward(records) {
		if !replaced[r.Name] {
			replaced[r.Name] = true
			fresh = append(fresh, recordSource{name: r.Name, rec: r})
		}
	}
	for _, name := range removed {
		replaced[name] = true
	}
	for name, tab := range l.changed {
		if !replaced[name] {
			replaced[name] = true
			if tab != noTable {
				fresh = append(fresh, recordSource{name: name, t: l.table(tab)})
			}
		}
	}
	slices.SortFunc(fresh, func(a, b recordSource) int { return strings.Compare(a.name, b.name) })
	return fresh, replaced
}

// mergeInto calls add with the base's records that are not replaced and
// the fresh ones, in name order.
func (l *liveRecords) mergeInto(fresh []recordSource, replaced map[string]bool, add func(recordSource)) {
	base := l.base
	for i := range uint32(len(base.recs)) { //nolint:gosec // fewer records than 4 billion
		name := base.apiKeyName(i)
		if replaced[name] {
			continue
		}
		for len(fresh) > 0 && fresh[0].name < name {
			add(fresh[0])
			fresh = fresh[1:]
		}
		add(recordSource{name: name, t: base, i: i})
	}
	for _, f := range fresh {
		add(f)
	}
}

// listings are every listing of the conflicted key IDs in t.
func listings(t *recordTable, conflicted map[keyID]bool) map[keyID][]listing {
	out := make(map[keyID][]listing, len(conflicted))
	if len(conflicted) == 0 {
		return out
	}
	for i := range t.keys {
		if id := t.keys[i].id; conflicted[id] {
			out[id] = append(out[id], t.listingOf(uint32(i))) //nolint:gosec // fewer keys than 4 billion
		}
	}
	return out
}
