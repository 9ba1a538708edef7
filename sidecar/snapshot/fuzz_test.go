package snapshot_test

import (
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"

	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// FuzzParseJWKS checks that any document either fails or yields only keys
// with a kid and an asymmetric signature algorithm.
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(testfixture.JWKS(f, testfixture.NewSigner(f, jwa.ES256), testfixture.NewSigner(f, jwa.EdDSA))))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA","kid":"h","alg":"HS256"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":"","kid":"x"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		set, _, err := snapshot.ParseJWKS(doc)
		if err != nil {
			return
		}
		for _, kid := range []string{"h", "x", ""} {
			if k, ok := set.Key(kid); ok {
				switch k.Algorithm {
				case jwa.ES256, jwa.ES384, jwa.ES512, jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512, jwa.EdDSA:
				default:
					t.Fatalf("key %q has algorithm %s", kid, k.Algorithm)
				}
				if kid == "" {
					t.Fatal("a key without kid was kept")
				}
			}
		}
	})
}
