package keyring

import (
	"testing"
	"time"
)

// FuzzParseKeySet feeds arbitrary documents to the Secret parser: it must
// never panic, and every key it accepts must be usable as documented (kid
// is the thumbprint, a non-lost live key has its private part, a lost one
// has none).
func FuzzParseKeySet(f *testing.F) {
	ks, err := oneActiveKey(t0)
	if err != nil {
		f.Fatal(err)
	}
	doc, _ := ks.Marshal()
	f.Add(doc)
	f.Add([]byte(`{"version":1,"keys":[{"kid":"x","alg":"ES256","revokedAt":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"keys":[{"kid":"x","alg":"none","jwk":{"kty":"oct","k":"AAAA"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := ParseKeySet(data)
		if err != nil {
			return
		}
		for _, k := range ks.Keys {
			if !k.RevokedAt.IsZero() {
				continue
			}
			pub := k.Public
			if pub == nil {
				t.Fatalf("live key %q without a public part", k.ID)
			}
			if tp, err := Thumbprint(pub); err != nil || tp != k.ID {
				t.Fatalf("accepted kid %q that is not the thumbprint %q", k.ID, tp)
			}
			if k.Lost != (k.Private == nil) {
				t.Fatalf("key %q: lost=%v but private part present=%v", k.ID, k.Lost, k.Private != nil)
			}
			if _, err := ks.JWKS(time.Time{}); err != nil {
				t.Fatalf("accepted set cannot be published: %v", err)
			}
		}
	})
}
