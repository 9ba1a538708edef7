package authz_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// FuzzBearerToken feeds arbitrary bearer tokens to the engine. It must never
// panic or report an unknown reason, and it may allow a token only if the
// signed part (header and payload) is exactly that of the one valid token:
// nothing the fuzzer builds may be accepted on its own merit.
func FuzzBearerToken(f *testing.F) {
	signer := testfixture.NewSigner(f, jwa.ES256)
	e := newEnv(f, signer)
	good := signer.Sign(f, testfixture.Claims(issuer, "alice", e.clock.Now(), nil), nil)
	signedPart := good[:strings.LastIndexByte(good, '.')]
	f.Add(good)
	f.Add(signedPart + ".")
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLmNvbSJ9.")
	f.Add("a.b.c.d.e")
	f.Add(strings.Repeat(".", 100))
	f.Add(testfixture.B64JSON(f, map[string]any{"alg": "ES256", "kid": signer.KeyID, "crit": []string{"exp"}}) + ".e30.AAAA")
	f.Fuzz(func(t *testing.T, token string) {
		d := e.engine.Check(req("Authorization", "Bearer "+token))
		if !slices.Contains(authz.AllReasons, d.Reason) {
			t.Fatalf("unknown reason %q", d.Reason)
		}
		if d.Allowed {
			tok := strings.TrimSpace(token)
			if i := strings.LastIndexByte(tok, '.'); i < 0 || tok[:i] != signedPart {
				t.Fatalf("allowed a token whose signed part differs from the valid token's")
			}
		}
	})
}

// FuzzExtractCredential checks that credential extraction never panics and
// returns a credential only from the headers it was given.
func FuzzExtractCredential(f *testing.F) {
	f.Add("Bearer a.b.c", "")
	f.Add("ApiKey gth_x", "")
	f.Add("", "gth_y")
	f.Add("Bearer a, Bearer b", "k")
	f.Add("bearer\t", " ")
	f.Fuzz(func(t *testing.T, auth, key string) {
		var kv []string
		if auth != "" {
			kv = append(kv, "Authorization", auth)
		}
		if key != "" {
			kv = append(kv, "X-Api-Key", key)
		}
		c, reason := authz.ExtractCredential(req(kv...).Headers, "x-api-key")
		if reason != "" && c.Kind != "" {
			t.Fatalf("a credential came with a failure reason")
		}
		if c.Kind != "" && !strings.Contains(auth, c.Value) && !strings.Contains(key, c.Value) {
			t.Fatalf("the credential is not part of any header")
		}
		if c.Kind != "" && c.Value == "" {
			t.Fatalf("an empty credential was returned")
		}
	})
}
