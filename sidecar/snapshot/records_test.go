package snapshot

import (
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

func genKey(t *testing.T) apikeyformat.Key {
	t.Helper()
	k, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func recordConfigMap(t *testing.T, name, version string, r *apikeyformat.Record) *corev1.ConfigMap {
	t.Helper()
	data, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", ResourceVersion: version, UID: types.UID("u-" + name),
			Labels: map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey}},
		Data: map[string]string{gatehousev1.RecordDataKey: string(data)},
	}
}

// TestCompactRecordsDecideLikeRecordCheck builds snapshots of records in
// every state, with and without expiry and key windows, and checks that the
// compact form takes the decision of apikeyformat.Record.Check and KeyValid for
// the right key, a wrong key of the same ID, and clocks on and around every
// bound.
func TestCompactRecordsDecideLikeRecordCheck(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	rng := mrand.New(mrand.NewPCG(1, 2))
	optTime := func() *time.Time {
		if rng.IntN(3) == 0 {
			return nil
		}
		return at(time.Duration(rng.IntN(7)-3) * time.Hour)
	}
	states := []apikeyformat.State{apikeyformat.StateActive, apikeyformat.StateActive, apikeyformat.StateRevoked, apikeyformat.StateExpired, "Weird"}
	type keyed struct {
		key apikeyformat.Key
		rec *apikeyformat.Record
	}
	var all []keyed
	var cms []*corev1.ConfigMap
	for i := range 300 {
		r := &apikeyformat.Record{Version: 1, Name: fmt.Sprintf("r%d", i), Namespace: "ns", Subject: fmt.Sprintf("service:%d", i),
			Scopes: [][]string{nil, {"a"}, {"a", "b"}}[i%3], State: states[rng.IntN(len(states))], ExpiresAt: optTime()}
		for range 1 + rng.IntN(3) {
			k := genKey(t)
			other := genKey(t)
			rk := apikeyformat.RecordKey{KeyID: k.ID(), SHA256: k.Hash(), NotBefore: optTime(), NotAfter: optTime()}
			switch rng.IntN(6) {
			case 0:
				// A wrong key for this ID (the checksum of a key covers
				// its ID, so one cannot be forged here): the stored hash
				// is another key's.
				rk.SHA256 = other.Hash()
			case 1:
				rk.SHA256 = strings.Repeat("z", 64) // not hex
			}
			r.Keys = append(r.Keys, rk)
			all = append(all, keyed{key: k, rec: r})
		}
		cms = append(cms, recordConfigMap(t, r.Name, "1", r))
	}
	b := NewBuilder(BuildOptions{Namespace: "ns"})
	check := func(s *Snapshot) {
		t.Helper()
		if s.KeyCount() != len(all) {
			t.Fatalf("%d key IDs indexed, want %d", s.KeyCount(), len(all))
		}
		for _, k := range all {
			kr, ok := s.Record(k.key.ID())
			if !ok {
				t.Fatalf("key ID %s is not indexed", k.key.ID())
			}
			if kr.Subject() != k.rec.Subject || strings.Join(kr.Scopes(), " ") != kr.ScopesJoined() ||
				strings.Join(kr.Scopes(), ",") != strings.Join(k.rec.Scopes, ",") || kr.Name() != "ns/"+k.rec.Name {
				t.Fatalf("record %s: subject %q scopes %q name %q", k.rec.Name, kr.Subject(), kr.Scopes(), kr.Name())
			}
			bounds := []*time.Time{k.rec.ExpiresAt, at(0)}
			for _, rk := range k.rec.Keys {
				bounds = append(bounds, rk.NotBefore, rk.NotAfter)
			}
			var clocks []time.Time
			for _, b := range bounds {
				if b != nil {
					clocks = append(clocks, b.Add(-time.Nanosecond), *b, b.Add(time.Nanosecond))
				}
			}
			for _, c := range clocks {
				if got, want := kr.Check(k.key, c), k.rec.Check(k.key, c); got != want {
					t.Fatalf("record %s at %s: compact Check = %s, Record.Check = %s", k.rec.Name, c, got, want)
				}
				if got, want := kr.KeyValid(c), k.rec.KeyValid(k.key.ID(), c); got != want {
					t.Fatalf("record %s at %s: compact KeyValid = %v, Record.KeyValid = %v", k.rec.Name, c, got, want)
				}
			}
		}
	}
	s := b.Build(Inputs{ConfigMaps: cms})
	check(s)
	// A rebuild from the memo decides the same.
	check(b.Build(Inputs{ConfigMaps: cms}))
	// Changing one record's version with new content takes effect; the
	// others are served from the memo.
	r0 := all[0].rec
	orig := r0.State
	r0.State = apikeyformat.StateRevoked
	cms[0] = recordConfigMap(t, r0.Name, "2", r0)
	s2 := b.Build(Inputs{ConfigMaps: cms})
	check(s2)
	// The earlier snapshot is unchanged by later builds.
	r0.State = orig
	for _, c := range []time.Time{now, now.Add(-time.Hour), now.Add(time.Hour)} {
		if kr, _ := s.Record(all[0].key.ID()); kr.Check(all[0].key, c) != r0.Check(all[0].key, c) {
			t.Fatal("an earlier snapshot changed with a later build")
		}
	}
}

