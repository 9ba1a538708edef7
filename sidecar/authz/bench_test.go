package authz_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"gatehouse.dev/gatehouse/test/testfixture"
)

// BenchmarkOneVerification is the cost of the cryptography alone: one
// signature verification of a typical token, with the verifier the engine
// uses and nothing else. Issue 14 sets the uncached-token targets against
// it: a check of a valid, uncached token may cost at most the baseline
// server's cost plus 1.2 times this.
func BenchmarkOneVerification(b *testing.B) {
	for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256, jwa.RS256} {
		b.Run(alg.String(), func(b *testing.B) {
			s := testfixture.NewSigner(b, alg)
			tok := s.Sign(b, testfixture.Claims(issuer, "alice", testfixture.Epoch, map[string]any{"scope": "orders:read"}), nil)
			i := strings.LastIndexByte(tok, '.')
			input := []byte(tok[:i])
			sig := decodeB64(b, tok[i+1:])
			v, err := jws.NewVerifier(alg)
			if err != nil {
				b.Fatal(err)
			}
			pub := s.Private.Public()
			if err := v.Verify(input, sig, pub); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := v.Verify(input, sig, pub); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func decodeB64(b *testing.B, s string) []byte {
	b.Helper()
	out, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		b.Fatal(err)
	}
	return out
}
