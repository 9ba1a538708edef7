package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr/testr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"google.golang.org/protobuf/proto"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// answer is everything a client sees of a check: the whole gRPC
// CheckResponse and the whole HTTP response (status, headers, body).
type answer struct {
	grpc    *authv3.CheckResponse
	status  int
	header  http.Header
	body    string
	allowed bool
	reason  string
}

func (a answer) equal(b answer) bool {
	return proto.Equal(a.grpc, b.grpc) && a.status == b.status && reflect.DeepEqual(a.header, b.header) && a.body == b.body
}

func ask(t *testing.T, core *server.Core, token string) answer {
	t.Helper()
	req := get("/orders/1", bearer(token))
	grpcResp, err := server.NewAuthorizationServer(core).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: req.method, Host: req.host, Path: req.path, Headers: map[string]string{"authorization": req.headers[0][1]},
		}},
	}})
	if err != nil {
		t.Fatalf("Check returned an error: %v", err)
	}
	hr := httptest.NewRequest(req.method, req.path, nil)
	hr.Host = req.host
	hr.Header.Set("Authorization", req.headers[0][1])
	rec := httptest.NewRecorder()
	core.HTTPHandler(server.HTTPOptions{}).ServeHTTP(rec, hr)
	a := answer{grpc: grpcResp, status: rec.Code, header: rec.Header(), body: rec.Body.String(), allowed: grpcResp.GetOkResponse() != nil}
	a.reason = rec.Header().Get("x-gatehouse-deny-reason")
	if a.allowed != (rec.Code == http.StatusOK) {
		t.Fatalf("gRPC and HTTP disagree: gRPC allowed %v, HTTP status %d", a.allowed, rec.Code)
	}
	return a
}

