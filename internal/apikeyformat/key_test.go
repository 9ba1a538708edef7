package apikeyformat

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

func TestGeneratedKeysParseAndHashConsistently(t *testing.T) {
	k, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Plaintext()) != Len || !strings.HasPrefix(k.Plaintext(), "gth_"+k.ID()+"_") {
		t.Fatalf("generated key has the wrong shape (len %d)", len(k.Plaintext()))
	}
	p, err := Parse(k.Plaintext())
	if err != nil {
		t.Fatalf("a generated key does not parse: %v", err)
	}
	if p.ID() != k.ID() || p.Hash() != k.Hash() || !HashMatches(p, k.Hash()) {
		t.Fatal("parsed key differs from the generated one")
	}
	if strings.Contains(k.String(), k.Plaintext()[25:]) {
		t.Fatal("String() leaks the secret part")
	}
}

func TestGenerateIsDeterministicForAGivenSourceAndFailsOnShortRead(t *testing.T) {
	src := bytes.Repeat([]byte{7}, 42)
	a, err := Generate(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate(bytes.NewReader(src))
	if a.Plaintext() != b.Plaintext() {
		t.Fatal("same randomness gave different keys")
	}
	if _, err := Generate(bytes.NewReader(src[:20])); err == nil {
		t.Fatal("a short read of randomness was not an error")
	}
}

func TestParseRejectsMalformedKeys(t *testing.T) {
	k, _ := Generate(rand.Reader)
	good := k.Plaintext()
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]string{
		"an empty string":                  "",
		"a key with another prefix":        "ghp" + good[3:],
		"a key one character short":        good[:len(good)-1],
		"a key with a flipped secret char": flip(30),
		"a key with a flipped key ID char": flip(6),
		"a key with a flipped checksum":    flip(len(good) - 1),
		"a key in upper case":              strings.ToUpper(good),
		"a key with an extra separator":    good[:22] + "_" + good[23:],
		"a key with a non-base32 digit":    good[:30] + "1" + good[31:],
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(s); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestRecordCheck(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cur, _ := Generate(rand.Reader)
	prev, _ := Generate(rand.Reader)
	other, _ := Generate(rand.Reader)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	base := func() *Record {
		return &Record{Version: 1, State: StateActive, Keys: []RecordKey{
			{KeyID: cur.ID(), SHA256: cur.Hash(), NotBefore: at(-time.Hour)},
			{KeyID: prev.ID(), SHA256: prev.Hash(), NotAfter: at(time.Hour)},
		}}
	}
	forged, _ := Parse(other.Plaintext())
	cases := []struct {
		name   string
		mutate func(*Record)
		key    Key
		now    time.Time
		want   Decision
	}{
		{"the current key is accepted", nil, cur, now, Accepted},
		{"the previous key is accepted during its grace period", nil, prev, now, Accepted},
		{"the previous key is refused after its grace period", nil, prev, now.Add(time.Hour), GraceOver},
		{"a key of another record is unknown", nil, forged, now, UnknownKey},
		{"a revoked record refuses its key", func(r *Record) { r.State = StateRevoked }, cur, now, Revoked},
		{"an expired record refuses its key", func(r *Record) { r.ExpiresAt = at(-time.Second) }, cur, now, Expired},
		{"a key is refused exactly at expiry", func(r *Record) { r.ExpiresAt = at(0) }, cur, now, Expired},
		{"a key before its window is refused", nil, cur, now.Add(-2 * time.Hour), NotYetValid},
		{"a key whose hash differs is refused", func(r *Record) { r.Keys[0].SHA256 = prev.Hash() }, cur, now, WrongKey},
		{"an unknown state is refused", func(r *Record) { r.State = "Weird" }, cur, now, InvalidRecord},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			if tc.mutate != nil {
				tc.mutate(r)
			}
			if got := r.Check(tc.key, tc.now); got != tc.want {
				t.Fatalf("Check = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRecordRoundTripAndValidation(t *testing.T) {
	k, _ := Generate(rand.Reader)
	r := &Record{Version: RecordVersion, Name: "n", Namespace: "ns", Subject: "s", State: StateActive,
		Keys: []RecordKey{{KeyID: k.ID(), SHA256: k.Hash()}}}
	data, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(k.Plaintext())) {
		t.Fatal("record contains the plaintext key")
	}
	got, err := UnmarshalRecord(data)
	if err != nil || got.Keys[0].SHA256 != k.Hash() {
		t.Fatalf("round trip failed: %v", err)
	}
	for name, doc := range map[string]string{
		"not JSON":              "{",
		"another version":       `{"version":2,"keys":[{"keyID":"abcdefghijklmnop","sha256":"` + strings.Repeat("a", 64) + `"}]}`,
		"no keys":               `{"version":1,"keys":[]}`,
		"a malformed key entry": `{"version":1,"keys":[{"keyID":"x","sha256":"y"}]}`,
	} {
		if _, err := UnmarshalRecord([]byte(doc)); err == nil {
			t.Errorf("accepted a record with %s", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	k, _ := Generate(rand.Reader)
	f.Add(k.Plaintext())
	f.Add("gth_")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		key, err := Parse(s)
		if err != nil {
			return
		}
		if key.Plaintext() != s || !ValidKeyID(key.ID()) {
			t.Fatalf("Parse accepted %q inconsistently", s)
		}
	})
}
