package snapshot

import (
	"fmt"
	"strconv"
	"testing"

	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// BenchmarkApplyOneKeyChange measures what one changed APIKey costs the
// sidecar among n: "build" is the path before deltas (the source hands
// the builder its complete inputs, from a map of records as the xDS
// source held them, and Build reuses unchanged records by version);
// "apply" is Apply of the one record, plus Compact when it is due, as the
// sidecar's reload loop runs them; "compact" is one compaction, the
// longest pause of the reload loop (once per max(1024, keys/16) changes,
// after the change is in). Each operation alternates one record
// between active and revoked. Run with
//
//	go test -run '^$' -bench ApplyOneKeyChange -benchmem ./sidecar/snapshot/
func BenchmarkApplyOneKeyChange(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		recs := benchRecords(b, n)
		b.Run(fmt.Sprintf("keys=%d/build", n), func(b *testing.B) {
			held := make(map[string]CompiledAPIKey, n)
			for _, r := range recs {
				held[r.Name] = CompiledAPIKey{Version: "1", Record: r}
			}
			builder := NewBuilder(BuildOptions{Namespace: "ns"})
			builder.Build(inputsOf(held))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				r := flipped(recs[i%n], i)
				held[r.Name] = CompiledAPIKey{Version: strconv.Itoa(i + 2), Record: r}
				builder.Build(inputsOf(held))
			}
		})
		b.Run(fmt.Sprintf("keys=%d/apply", n), func(b *testing.B) {
			builder := NewBuilder(BuildOptions{Namespace: "ns"})
			builder.Apply(Delta{Records: recs, Policy: &PolicyInputs{}})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				builder.Apply(Delta{Records: []*apikeyformat.Record{flipped(recs[i%n], i)}})
				builder.Compact()
			}
		})
		b.Run(fmt.Sprintf("keys=%d/compact", n), func(b *testing.B) {
			builder := NewBuilder(BuildOptions{Namespace: "ns"})
			builder.Apply(Delta{Records: recs, Policy: &PolicyInputs{}})
			b.ReportAllocs()
			for b.Loop() {
				builder.live.rebuild(nil, nil)
			}
		})
	}
}

// inputsOf is what the xDS source handed the builder before deltas.
func inputsOf(held map[string]CompiledAPIKey) Inputs {
	in := Inputs{Records: make([]CompiledAPIKey, 0, len(held))}
	for _, c := range held {
		in.Records = append(in.Records, c)
	}
	return in
}

// flipped is a copy of r, revoked on even i.
func flipped(r *apikeyformat.Record, i int) *apikeyformat.Record {
	c := *r
	c.State = apikeyformat.StateActive
	if i%2 == 0 {
		c.State = apikeyformat.StateRevoked
	}
	return &c
}

// benchRecords are n records of one key each, as the xDS source
// compiles them.
func benchRecords(b *testing.B, n int) []*apikeyformat.Record {
	b.Helper()
	keys := keyPool(b, n)
	recs := make([]*apikeyformat.Record, n)
	for i, k := range keys {
		recs[i] = &apikeyformat.Record{
			Version: apikeyformat.RecordVersion, Name: fmt.Sprintf("key-%06d", i), Namespace: "ns", Subject: "service:" + strconv.Itoa(i),
			Scopes: []string{"orders:read"}, State: apikeyformat.StateActive,
			Keys: []apikeyformat.RecordKey{{KeyID: k.ID(), SHA256: k.Hash()}},
		}
	}
	return recs
}

// BenchmarkRecordLookupWithOverlay is BenchmarkRecordLookup on a snapshot
// of 10,000 keys with 1,000 changed since the base (Compact not yet
// due): what a lookup pays for asking the overlay first.
func BenchmarkRecordLookupWithOverlay(b *testing.B) {
	recs := benchRecords(b, 10000)
	keys := keyPool(b, 10000)
	builder := NewBuilder(BuildOptions{Namespace: "ns"})
	builder.Apply(Delta{Records: recs})
	var s *Snapshot
	for i := range 1000 {
		s = builder.Apply(Delta{Records: []*apikeyformat.Record{flipped(recs[i*10], 1)}})
	}
	if s.overlay.len() != 1000 {
		b.Fatalf("overlay of %d", s.overlay.len())
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := keys[i%len(keys)]
		r, ok := s.Record(k.ID())
		if !ok || r.Check(k, deltaEpoch) != apikeyformat.Accepted {
			b.Fatal("not accepted")
		}
	}
}
