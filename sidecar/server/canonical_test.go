package server_test

import (
	"net/http/httptest"
	"testing"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// canonicalCase is one request of the canonical-matching table. grpcOnly
// marks requests that cannot be put in an HTTP/1.1 request line (a control
// character); Envoy can still send them over gRPC. netHTTPRefuses marks
// targets that Go's HTTP server itself answers with a bare 400 before the
// handler runs (an invalid escape): refused as well, without a reason.
type canonicalCase struct {
	name           string
	method         string
	path           string
	status         int
	reason         string
	grpcOnly       bool
	netHTTPRefuses bool
}

// canonicalPolicy protects /admin with a Deny rule, refuses DELETE, and
// lets everything else through anonymously: the shape in which a request
// that escapes the Deny rule reaches the admin handler through the broader
// allow rule.
func canonicalPolicy(pn *gatehousev1.PathNormalization) *gatehousev1.AuthPolicy {
	p := testfixture.Policy(ns, "canonical", testfixture.Epoch, nil,
		gatehousev1.Rule{Name: "admin", Match: gatehousev1.RuleMatch{Paths: []string{"/admin", "/admin/*"}}, Action: gatehousev1.ActionDeny},
		gatehousev1.Rule{Name: "no-delete", Match: gatehousev1.RuleMatch{Methods: []string{"DELETE"}}, Action: gatehousev1.ActionDeny},
		gatehousev1.Rule{Name: "public", Match: gatehousev1.RuleMatch{Paths: []string{"/*"}}, Action: gatehousev1.ActionAllowAnonymous},
	)
	p.Spec.PathNormalization = pn
	return p
}

func runCanonicalCases(t *testing.T, pol *gatehousev1.AuthPolicy, cases []canonicalCase) {
	t.Helper()
	clock := testfixture.NewClock()
	store := &snapshot.Store{}
	snap := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns, Clock: clock.Now}).Build(snapshot.Inputs{Policies: []*gatehousev1.AuthPolicy{pol}})
	if len(snap.Problems) > 0 {
		t.Fatalf("the test policy has problems: %v", snap.Problems)
	}
	store.Swap(snap)
	for _, tr := range serve(t, newCore(t, store, clock)) {
		t.Run(tr.name, func(t *testing.T) {
			for _, tc := range cases {
				if tc.grpcOnly && tr.name == "HTTP" {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					got := tr.send(t, request{method: tc.method, host: "api.example.com", path: tc.path})
					if tc.netHTTPRefuses && tr.name == "HTTP" {
						if got.status != 400 || got.reason != "" {
							t.Fatalf("%s %q: status %d reason %q, want net/http's bare 400", tc.method, tc.path, got.status, got.reason)
						}
						return
					}
					if got.status != tc.status || got.reason != tc.reason {
						t.Fatalf("%s %q: status %d reason %q, want %d %q", tc.method, tc.path, got.status, got.reason, tc.status, tc.reason)
					}
					if tc.status != 200 {
						checkDenyBody(t, got)
					}
				})
			}
		})
	}
}

