package authz

import "testing"

// BenchmarkDecodeTokenJSON is the JSON decoding of a typical token's
// header and claims, the part of a check before the signature that is
// neither base64 nor a look-up.
func BenchmarkDecodeTokenJSON(b *testing.B) {
	header := []byte(`{"alg":"RS256","kid":"3f6a1c0e9b2d4e7f","typ":"JWT"}`)
	payload := []byte(`{"iss":"https://issuer.example.com","sub":"alice","aud":"orders","exp":4102444800,"iat":1700000000,"nbf":1700000000,"jti":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","scope":"orders:read orders:write"}`)
	b.ReportAllocs()
	for range b.N {
		if _, _, _, ok := decodeHeader(header); !ok {
			b.Fatal("header")
		}
		if _, reason := decodeTokenClaims(payload); reason != "" {
			b.Fatal(reason)
		}
	}
}
