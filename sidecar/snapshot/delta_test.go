package snapshot

import (
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// deltaModel drives a Builder's Apply with deltas decoded from bytes (a
// fuzzer's or a seeded generator's), keeps the inputs the deltas add up
// to, and checks every snapshot against a full Build of those inputs: the
// same keys found, the same decisions at clocks around every bound, the
// same records named, the same problems in the same order.
type deltaModel struct {
	t        testing.TB
	b        *Builder
	keys     []apikeyformat.Key
	names    []string
	recs     map[string]*apikeyformat.Record
	policies PolicyInputs
	in       []byte
	// kept are earlier snapshots with the builds they must still match.
	kept []*Snapshot
	refs []*Snapshot
}

var deltaEpoch = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// keyPool is n keys drawn from a fixed seed.
func keyPool(t testing.TB, n int) []apikeyformat.Key {
	t.Helper()
	r := mrand.NewChaCha8([32]byte{7})
	var keys []apikeyformat.Key
	for range n {
		k, err := apikeyformat.Generate(r)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

func newDeltaModel(t testing.TB, keys []apikeyformat.Key, names, minOverlay int, in []byte) *deltaModel {
	m := &deltaModel{t: t, b: NewBuilder(BuildOptions{Namespace: "ns"}), keys: keys, recs: map[string]*apikeyformat.Record{}, in: in}
	m.b.minOverlay = minOverlay
	for i := range names {
		m.names = append(m.names, fmt.Sprintf("k%02d", i))
	}
	return m
}

func (m *deltaModel) next() int {
	if len(m.in) == 0 {
		return 0
	}
	c := m.in[0]
	m.in = m.in[1:]
	return int(c)
}

func (m *deltaModel) pick(n int) int { return m.next() % n }

func (m *deltaModel) optTime() *time.Time {
	if m.pick(3) == 0 {
		return nil
	}
	at := deltaEpoch.Add(time.Duration(m.pick(5)-2) * time.Hour)
	return &at
}

// record is a record for name whose keys are drawn from the pool: some
// listed by other records too, some twice, some with another key's hash
// or one that is not hex.
func (m *deltaModel) record(name string) *apikeyformat.Record {
	r := &apikeyformat.Record{
		Version: apikeyformat.RecordVersion, Name: name, Namespace: "ns", Subject: fmt.Sprintf("s-%s-%d", name, m.pick(4)),
		Scopes:    [][]string{nil, {"a"}, {"a", "b"}}[m.pick(3)],
		State:     []apikeyformat.State{apikeyformat.StateActive, apikeyformat.StateActive, apikeyformat.StateRevoked, apikeyformat.StateExpired}[m.pick(4)],
		ExpiresAt: m.optTime(),
	}
	if m.pick(3) == 0 {
		r.RateLimit = &apikeyformat.RecordRateLimit{RequestsPerSecond: int32(1 + m.pick(3)), Burst: 2}
	}
	if m.pick(8) == 0 {
		r.Namespace = "elsewhere" // ignored, by both
	}
	for range m.pick(4) {
		k := m.keys[m.pick(len(m.keys))]
		rk := apikeyformat.RecordKey{KeyID: k.ID(), SHA256: k.Hash(), NotBefore: m.optTime(), NotAfter: m.optTime()}
		switch m.pick(6) {
		case 0:
			rk.SHA256 = m.keys[(m.pick(len(m.keys)))].Hash()
		case 1:
			rk.SHA256 = strings.Repeat("z", 64)
		case 2:
			rk.KeyID = "not-a-key-id" // skipped, by both
		}
		r.Keys = append(r.Keys, rk)
	}
	return r
}

// policyInputs are one of a few policy states, one with problems.
func (m *deltaModel) policyInputs() *PolicyInputs {
	p1 := testfixture.Policy("ns", "p1", testfixture.Epoch, nil, gatehousev1.Rule{Match: gatehousev1.RuleMatch{Paths: []string{"/*"}}})
	p2 := testfixture.Policy("ns", "p0", testfixture.Epoch.Add(-time.Hour), []gatehousev1.TrustedIssuer{
		{Name: "missing", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "nope"}},
	}, gatehousev1.Rule{Match: gatehousev1.RuleMatch{Paths: []string{"/a/../b"}}})
	return &[]PolicyInputs{{}, {Policies: []*gatehousev1.AuthPolicy{p1}}, {Policies: []*gatehousev1.AuthPolicy{p1, p2}}}[m.pick(3)]
}

// delta decodes one delta and applies it to the model's inputs.
func (m *deltaModel) delta() Delta {
	var d Delta
	switch op := m.pick(8); {
	case op < 4: // changes, some to one name twice
		for range 1 + m.pick(3) {
			d.Records = append(d.Records, m.record(m.names[m.pick(len(m.names))]))
		}
	case op < 6: // removals, some of names never held
		for range 1 + m.pick(2) {
			d.Removed = append(d.Removed, m.names[m.pick(len(m.names))])
		}
		if op == 5 {
			d.Records = append(d.Records, m.record(d.Removed[0])) // removed and added again
		}
	case op == 6: // every name at once: larger than the overlay's bound
		for _, name := range m.names {
			if m.pick(3) == 0 {
				d.Removed = append(d.Removed, name)
			} else {
				d.Records = append(d.Records, m.record(name))
			}
		}
	default:
		d.Policy = m.policyInputs()
	}
	return d
}

// step applies d to the model's inputs and to the builder, and checks the
// snapshot against a full build.
func (m *deltaModel) step(what string, d Delta) (got, want *Snapshot) {
	m.t.Helper()
	for _, name := range d.Removed {
		delete(m.recs, name)
	}
	for _, r := range d.Records {
		if r.Namespace == "ns" {
			m.recs[r.Name] = r
		}
	}
	if d.Policy != nil {
		m.policies = *d.Policy
	}
	got, want = m.b.Apply(d), m.build()
	m.check(what, got, want)
	return got, want
}

// build is the full Build of the model's inputs.
func (m *deltaModel) build() *Snapshot {
	in := Inputs{Policies: m.policies.Policies}
	for _, r := range m.recs {
		in.Records = append(in.Records, CompiledAPIKey{Version: "v", Record: r})
	}
	return NewBuilder(BuildOptions{Namespace: "ns"}).Build(in)
}

// run applies deltas until the input is used up, compacting when the
// input says so, and checks every snapshot.
func (m *deltaModel) run() {
	for step := 0; len(m.in) > 0; step++ {
		d := m.delta()
		s, want := m.step(fmt.Sprintf("step %d (delta of %d records, %d removed)", step, len(d.Records), len(d.Removed)), d)
		if m.pick(2) == 0 {
			if c := m.b.Compact(); c != nil {
				m.check(fmt.Sprintf("step %d, compacted", step), c, want)
			}
		}
		if step%7 == 0 {
			m.kept, m.refs = append(m.kept, s), append(m.refs, want)
		}
	}
	for i := range m.kept {
		m.check(fmt.Sprintf("kept snapshot %d, after later deltas", i), m.kept[i], m.refs[i])
	}
}

func (m *deltaModel) check(what string, got, want *Snapshot) {
	m.t.Helper()
	if got.KeyCount() != want.KeyCount() {
		m.t.Fatalf("%s: %d key IDs indexed, a full build indexes %d", what, got.KeyCount(), want.KeyCount())
	}
	if !slices.Equal(got.Problems, want.Problems) {
		m.t.Fatalf("%s: problems\n%q\na full build has\n%q", what, got.Problems, want.Problems)
	}
	if policyName(got) != policyName(want) {
		m.t.Fatalf("%s: policy %q, a full build selects %q", what, policyName(got), policyName(want))
	}
	if g, w := recordNames(got), recordNames(want); !slices.Equal(g, w) {
		m.t.Fatalf("%s: records named %q, a full build names %q", what, g, w)
	}
	for _, k := range m.keys {
		gr, gok := got.Record(k.ID())
		wr, wok := want.Record(k.ID())
		if gok != wok {
			m.t.Fatalf("%s: key %s found %v, by a full build %v", what, k.ID(), gok, wok)
		}
		if gok && describe(gr, k) != describe(wr, k) {
			m.t.Fatalf("%s: key %s:\n%s\na full build:\n%s", what, k.ID(), describe(gr, k), describe(wr, k))
		}
	}
}

func policyName(s *Snapshot) string {
	if s.Policy == nil {
		return ""
	}
	return s.Policy.Name + fmt.Sprint(len(s.Policy.Issuers), len(s.Policy.Rules))
}

func recordNames(s *Snapshot) []string {
	var names []string
	s.EachRecordName(func(n string) { names = append(names, n) })
	slices.Sort(names)
	return names
}

// describe is everything a record answers for key k.
func describe(r KeyRecord, k apikeyformat.Key) string {
	rps, burst := r.RateLimit()
	out := fmt.Sprintf("%s %s %q %d/%d", r.Name(), r.Subject(), r.ScopesJoined(), rps, burst)
	for h := -3; h <= 3; h++ {
		now := deltaEpoch.Add(time.Duration(h) * time.Hour)
		out += fmt.Sprintf(" %s/%v", r.Check(k, now), r.KeyValid(now))
	}
	return out
}

// TestApplyFollowsRotationsMovesAndConflicts applies the cases that
// matter one by one; every snapshot is also checked against a full Build.
func TestApplyFollowsRotationsMovesAndConflicts(t *testing.T) {
	keys := keyPool(t, 3)
	rec := func(name string, ks ...int) *apikeyformat.Record {
		r := &apikeyformat.Record{Version: apikeyformat.RecordVersion, Name: name, Namespace: "ns", Subject: name, State: apikeyformat.StateActive}
		for _, k := range ks {
			r.Keys = append(r.Keys, apikeyformat.RecordKey{KeyID: keys[k].ID(), SHA256: keys[k].Hash()})
		}
		return r
	}
	records := func(rs ...*apikeyformat.Record) []*apikeyformat.Record { return rs }
	cases := []struct {
		name   string
		deltas []Delta
		// served maps the keys served at the end to their APIKey.
		served map[int]string
	}{
		{"A rotated-out key stops matching once it leaves the record", []Delta{
			{Records: records(rec("a", 0))}, {Records: records(rec("a", 1, 0))}, {Records: records(rec("a", 1))},
		}, map[int]string{1: "a"}},
		{"A key ID moved to another APIKey is served from it", []Delta{
			{Records: records(rec("a", 0))}, {Removed: []string{"a"}, Records: records(rec("b", 0))},
		}, map[int]string{0: "b"}},
		{"A key ID listed by two APIKeys is denied until one lets go of it", []Delta{
			{Records: records(rec("a", 0))}, {Records: records(rec("b", 0, 1))}, {Records: records(rec("b", 1))},
		}, map[int]string{0: "a", 1: "b"}},
		{"A key ID listed by three APIKeys stays denied while two do", []Delta{
			{Records: records(rec("a", 0), rec("b", 0), rec("c", 0))}, {Removed: []string{"c"}},
		}, map[int]string{}},
		{"A key ID listed twice by one APIKey is denied, and served once listed once", []Delta{
			{Records: records(rec("a", 0, 0), rec("b", 1))}, {Records: records(rec("a", 2))}, {Records: records(rec("a", 0))},
		}, map[int]string{0: "a", 1: "b"}},
		{"Removing an APIKey never held changes nothing", []Delta{
			{Records: records(rec("a", 0))}, {Removed: []string{"zz"}},
		}, map[int]string{0: "a"}},
		{"A policy change leaves the record table alone", []Delta{
			{Records: records(rec("a", 0))}, {Policy: &PolicyInputs{}},
		}, map[int]string{0: "a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newDeltaModel(t, keys, 0, 0, nil)
			var s *Snapshot
			var base *recordTable
			for i, d := range tc.deltas {
				s, _ = m.step(fmt.Sprintf("delta %d", i), d)
				if i == 0 {
					base = s.records
				}
			}
			if s.records != base {
				t.Fatal("a small delta rebuilt the record table")
			}
			for i, k := range keys {
				r, ok := s.Record(k.ID())
				if want, served := tc.served[i]; ok != served || ok && r.Name() != "ns/"+want {
					t.Errorf("key %d: found %v (%s), want %v (%s)", i, ok, r.nameIf(ok), served, want)
				}
			}
		})
	}
}

func (r KeyRecord) nameIf(ok bool) string {
	if !ok {
		return ""
	}
	return r.Name()
}

// TestApplyAnswersAsAFullBuild runs seeded random sequences of deltas
// (changes, rotations, removals, key IDs listed twice, a key ID moving
// between APIKeys, policy changes, deltas larger than the overlay's bound,
// compactions) and checks every snapshot against a full Build.
func TestApplyAnswersAsAFullBuild(t *testing.T) {
	keys := keyPool(t, 12)
	for seed := range uint64(60) {
		for _, minOverlay := range []int{2, 5, 1024} {
			rng := mrand.New(mrand.NewPCG(seed, uint64(minOverlay)))
			in := make([]byte, 600)
			for i := range in {
				in[i] = byte(rng.Uint32())
			}
			newDeltaModel(t, keys, 8, minOverlay, in).run()
		}
	}
}

// FuzzApply checks that any sequence of deltas gives snapshots that answer
// as a full Build of the same inputs (see deltaModel).
func FuzzApply(f *testing.F) {
	keys := keyPool(f, 8)
	f.Add([]byte{0, 0, 0, 1, 1, 0, 3, 0, 2, 2, 0, 0, 1, 0, 0, 0, 2, 0, 0})
	f.Add([]byte{6, 1, 1, 1, 2, 0, 0, 3, 1, 1, 5, 0, 0, 4, 1, 0, 0, 1, 0, 2, 0, 7, 2})
	f.Add([]byte("a delta of anything at all, applied and compacted"))
	f.Fuzz(func(t *testing.T, in []byte) {
		newDeltaModel(t, keys, 6, 2, in).run()
	})
}

// TestReadersSeeWholeSnapshotsWhileDeltasApply runs readers against a
// Store while deltas and compactions are applied and swapped in (run it
// with -race): every snapshot a reader loads answers for every key, the
// unchanged ones accepted, the ones the deltas flip either accepted or
// revoked, never half of a change.
func TestReadersSeeWholeSnapshotsWhileDeltasApply(t *testing.T) {
	keys := keyPool(t, 64)
	var recs []*apikeyformat.Record
	for i, k := range keys {
		recs = append(recs, &apikeyformat.Record{Version: apikeyformat.RecordVersion, Name: fmt.Sprintf("k%02d", i), Namespace: "ns", Subject: "svc",
			State: apikeyformat.StateActive, Keys: []apikeyformat.RecordKey{{KeyID: k.ID(), SHA256: k.Hash()}}})
	}
	b := NewBuilder(BuildOptions{Namespace: "ns"})
	b.minOverlay = 8
	var store Store
	store.Swap(b.Apply(Delta{Records: recs}))
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				s := store.Load()
				for i, k := range keys {
					r, ok := s.Record(k.ID())
					if !ok || r.Subject() != "svc" {
						t.Errorf("generation %d: key %d not found", s.Generation, i)
						return
					}
					d := r.Check(k, deltaEpoch)
					if d != apikeyformat.Accepted && (i%2 == 0 || d != apikeyformat.Revoked) {
						t.Errorf("generation %d: key %d: %s", s.Generation, i, d)
						return
					}
				}
				if s.KeyCount() != len(keys) {
					t.Errorf("generation %d: %d keys", s.Generation, s.KeyCount())
					return
				}
			}
		})
	}
	for i := range 2000 {
		r := *recs[1+2*(i%32)] // the odd keys flip
		r.State = []apikeyformat.State{apikeyformat.StateRevoked, apikeyformat.StateActive}[i/32%2]
		store.Swap(b.Apply(Delta{Records: []*apikeyformat.Record{&r}}))
		if c := b.Compact(); c != nil {
			store.Swap(c)
		}
	}
	close(done)
	wg.Wait()
}
