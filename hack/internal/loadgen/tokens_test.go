package loadgen

import (
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Every token of the JWT workloads carries a signature of the published
// keys; the valid ones are valid for a run, the expired ones expired past
// any clock skew, and all are distinct.
func TestTheTokensOfEveryJWTWorkloadAreSignedByThePublishedKeys(t *testing.T) {
	now := time.Now()
	opts := FixtureOptions{Tokens: 3, Now: now}
	opts.defaults()
	ts, err := mintTokens(opts)
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(ts.jwks)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tc := range []struct {
		name    string
		tokens  []string
		alg     jwa.SignatureAlgorithm
		expired bool
	}{
		{"valid ES256", ts.es, jwa.ES256, false},
		{"valid RS256", ts.rs, jwa.RS256, false},
		{"expired RS256", ts.expired, jwa.RS256, true},
	} {
		if len(tc.tokens) != 3 {
			t.Fatalf("%s: %d tokens, want 3", tc.name, len(tc.tokens))
		}
		for i, tok := range tc.tokens {
			if seen[tok] {
				t.Fatalf("%s token %d repeats another token", tc.name, i)
			}
			seen[tok] = true
			msg, err := jws.Parse([]byte(tok))
			if err != nil || msg.Signatures()[0].ProtectedHeaders().Algorithm() != tc.alg {
				t.Fatalf("%s token %d: %v, algorithm %v", tc.name, i, err, msg.Signatures()[0].ProtectedHeaders().Algorithm())
			}
			parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithValidate(false))
			if err != nil {
				t.Fatalf("%s token %d does not verify against the published keys: %v", tc.name, i, err)
			}
			if exp := parsed.Expiration(); tc.expired != exp.Before(now.Add(-30*time.Minute)) {
				t.Errorf("%s token %d expires at %v (now %v)", tc.name, i, exp, now)
			}
		}
	}
}