func TestKeyIDsRoundTripAndRejectOthers(t *testing.T) {
	k := genKey(t)
	id, ok := parseKeyID(k.ID())
	if !ok || keyIDEncoding.EncodeToString(id[:]) != k.ID() {
		t.Fatalf("key ID %s does not round trip", k.ID())
	}
	for _, bad := range []string{"", "abc", strings.ToUpper(k.ID()), k.ID() + "a", "abcdefghijklmno1"} {
		if _, ok := parseKeyID(bad); ok {
			t.Errorf("%q parsed as a key ID", bad)
		}
	}
	s := NewBuilder(BuildOptions{}).Build(Inputs{})
	if _, ok := s.Record(k.ID()); ok || s.KeyCount() != 0 {
		t.Fatal("an empty snapshot finds a record")
	}
}

func TestTimesOutsideTheNanosecondRangeAreClamped(t *testing.T) {
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	long := time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)
	if nanos(far) != maxNanos || nanos(long) != minNanos {
		t.Fatal("times outside the range are not clamped")
	}
	now := time.Now()
	if nanos(now) != now.UnixNano() {
		t.Fatal("a current time changed")
	}
}

// BenchmarkRecordLookup measures finding and checking an API key among
// 10,000 records.
func BenchmarkRecordLookup(b *testing.B) {
	var cms []*corev1.ConfigMap
	var keys []apikeyformat.Key
	for i := range 10000 {
		k, _ := apikeyformat.Generate(rand.Reader)
		keys = append(keys, k)
		r := &apikeyformat.Record{Version: 1, Name: fmt.Sprintf("r%d", i), Namespace: "ns", Subject: "s", Scopes: []string{"a"},
			State: apikeyformat.StateActive, Keys: []apikeyformat.RecordKey{{KeyID: k.ID(), SHA256: k.Hash()}}}
		data, _ := r.Marshal()
		cms = append(cms, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: r.Name, Namespace: "ns",
			Labels: map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey}},
			Data: map[string]string{gatehousev1.RecordDataKey: string(data)}})
	}
	s := NewBuilder(BuildOptions{}).Build(Inputs{ConfigMaps: cms})
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := keys[i%len(keys)]
		r, ok := s.Record(k.ID())
		if !ok || r.Check(k, now) != apikeyformat.Accepted {
			b.Fatal("not accepted")
		}
	}
}

// TestRecordsWithoutConfigMapsCountLikeTheirConfigMaps feeds the same
// records once as ConfigMaps and once as RecordData (as the files source
// delivers them), mixed, and across namespaces.
func TestRecordsWithoutConfigMapsCountLikeTheirConfigMaps(t *testing.T) {
	a, b, other := genKey(t), genKey(t), genKey(t)
	rec := func(name string, keys ...apikeyformat.Key) *apikeyformat.Record {
		r := &apikeyformat.Record{Version: 1, Name: name, Namespace: "ns", Subject: name, State: apikeyformat.StateActive}
		for _, k := range keys {
			r.Keys = append(r.Keys, apikeyformat.RecordKey{KeyID: k.ID(), SHA256: k.Hash()})
		}
		return r
	}
	cmA := recordConfigMap(t, "a", "", rec("a", a))
	cmB := recordConfigMap(t, "b", "7", rec("b", b, a)) // claims a's key too: a conflict
	cmOther := recordConfigMap(t, "o", "", rec("o", other))
	cmOther.Namespace = "elsewhere"
	s := NewBuilder(BuildOptions{Namespace: "ns"}).Build(Inputs{
		ConfigMaps: []*corev1.ConfigMap{cmA},
		Records:    []RecordData{RecordDataOf(cmB), RecordDataOf(cmOther)},
	})
	if _, ok := s.Record(a.ID()); ok {
		t.Error("a key ID claimed by a ConfigMap and a RecordData is served")
	}
	if r, ok := s.Record(b.ID()); !ok || r.Check(b, time.Now()) != apikeyformat.Accepted || r.Subject() != "b" {
		t.Error("the key of a RecordData is not served")
	}
	if _, ok := s.Record(other.ID()); ok {
		t.Error("a record of another namespace is served")
	}
	if !strings.Contains(strings.Join(s.Problems, "\n"), "appears in more than one API key record") {
		t.Errorf("the conflict is not reported: %q", s.Problems)
	}
}
