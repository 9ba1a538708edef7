package authz_test

import (
	"sync"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// A rule's claims are read from every claim of the token, decoded on first
// use of a verification and shared by the checks that use it afterwards
// (cache hits, concurrently).
func TestRuleClaimsAreReadFromEveryClaimOfTheToken(t *testing.T) {
	signer := testfixture.NewSigner(t, jwa.ES256)
	e := newEnv(t, signer)
	e.policy.Spec.Rules = []gatehousev1.Rule{{Name: "admins", Match: gatehousev1.RuleMatch{Paths: []string{"/*"}},
		Claims: []gatehousev1.ClaimRequirement{{Name: "groups", Values: []string{"admins"}}, {Name: "tier", Values: []string{"gold"}}}}}
	e.rebuild()
	sign := func(extra map[string]any) string {
		return signer.Sign(t, testfixture.Claims(issuer, "alice", e.clock.Now(), extra), nil)
	}
	cases := []struct {
		name  string
		token string
		want  authz.Reason
	}{
		{"A token with both claims, one in a list, is allowed", sign(map[string]any{"groups": []string{"dev", "admins"}, "tier": "gold"}), authz.Authenticated},
		{"A token lacking one claim is denied", sign(map[string]any{"groups": "admins"}), authz.ClaimsNotSatisfied},
		{"A token with another value is denied", sign(map[string]any{"groups": "admins", "tier": "silver"}), authz.ClaimsNotSatisfied},
		{"A token whose claim is not a string or list of strings is denied", sign(map[string]any{"groups": "admins", "tier": 1}), authz.ClaimsNotSatisfied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			got := make([]authz.Reason, 8)
			for i := range got {
				wg.Go(func() { got[i] = e.engine.Check(req("Authorization", "Bearer "+tc.token)).Reason })
			}
			wg.Wait()
			for _, r := range got {
				if r != tc.want {
					t.Fatalf("got %v, want %s from every check", got, tc.want)
				}
			}
		})
	}
}