// TestCanonicalMatchingOverGRPCAndHTTP sends every known way of dressing up
// /admin through both frontends: each is either matched as /admin (and
// denied by its rule) or refused with 400, never allowed by the broader
// rule below it.
func TestCanonicalMatchingOverGRPCAndHTTP(t *testing.T) {
	const allowed, denied, bad = 200, 403, 400
	runCanonicalCases(t, canonicalPolicy(nil), []canonicalCase{
		{name: "A public path is allowed by the broad rule.", method: "GET", path: "/public/index.html", status: allowed},
		{name: "The protected path is denied by its rule.", method: "GET", path: "/admin", status: denied, reason: "denied_by_rule"},
		{name: "The protected path with a query is denied by its rule.", method: "GET", path: "/admin?x=/public", status: denied, reason: "denied_by_rule"},
		{name: "A percent-encoded letter is decoded and denied by the rule.", method: "GET", path: "/%61dmin", status: denied, reason: "denied_by_rule"},
		{name: "Lower-case hex of an encoded letter is decoded and denied.", method: "GET", path: "/ad%6din/users", status: denied, reason: "denied_by_rule"},
		{name: "An encoded tilde is decoded and the path meets its rule.", method: "GET", path: "/%61dmin/%7eroot", status: denied, reason: "denied_by_rule"},
		{name: "An encoded colon is decoded like routers do and meets its rule.", method: "GET", path: "/admin/%3Aexport", status: denied, reason: "denied_by_rule"},
		{name: "An encoded slash is refused.", method: "GET", path: "/admin%2Fusers", status: bad, reason: "ambiguous_path"},
		{name: "A leading empty segment is refused.", method: "GET", path: "//admin", status: bad, reason: "ambiguous_path"},
		{name: "An inner empty segment is refused.", method: "GET", path: "/public//../admin", status: bad, reason: "ambiguous_path"},
		{name: "A path parameter is refused.", method: "GET", path: "/admin;x=1", status: bad, reason: "ambiguous_path"},
		{name: "A path parameter on a parent segment is refused.", method: "GET", path: "/admin;/users", status: bad, reason: "ambiguous_path"},
		{name: "A dot-dot segment is refused.", method: "GET", path: "/public/../admin", status: bad, reason: "ambiguous_path"},
		{name: "A dot segment is refused.", method: "GET", path: "/./admin", status: bad, reason: "ambiguous_path"},
		{name: "An encoded dot-dot segment is refused.", method: "GET", path: "/public/%2E%2e/admin", status: bad, reason: "ambiguous_path"},
		{name: "An encoded backslash is refused.", method: "GET", path: "/public%5c..%5cadmin", status: bad, reason: "ambiguous_path"},
		{name: "A backslash is refused.", method: "GET", path: "/public\\..\\admin", status: bad, reason: "ambiguous_path"},
		{name: "A double-encoded letter is refused.", method: "GET", path: "/%2561dmin", status: bad, reason: "ambiguous_path"},
		{name: "A double-encoded slash is refused.", method: "GET", path: "/public%252f..%252fadmin", status: bad, reason: "ambiguous_path"},
		{name: "An encoded NUL is refused.", method: "GET", path: "/admin%00.html", status: bad, reason: "invalid_path"},
		{name: "A malformed escape is refused.", method: "GET", path: "/%zzadmin", status: bad, reason: "invalid_path", netHTTPRefuses: true},
		{name: "An IIS-style %u escape is refused.", method: "GET", path: "/%u0061dmin", status: bad, reason: "invalid_path", netHTTPRefuses: true},
		{name: "A raw non-ASCII byte is refused.", method: "GET", path: "/adm\xc4\xb1n", status: bad, reason: "invalid_path"},
		{name: "A raw control character is refused.", method: "GET", path: "/admin\t", status: bad, reason: "invalid_path", grpcOnly: true},
		{name: "An absolute-form target is refused.", method: "GET", path: "http://api.example.com/admin", status: bad, reason: "invalid_path"},
		{name: "The asterisk form with GET is refused.", method: "GET", path: "*", status: bad, reason: "invalid_path"},
		{name: "The asterisk form with OPTIONS is matched, as the path *.", method: "OPTIONS", path: "*", status: denied, reason: "no_matching_rule"},
		{name: "An escaped semicolon stays escaped and is not the protected path.", method: "GET", path: "/admin%3Bx", status: allowed},
		{name: "A Deny rule for DELETE denies an upper-case DELETE.", method: "DELETE", path: "/public/x", status: denied, reason: "denied_by_rule"},
		{name: "A lower-case method is upper-cased and denied by the DELETE rule.", method: "delete", path: "/public/x", status: denied, reason: "denied_by_rule"},
		{name: "A mixed-case method is upper-cased and denied by the DELETE rule.", method: "DeLeTe", path: "/public/x", status: denied, reason: "denied_by_rule"},
		{name: "A method that is not a token is refused.", method: "DELETE /x", path: "/public/x", status: bad, reason: "invalid_method", grpcOnly: true},
		{name: "An empty method is refused.", method: "", path: "/public/x", status: bad, reason: "invalid_method", grpcOnly: true},
	})
}