// forge replaces a token's signature with one made by another key of the
// same type over the very same header and payload: what an attacker who
// does not hold the issuer's key can send.
func forge(t *testing.T, token string, attacker *testfixture.Signer) string {
	t.Helper()
	input := token[:strings.LastIndexByte(token, '.')]
	var hdr struct{ Alg string }
	raw, err := base64.RawURLEncoding.DecodeString(input[:strings.IndexByte(input, '.')])
	if err != nil || json.Unmarshal(raw, &hdr) != nil {
		t.Fatalf("token header does not decode: %v", err)
	}
	signer, err := jws.NewSigner(jwa.SignatureAlgorithm(hdr.Alg))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Sign([]byte(input), attacker.Private)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// flipSignature changes one bit of the decoded signature.
func flipSignature(t *testing.T, token string) string {
	t.Helper()
	i := strings.LastIndexByte(token, '.')
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	sig[0] ^= 1
	return token[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

// The sidecar refuses what it can before any cryptography: expired and
// not-yet-valid tokens, unknown issuers and key IDs, a header algorithm
// that is not the key's, a wrong audience, malformed claims. This must not
// make it an oracle: for every claim set below, the answer to the token
// with a valid signature and to the same header and payload with a forged
// signature must be identical whenever either is a denial for a claim
// reason. Otherwise the forged token gets the one invalid_signature
// answer, the same whatever its claims, and only a valid signature turns
// it into an allow, or into a denial that speaks about the authenticated
// caller (a revoked source key, a missing scope).
func TestAForgedTokenLearnsNothingFromItsSignature(t *testing.T) {
	w := newWorld(t)
	now := w.clock.Now()
	attackerRS := testfixture.NewSigner(t, jwa.RS256)
	es := func(extra map[string]any) string {
		return w.es.Sign(t, testfixture.Claims(esIssuer, "user:alice", now, extra), nil)
	}
	rs := func(extra, hdr map[string]any) string {
		return w.rs.Sign(t, testfixture.Claims(rsIssuer, "partner:acme", now, extra), hdr)
	}
	read := map[string]any{"scope": "orders:read"}
	with := func(kv ...any) map[string]any {
		m := map[string]any{"scope": "orders:read"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name  string
		token string
		// claimReason is the reason both tokens must get, identically;
		// empty when the valid token passes every claim check.
		claimReason string
		// validAnswer is what the validly signed token gets when
		// claimReason is empty: "" for allow, else a post-authentication
		// denial reason.
		validAnswer string
	}{
		{name: "An ES256 token valid in every claim is allowed when genuine and refused as forged", token: es(read)},
		{name: "An RS256 token valid in every claim is allowed when genuine and refused as forged", token: rs(read, nil)},
		{name: "A token expired less than the skew ago is treated like a valid one", token: es(with("exp", now.Add(-10*time.Second).Unix(), "iat", now.Add(-time.Minute).Unix()))},
		{name: "An expired token is refused as expired, genuine or forged", token: es(with("exp", now.Add(-time.Hour).Unix(), "iat", now.Add(-2*time.Hour).Unix(), "nbf", nil)), claimReason: "token_expired"},
		{name: "An expired RS256 token is refused as expired, genuine or forged", token: rs(with("exp", now.Add(-time.Hour).Unix(), "iat", now.Add(-2*time.Hour).Unix(), "nbf", nil), nil), claimReason: "token_expired"},
		{name: "A token whose nbf is beyond the skew is not yet valid, genuine or forged", token: es(with("nbf", now.Add(5*time.Minute).Unix())), claimReason: "token_not_yet_valid"},
		{name: "A token issued in the future is not yet valid, genuine or forged", token: es(with("iat", now.Add(time.Hour).Unix())), claimReason: "token_not_yet_valid"},
		{name: "A token of an unknown issuer is refused as such, genuine or forged", token: w.es.Sign(t, testfixture.Claims("https://evil.example.com", "x", now, read), nil), claimReason: "unknown_issuer"},
		{name: "A token naming a kid the issuer does not publish is refused as such, genuine or forged", token: w.es.Sign(t, testfixture.Claims(esIssuer, "x", now, read), map[string]any{"kid": "no-such-key"}), claimReason: "unknown_kid"},
		{name: "A token whose header algorithm is not the key's is refused as such, genuine or forged", token: rs(read, map[string]any{"alg": "PS256"}), claimReason: "algorithm_not_allowed"},
		{name: "A token for another audience is refused as such, genuine or forged", token: es(with("aud", []string{"billing"})), claimReason: "wrong_audience"},
		{name: "A token without exp is refused as such, genuine or forged", token: es(with("exp", nil)), claimReason: "missing_exp"},
		{name: "A token with a string exp is malformed, genuine or forged", token: es(with("exp", "4102444800")), claimReason: "malformed_claims"},
		{name: "A token whose subject would inject a header is malformed, genuine or forged", token: es(with("sub", "alice\r\nx-admin: true")), claimReason: "malformed_claims"},
		{name: "A token exchanged from a revoked key is refused as revoked only when genuine", token: es(with(gatehousev1.ClaimAPIKeyID, w.revoked.Key.ID())), validAnswer: "token_revoked"},
		{name: "A token lacking the route's scope is refused for its scope only when genuine", token: es(map[string]any{"scope": "profile"}), validAnswer: "insufficient_scope"},
	}
	for _, cacheSize := range []int{0, -1} {
		name := map[int]string{0: "With the verification cache", -1: "Without the verification cache"}[cacheSize]
		t.Run(name, func(t *testing.T) {
			engine := authz.New(w.store, authz.Options{Clock: w.clock.Now, CacheSize: cacheSize, Log: testr.New(t)})
			core := server.NewCore(engine, w.store, metrics.New(w.store, w.clock.Now), server.Options{StripCredential: true, Clock: w.clock.Now, Log: testr.New(t)})
			var forgedAnswer *answer // the one answer of every forgery that passes the claim checks
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					attacker := w.attacker
					if strings.Contains(decodeHeader(t, tc.token), `"alg":"RS`) || strings.Contains(decodeHeader(t, tc.token), `"alg":"PS`) {
						attacker = attackerRS
					}
					genuine := ask(t, core, tc.token)
					// Twice: a cached genuine answer must not change what
					// a forgery gets either.
					genuineAgain := ask(t, core, tc.token)
					if !genuine.equal(genuineAgain) {
						t.Fatalf("the genuine token got two different answers")
					}
					for _, forged := range []string{forge(t, tc.token, attacker), flipSignature(t, tc.token)} {
						got := ask(t, core, forged)
						if tc.claimReason != "" {
							if genuine.reason != tc.claimReason {
								t.Fatalf("the genuine token was answered %q (allowed %v), want %q", genuine.reason, genuine.allowed, tc.claimReason)
							}
							if !got.equal(genuine) {
								t.Fatalf("a forged signature changed the answer to a claim denial: genuine %d %q, forged %d %q",
									genuine.status, genuine.reason, got.status, got.reason)
							}
							continue
						}
						if genuine.allowed != (tc.validAnswer == "") || genuine.reason != tc.validAnswer {
							t.Fatalf("the genuine token was answered allowed=%v %q, want %q", genuine.allowed, genuine.reason, tc.validAnswer)
						}
						if got.allowed || got.reason != "invalid_signature" || got.status != http.StatusUnauthorized {
							t.Fatalf("a forged token passing the claim checks was answered allowed=%v %d %q, want 401 invalid_signature", got.allowed, got.status, got.reason)
						}
						if forgedAnswer == nil {
							forgedAnswer = &got
						} else if !got.equal(*forgedAnswer) {
							t.Fatalf("two forgeries that pass the claim checks got different answers: their claims showed through")
						}
					}
				})
			}
		})
	}
}

func decodeHeader(t *testing.T, token string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(token[:strings.IndexByte(token, '.')])
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
