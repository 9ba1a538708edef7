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
	"gatehouse.dev/gatehouse/test/testfixture"
)

func genKey(t *testing.T) apikeyformat.Key {
	t.Helper()
	k, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// apiKeyOf renders a record as the APIKey whose spec and status say the
// same (testfixture.APIKeyOf), under name and version in namespace "ns".
func apiKeyOf(name, version string, r *apikeyformat.Record) *gatehousev1.APIKey {
	ak := testfixture.APIKeyOf(r)
	ak.Name, ak.Namespace, ak.ResourceVersion, ak.UID = name, "ns", version, types.UID("u-"+name)
	ak.Spec.SecretName = name + "-key"
	return ak
}

// TestCompactRecordsDecideLikeRecordCheck builds snapshots of records in
// every state, with and without expiry and grace windows, and checks that the
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
	var cms []*gatehousev1.APIKey
	for i := range 300 {
		r := &apikeyformat.Record{Version: 1, Name: fmt.Sprintf("r%d", i), Namespace: "ns", Subject: fmt.Sprintf("service:%d", i),
			Scopes: [][]string{nil, {"a"}, {"a", "b"}}[i%3], State: states[rng.IntN(len(states))], ExpiresAt: optTime()}
		for range 1 + rng.IntN(3) {
			k := genKey(t)
			other := genKey(t)
			rk := apikeyformat.RecordKey{KeyID: k.ID(), SHA256: k.Hash(), NotAfter: optTime()}
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
		cms = append(cms, apiKeyOf(r.Name, "1", r))
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
	s := b.Build(Inputs{APIKeys: cms})
	check(s)
	// A rebuild from the memo decides the same.
	check(b.Build(Inputs{APIKeys: cms}))
	// Changing one record's version with new content takes effect; the
	// others are served from the memo.
	r0 := all[0].rec
	orig := r0.State
	r0.State = apikeyformat.StateRevoked
	cms[0] = apiKeyOf(r0.Name, "2", r0)
	s2 := b.Build(Inputs{APIKeys: cms})
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
// 10,000 APIKeys.
func BenchmarkRecordLookup(b *testing.B) {
	var aks []*gatehousev1.APIKey
	var keys []apikeyformat.Key
	for i := range 10000 {
		k, _ := apikeyformat.Generate(rand.Reader)
		keys = append(keys, k)
		r := &apikeyformat.Record{Version: 1, Name: fmt.Sprintf("r%d", i), Namespace: "ns", Subject: "s", Scopes: []string{"a"},
			State: apikeyformat.StateActive, Keys: []apikeyformat.RecordKey{{KeyID: k.ID(), SHA256: k.Hash()}}}
		aks = append(aks, apiKeyOf(r.Name, "1", r))
	}
	s := NewBuilder(BuildOptions{}).Build(Inputs{APIKeys: aks})
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

// TestOnlyAPIKeysOfTheNamespaceSupplyKeys checks the trust rule at the
// builder: a record ConfigMap (anyone with ConfigMap write can make one)
// supplies nothing, an APIKey of another namespace supplies nothing, and
// two APIKeys listing one key ID deny it.
func TestOnlyAPIKeysOfTheNamespaceSupplyKeys(t *testing.T) {
	a, b, other, forged := genKey(t), genKey(t), genKey(t), genKey(t)
	rec := func(name string, keys ...apikeyformat.Key) *apikeyformat.Record {
		r := &apikeyformat.Record{Version: 1, Name: name, Namespace: "ns", Subject: name, State: apikeyformat.StateActive}
		for _, k := range keys {
			r.Keys = append(r.Keys, apikeyformat.RecordKey{KeyID: k.ID(), SHA256: k.Hash()})
		}
		return r
	}
	forgedData, err := rec("forged", forged).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	forgedCM := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "forged", Namespace: "ns", Labels: map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey}},
		Data:       map[string]string{gatehousev1.RecordDataKey: string(forgedData)},
	}
	akOther := apiKeyOf("o", "", rec("o", other))
	akOther.Namespace = "elsewhere"
	s := NewBuilder(BuildOptions{Namespace: "ns"}).Build(Inputs{
		APIKeys:    []*gatehousev1.APIKey{apiKeyOf("a", "", rec("a", a)), apiKeyOf("b", "7", rec("b", b, a)), akOther},
		ConfigMaps: []*corev1.ConfigMap{forgedCM},
	})
	if _, ok := s.Record(forged.ID()); ok {
		t.Error("a key of a record ConfigMap is served")
	}
	if _, ok := s.Record(a.ID()); ok {
		t.Error("a key ID listed by two APIKeys is served")
	}
	if r, ok := s.Record(b.ID()); !ok || r.Check(b, time.Now()) != apikeyformat.Accepted || r.Subject() != "b" {
		t.Error("the key of an APIKey is not served")
	}
	if _, ok := s.Record(other.ID()); ok {
		t.Error("an APIKey of another namespace is served")
	}
	if !strings.Contains(strings.Join(s.Problems, "\n"), "appears in more than one APIKey") {
		t.Errorf("the conflict is not reported: %q", s.Problems)
	}
}

// TestCompiledAPIKeysCountLikeTheirAPIKeys feeds the same APIKeys once as
// objects and once compiled (as the files source delivers them), mixed:
// the same keys are served, and a key ID claimed by both forms conflicts.
func TestCompiledAPIKeysCountLikeTheirAPIKeys(t *testing.T) {
	a, b := genKey(t), genKey(t)
	rec := func(name string, keys ...apikeyformat.Key) *apikeyformat.Record {
		r := &apikeyformat.Record{Version: 1, Name: name, Namespace: "ns", Subject: name, State: apikeyformat.StateActive}
		for _, k := range keys {
			r.Keys = append(r.Keys, apikeyformat.RecordKey{KeyID: k.ID(), SHA256: k.Hash()})
		}
		return r
	}
	bld := NewBuilder(BuildOptions{Namespace: "ns"})
	in := Inputs{
		APIKeys: []*gatehousev1.APIKey{apiKeyOf("a", "1", rec("a", a))},
		Records: []CompiledAPIKey{{Version: "v1", Record: apikeyformat.RecordOf(apiKeyOf("b", "", rec("b", b)))}},
	}
	for range 2 { // the second build comes from the memo
		s := bld.Build(in)
		for _, k := range []apikeyformat.Key{a, b} {
			if r, ok := s.Record(k.ID()); !ok || r.Check(k, time.Now()) != apikeyformat.Accepted {
				t.Fatalf("key %s is not served", k.ID())
			}
		}
	}
	in.Records = append(in.Records, CompiledAPIKey{Version: "v1", Record: apikeyformat.RecordOf(apiKeyOf("c", "", rec("c", a)))})
	if _, ok := bld.Build(in).Record(a.ID()); ok {
		t.Fatal("a key ID claimed by an APIKey and a compiled APIKey is served")
	}
}
