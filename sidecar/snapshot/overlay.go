package snapshot

import (
	"bytes"
	"slices"
)

// overlay is an immutable map from key ID to keyRef, shared by the
// snapshots it was published to: 256 buckets by the ID's first byte (key
// IDs are random), each sorted by ID. A change copies the bucket array
// and the buckets it touches, not the whole map, so that a snapshot's
// copy costs O(1) however large the overlay has grown. It holds no
// pointer per entry.
type overlay struct {
	buckets [256][]overlayEntry
	n       int
}

type overlayEntry struct {
	id  keyID
	ref keyRef
}

func (o *overlay) len() int {
	if o == nil {
		return 0
	}
	return o.n
}

func cmpEntry(e overlayEntry, id keyID) int { return bytes.Compare(e.id[:], id[:]) }

func (o *overlay) get(id keyID) (keyRef, bool) {
	if o == nil {
		return keyRef{}, false
	}
	b := o.buckets[id[0]]
	if i, ok := slices.BinarySearchFunc(b, id, cmpEntry); ok {
		return b[i].ref, true
	}
	return keyRef{}, false
}

// each calls f with every entry.
func (o *overlay) each(f func(keyID, keyRef)) {
	if o == nil {
		return
	}
	for _, b := range o.buckets {
		for _, e := range b {
			f(e.id, e.ref)
		}
	}
}

// overlayWriter changes an overlay copy on write: the overlay it last
// published is never written again.
type overlayWriter struct {
	o *overlay
	// owned marks the buckets o owns: copied since the last publish.
	owned     [256]bool
	published bool
}

func newOverlayWriter() *overlayWriter { return &overlayWriter{o: &overlay{}} }

// publish returns the overlay as it is, nil when empty; the next change
// works on a copy.
func (w *overlayWriter) publish() *overlay {
	if w.o.n == 0 {
		return nil
	}
	w.published = true
	return w.o
}

// bucket is the bucket of id, owned by w.o.
func (w *overlayWriter) bucket(id keyID) *[]overlayEntry {
	if w.published {
		c := *w.o
		w.o, w.owned, w.published = &c, [256]bool{}, false
	}
	b := &w.o.buckets[id[0]]
	if !w.owned[id[0]] {
		*b = slices.Clone(*b)
		w.owned[id[0]] = true
	}
	return b
}

func (w *overlayWriter) set(id keyID, r keyRef) {
	b := w.bucket(id)
	if i, ok := slices.BinarySearchFunc(*b, id, cmpEntry); ok {
		(*b)[i].ref = r
	} else {
		*b = slices.Insert(*b, i, overlayEntry{id, r})
		w.o.n++
	}
}

func (w *overlayWriter) delete(id keyID) {
	if _, ok := w.o.get(id); !ok {
		return
	}
	b := w.bucket(id)
	i, _ := slices.BinarySearchFunc(*b, id, cmpEntry)
	*b = slices.Delete(*b, i, i+1)
	w.o.n--
}