// TestPathNormalizationOptInOverGRPCAndHTTP: a policy that opts in matches
// "//" and ";" paths in their merged and stripped form, so they meet the
// protected path's rule; what stays ambiguous is still refused.
func TestPathNormalizationOptInOverGRPCAndHTTP(t *testing.T) {
	const allowed, denied, bad = 200, 403, 400
	runCanonicalCases(t, canonicalPolicy(&gatehousev1.PathNormalization{
		EmptySegments: gatehousev1.EmptySegmentsMerge, PathParameters: gatehousev1.PathParametersStrip,
	}), []canonicalCase{
		{name: "Merged slashes meet the protected path's rule.", method: "GET", path: "//admin", status: denied, reason: "denied_by_rule"},
		{name: "Merged inner slashes meet the protected path's rule.", method: "GET", path: "/admin//users", status: denied, reason: "denied_by_rule"},
		{name: "A stripped parameter meets the protected path's rule.", method: "GET", path: "/admin;jsessionid=1", status: denied, reason: "denied_by_rule"},
		{name: "A stripped parameter on a parent segment meets the rule.", method: "GET", path: "/admin;x/users", status: denied, reason: "denied_by_rule"},
		{name: "A dot-dot segment behind a parameter is still refused.", method: "GET", path: "/public/..;x/admin", status: bad, reason: "ambiguous_path"},
		{name: "A dot-dot segment is still refused.", method: "GET", path: "/public//../admin", status: bad, reason: "ambiguous_path"},
		{name: "An encoded slash is still refused.", method: "GET", path: "/admin%2f", status: bad, reason: "ambiguous_path"},
		{name: "A public path with parameters is allowed.", method: "GET", path: "/public;v=2//x", status: allowed},
	})
}

// TestForwardedHeadersAreCanonicalisedAndMustBeSingle: behind nginx the
// method and target come from X-Forwarded-*; they go through the same
// canonicaliser, and a repeated one is refused rather than guessed.
func TestForwardedHeadersAreCanonicalisedAndMustBeSingle(t *testing.T) {
	clock := testfixture.NewClock()
	store := &snapshot.Store{}
	store.Swap(snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns, Clock: clock.Now}).Build(snapshot.Inputs{Policies: []*gatehousev1.AuthPolicy{canonicalPolicy(nil)}}))
	hs := httptest.NewServer(newCore(t, store, clock).HTTPHandler(server.HTTPOptions{TrustForwardedHeaders: true}))
	t.Cleanup(hs.Close)
	cases := []struct {
		name    string
		headers [][2]string
		status  int
		reason  string
	}{
		{"A forwarded public target is allowed.", hdrs("X-Forwarded-Uri", "/public/x"), 200, ""},
		{"A forwarded encoded letter is decoded and denied by the rule.", hdrs("X-Forwarded-Uri", "/%61dmin"), 403, "denied_by_rule"},
		{"A forwarded empty segment is refused.", hdrs("X-Forwarded-Uri", "//admin"), 400, "ambiguous_path"},
		{"A forwarded lower-case method is upper-cased.", hdrs("X-Forwarded-Method", "delete", "X-Forwarded-Uri", "/public/x"), 403, "denied_by_rule"},
		{"A repeated forwarded target is refused.", hdrs("X-Forwarded-Uri", "/public/x", "X-Forwarded-Uri", "/admin"), 400, "invalid_path"},
		{"A repeated forwarded method is refused.", hdrs("X-Forwarded-Method", "GET", "X-Forwarded-Method", "DELETE", "X-Forwarded-Uri", "/public/x"), 400, "invalid_path"},
		{"A repeated forwarded host is refused.", hdrs("X-Forwarded-Host", "a.example.com", "X-Forwarded-Host", "b.example.com", "X-Forwarded-Uri", "/public/x"), 400, "invalid_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := sendRawHTTP(t, hs.Listener.Addr().String(), request{method: "GET", host: "api.example.com", path: "/_gatehouse_auth", headers: tc.headers})
			_ = resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("x-gatehouse-deny-reason") != tc.reason {
				t.Fatalf("status %d reason %q, want %d %q", resp.StatusCode, resp.Header.Get("x-gatehouse-deny-reason"), tc.status, tc.reason)
			}
		})
	}
}
