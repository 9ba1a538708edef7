package server_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

const (
	ns       = "shop"
	esIssuer = "https://issuer.example.com"
	rsIssuer = "https://rs.example.com"
)

// world is the state every case of the suite runs against.
type world struct {
	clock                             *testfixture.Clock
	active, revoked, expired, rotated *testfixture.APIKey
	limited                           *testfixture.APIKey
	previous                          apikeyformat.Key // the rotated record's key in grace
	gracePassed                       apikeyformat.Key // a key whose grace period is over
	es, rs, attacker                  *testfixture.Signer
	rsPublicPEM                       []byte
	store                             *snapshot.Store
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{clock: testfixture.NewClock(), store: &snapshot.Store{}}
	now := w.clock.Now()
	past, soon := now.Add(-time.Hour), now.Add(time.Hour)

	w.active = testfixture.NewAPIKey(t, ns, "billing", "service:billing", "orders:read")
	w.revoked = testfixture.NewAPIKey(t, ns, "old", "service:old", "orders:read")
	w.revoked.Record.State = apikeyformat.StateRevoked
	w.expired = testfixture.NewAPIKey(t, ns, "expired", "service:expired", "orders:read")
	w.expired.Record.ExpiresAt = &past
	w.limited = testfixture.NewAPIKey(t, ns, "limited", "service:limited", "orders:read")
	w.limited.Record.RateLimit = &apikeyformat.RecordRateLimit{RequestsPerSecond: 1, Burst: 1}
	// A rotated record: a current key, a previous key in its grace period
	// and an older one whose grace is over.
	w.rotated = testfixture.NewAPIKey(t, ns, "rotated", "service:rotated", "orders:read")
	w.previous = testfixture.NewAPIKey(t, ns, "x", "x").Key
	w.gracePassed = testfixture.NewAPIKey(t, ns, "y", "y").Key
	w.rotated.Record.Keys = append(w.rotated.Record.Keys,
		apikeyformat.RecordKey{KeyID: w.previous.ID(), SHA256: w.previous.Hash(), NotAfter: &soon},
		apikeyformat.RecordKey{KeyID: w.gracePassed.ID(), SHA256: w.gracePassed.Hash(), NotAfter: &past})

	w.es = testfixture.NewSigner(t, jwa.ES256)
	w.rs = testfixture.NewSigner(t, jwa.RS256)
	w.attacker = testfixture.NewSigner(t, jwa.ES256)
	der, err := x509.MarshalPKIXPublicKey(w.rs.Private.Public())
	if err != nil {
		t.Fatal(err)
	}
	w.rsPublicPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	sks := []*gatehousev1.SigningKey{testfixture.SigningKey(t, ns, "platform", esIssuer, w.es)}
	var apiKeys []*gatehousev1.APIKey
	for _, k := range []*testfixture.APIKey{w.active, w.revoked, w.expired, w.limited, w.rotated} {
		apiKeys = append(apiKeys, k.Object())
	}
	skew := metav1.Duration{Duration: 30 * time.Second}
	issuers := []gatehousev1.TrustedIssuer{
		{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}, Audiences: []string{"orders"}, ClockSkew: &skew},
		{Name: "partner", Issuer: rsIssuer, JWKS: &gatehousev1.StaticJWKS{Inline: testfixture.JWKS(t, w.rs)}, Audiences: []string{"orders"}},
	}
	rules := []gatehousev1.Rule{
		{Name: "public", Match: gatehousev1.RuleMatch{Paths: []string{"/public/*"}}, Action: gatehousev1.ActionAllowAnonymous},
		{Name: "admin", Match: gatehousev1.RuleMatch{Paths: []string{"/admin/*"}}, Action: gatehousev1.ActionDeny},
		{Name: "jwt-only", Match: gatehousev1.RuleMatch{Paths: []string{"/jwt/*"}}, Credentials: []gatehousev1.CredentialType{gatehousev1.CredentialJWT}},
		{Name: "claims", Match: gatehousev1.RuleMatch{Paths: []string{"/claims/*"}}, Claims: []gatehousev1.ClaimRequirement{{Name: "groups", Values: []string{"admins"}}}},
		{Name: "orders-write", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}, Methods: []string{"POST"}}, Scopes: []string{"orders:write"}},
		{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}, Hosts: []string{"api.example.com", "*.example.org"}}, Scopes: []string{"orders:read"}},
	}
	pol := testfixture.Policy(ns, "main", now.Add(-time.Hour), issuers, rules...)
	b := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns, Clock: w.clock.Now})
	snap := b.Build(snapshot.Inputs{APIKeys: apiKeys, SigningKeys: sks, Policies: []*gatehousev1.AuthPolicy{pol}})
	if len(snap.Problems) > 0 {
		t.Fatalf("the test state has problems: %v", snap.Problems)
	}
	w.store.Swap(snap)
	return w
}

// keyWithID returns a well-formed key (valid checksum) with the given key
// ID and a different secret.
func keyWithID(t *testing.T, id string) apikeyformat.Key {
	t.Helper()
	enc := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	idBytes, err := enc.DecodeString(id)
	if err != nil {
		t.Fatal(err)
	}
	k, err := apikeyformat.Generate(io.MultiReader(strings.NewReader(string(idBytes)), rand.Reader))
	if err != nil || k.ID() != id {
		t.Fatalf("forging a key with ID %s: %v", id, err)
	}
	return k
}

func hdrs(kv ...string) [][2]string {
	var out [][2]string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, [2]string{kv[i], kv[i+1]})
	}
	return out
}

func bearer(tok string) [][2]string { return hdrs("Authorization", "Bearer "+tok) }

func get(path string, h [][2]string) request {
	return request{method: "GET", host: "api.example.com", path: path, headers: h}
}

type checkCase struct {
	name    string
	req     request
	repeat  int // send this many times first (rate limits)
	status  int
	reason  string
	set     map[string]string // allow: identity headers set (exactly)
	remove  []string          // allow: headers removed (exactly)
	chall   string            // deny: WWW-Authenticate (exactly)
	retryAt string
}

var allIdentity = []string{"x-gatehouse-credential", "x-gatehouse-issuer", "x-gatehouse-key-id", "x-gatehouse-scopes", "x-gatehouse-subject", "x-gatehouse-token-id"}

func TestCheckOverGRPCAndHTTP(t *testing.T) {
	w := newWorld(t)
	now := w.clock.Now()
	core := newCore(t, w.store, w.clock)
	esClaims := func(extra map[string]any) map[string]any {
		return testfixture.Claims(esIssuer, "user:alice", now, extra)
	}
	esTok := func(extra map[string]any) string { return w.es.Sign(t, esClaims(extra), nil) }
	validES := esTok(map[string]any{"scope": "orders:read orders:write"})
	const bearerChallenge = `Bearer realm="gatehouse", error="invalid_token"`
	const keyChallenge = `ApiKey realm="gatehouse", error="invalid_key"`

	cases := []checkCase{
		{
			name:   "A valid API key in x-api-key with the required scope is allowed with identity headers, and the key is stripped",
			req:    get("/orders/42?verbose=1", hdrs("x-api-key", w.active.Key.Plaintext())),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "service:billing", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "apikey", "x-gatehouse-key-id": w.active.Key.ID()},
			remove: []string{"x-api-key", "x-gatehouse-issuer", "x-gatehouse-token-id"},
		},
		{
			name:   "A valid API key in Authorization: ApiKey is allowed and Authorization is stripped",
			req:    get("/orders/42", hdrs("Authorization", "ApiKey "+w.active.Key.Plaintext())),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "service:billing", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "apikey", "x-gatehouse-key-id": w.active.Key.ID()},
			remove: []string{"authorization", "x-gatehouse-issuer", "x-gatehouse-token-id"},
		},
		{
			name:   "A previous key inside its rotation grace period is allowed",
			req:    get("/orders/1", hdrs("x-api-key", w.previous.Plaintext())),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "service:rotated", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "apikey", "x-gatehouse-key-id": w.previous.ID()},
			remove: []string{"x-api-key", "x-gatehouse-issuer", "x-gatehouse-token-id"},
		},
		{
			name:   "A valid ES256 token from the SigningKey JWKS is allowed with issuer and token ID headers",
			req:    get("/orders/1", bearer(validES)),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "user:alice", "x-gatehouse-scopes": "orders:read orders:write",
				"x-gatehouse-credential": "jwt", "x-gatehouse-issuer": esIssuer, "x-gatehouse-token-id": "tok-1"},
			remove: []string{"authorization", "x-gatehouse-key-id"},
		},
		{
			name:   "A valid RS256 token from an inline JWKS is allowed, with the scp claim as scopes",
			req:    get("/orders/1", bearer(w.rs.Sign(t, testfixture.Claims(rsIssuer, "partner:acme", now, map[string]any{"scp": []string{"orders:read"}, "jti": nil}), nil))),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "partner:acme", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "jwt", "x-gatehouse-issuer": rsIssuer},
			remove: []string{"authorization", "x-gatehouse-key-id", "x-gatehouse-token-id"},
		},
		{
			name:   "A token exchanged from an active API key is allowed and names the key",
			req:    get("/orders/1", bearer(esTok(map[string]any{"scope": "orders:read", gatehousev1.ClaimAPIKeyID: w.active.Key.ID()}))),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "user:alice", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "jwt", "x-gatehouse-issuer": esIssuer, "x-gatehouse-token-id": "tok-1", "x-gatehouse-key-id": w.active.Key.ID()},
			remove: []string{"authorization"},
		},
		{
			name:   "The Bearer scheme is matched case-insensitively",
			req:    get("/orders/1", hdrs("authorization", "bEaReR "+validES)),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "user:alice", "x-gatehouse-scopes": "orders:read orders:write",
				"x-gatehouse-credential": "jwt", "x-gatehouse-issuer": esIssuer, "x-gatehouse-token-id": "tok-1"},
			remove: []string{"authorization", "x-gatehouse-key-id"},
		},
		{
			name:   "An anonymous request to an AllowAnonymous path is allowed and every identity header is removed",
			req:    get("/public/index.html", hdrs("x-gatehouse-subject", "admin", "x-gatehouse-scopes", "everything")),
			status: 200, set: map[string]string{}, remove: allIdentity,
		},
		{
			name: "Spoofed identity headers are overwritten or removed",
			req: get("/orders/1", hdrs("x-api-key", w.active.Key.Plaintext(), "x-gatehouse-subject", "admin",
				"x-gatehouse-issuer", "https://evil.example.com", "X-Gatehouse-Token-Id", "forged")),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "service:billing", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "apikey", "x-gatehouse-key-id": w.active.Key.ID()},
			remove: []string{"x-api-key", "x-gatehouse-issuer", "x-gatehouse-token-id"},
		},
		{
			name:   "A host wildcard matches a subdomain with a port",
			req:    request{method: "GET", host: "a.b.example.org:8443", path: "/orders/1", headers: hdrs("x-api-key", w.active.Key.Plaintext())},
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "service:billing", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "apikey", "x-gatehouse-key-id": w.active.Key.ID()},
			remove: []string{"x-api-key", "x-gatehouse-issuer", "x-gatehouse-token-id"},
		},
		{
			name:   "A token carrying a required claim value is allowed",
			req:    get("/claims/x", bearer(esTok(map[string]any{"groups": []string{"dev", "admins"}}))),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "user:alice", "x-gatehouse-credential": "jwt",
				"x-gatehouse-issuer": esIssuer, "x-gatehouse-token-id": "tok-1"},
			remove: []string{"authorization", "x-gatehouse-key-id", "x-gatehouse-scopes"},
		},
		{
			name:   "A token expired less than the clock skew ago is still allowed",
			req:    get("/orders/1", bearer(esTok(map[string]any{"scope": "orders:read", "exp": now.Add(-10 * time.Second).Unix(), "iat": now.Add(-time.Minute).Unix()}))),
			status: 200,
			set: map[string]string{"x-gatehouse-subject": "user:alice", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "jwt", "x-gatehouse-issuer": esIssuer, "x-gatehouse-token-id": "tok-1"},
			remove: []string{"authorization", "x-gatehouse-key-id"},
		},

		// Policy denials.
		{name: "A request without credential is refused with both challenges", req: get("/orders/1", nil), status: 401, reason: "missing_credential",
			chall: `Bearer realm="gatehouse", ApiKey realm="gatehouse"`},
		{name: "A path no rule matches is denied", req: get("/nowhere", hdrs("x-api-key", w.active.Key.Plaintext())), status: 403, reason: "no_matching_rule"},
		{name: "A host no rule matches is denied", req: request{method: "GET", host: "example.org", path: "/orders/1", headers: hdrs("x-api-key", w.active.Key.Plaintext())}, status: 403, reason: "no_matching_rule"},
		{name: "A Deny rule denies even a valid key", req: get("/admin/users", hdrs("x-api-key", w.active.Key.Plaintext())), status: 403, reason: "denied_by_rule"},
		{name: "A dot-segment path cannot escape an anonymous prefix", req: get("/public/../orders/1", nil), status: 400, reason: "ambiguous_path"},
		{name: "An encoded dot-segment path is refused", req: get("/public/%2e%2e/orders/1", nil), status: 400, reason: "ambiguous_path"},
		{name: "An API key on a JWT-only route is not accepted", req: get("/jwt/x", hdrs("x-api-key", w.active.Key.Plaintext())), status: 401, reason: "credential_not_accepted",
			chall: `Bearer realm="gatehouse", error="invalid_request"`},
		{name: "An API key lacking the rule's scope gets 403 insufficient_scope with the ApiKey scheme",
			req:    request{method: "POST", host: "api.example.com", path: "/orders/1", headers: hdrs("x-api-key", w.active.Key.Plaintext())},
			status: 403, reason: "insufficient_scope", chall: `ApiKey realm="gatehouse", error="insufficient_scope", scope="orders:write"`},
		{name: "A token lacking the rule's scope gets 403 insufficient_scope with the Bearer scheme",
			req:    get("/orders/1", bearer(esTok(map[string]any{"scope": "profile"}))),
			status: 403, reason: "insufficient_scope", chall: `Bearer realm="gatehouse", error="insufficient_scope", scope="orders:read"`},
		{name: "An API key fails a rule that requires claims", req: get("/claims/x", hdrs("x-api-key", w.active.Key.Plaintext())), status: 403, reason: "claims_not_satisfied",
			chall: `ApiKey realm="gatehouse", error="insufficient_scope"`},
		{name: "A token without the required claim value is denied", req: get("/claims/x", bearer(esTok(map[string]any{"groups": "dev"}))), status: 403, reason: "claims_not_satisfied",
			chall: `Bearer realm="gatehouse", error="insufficient_scope"`},
		{name: "Two Authorization headers are refused as ambiguous", req: get("/orders/1", hdrs("Authorization", "Bearer "+validES, "Authorization", "Bearer "+validES)),
			status: 401, reason: "multiple_credentials", chall: `Bearer realm="gatehouse", error="invalid_request"`},
		{name: "An API key and a bearer token together are refused as ambiguous", req: get("/orders/1", hdrs("Authorization", "Bearer "+validES, "x-api-key", w.active.Key.Plaintext())),
			status: 401, reason: "multiple_credentials", chall: `Bearer realm="gatehouse", error="invalid_request"`},
		{name: "Two x-api-key headers are refused as ambiguous", req: get("/orders/1", hdrs("x-api-key", w.active.Key.Plaintext(), "x-api-key", w.revoked.Key.Plaintext())),
			status: 401, reason: "multiple_credentials", chall: `Bearer realm="gatehouse", error="invalid_request"`},
		{name: "An invalid credential is refused even on an anonymous route", req: get("/public/x", hdrs("x-api-key", "gth_nope")), status: 401, reason: "malformed_api_key", chall: keyChallenge},
		{name: "Too many header fields are refused", req: get("/orders/1", manyHeaders(200)), status: 431, reason: "too_many_headers"},

		// API key denials.
		{name: "A string that is not an API key is malformed", req: get("/orders/1", hdrs("x-api-key", "hunter2")), status: 401, reason: "malformed_api_key", chall: keyChallenge},
		{name: "An API key with a wrong checksum is malformed", req: get("/orders/1", hdrs("x-api-key", flipLast(w.active.Key.Plaintext()))), status: 401, reason: "malformed_api_key", chall: keyChallenge},
		{name: "A well-formed key whose ID no record lists is unknown", req: get("/orders/1", hdrs("x-api-key", testfixture.NewAPIKey(t, ns, "z", "z").Key.Plaintext())), status: 401, reason: "unknown_api_key", chall: keyChallenge},
		{name: "A forged key with a known ID and another secret is wrong", req: get("/orders/1", hdrs("x-api-key", keyWithID(t, w.active.Key.ID()).Plaintext())), status: 401, reason: "wrong_api_key", chall: keyChallenge},
		{name: "A revoked key is denied", req: get("/orders/1", hdrs("x-api-key", w.revoked.Key.Plaintext())), status: 401, reason: "api_key_revoked", chall: keyChallenge},
		{name: "An expired key is denied", req: get("/orders/1", hdrs("x-api-key", w.expired.Key.Plaintext())), status: 401, reason: "api_key_expired", chall: keyChallenge},
		{name: "A previous key past its grace period is denied", req: get("/orders/1", hdrs("x-api-key", w.gracePassed.Plaintext())), status: 401, reason: "api_key_grace_period_over", chall: keyChallenge},
		{name: "A key over its rate limit gets 429 with Retry-After", req: get("/orders/1", hdrs("x-api-key", w.limited.Key.Plaintext())), repeat: 1, status: 429, reason: "rate_limited", retryAt: "1"},

		// JWT denials, including the hostile-token suite.
		{name: "A token exchanged from a revoked API key is denied", req: get("/orders/1", bearer(esTok(map[string]any{"scope": "orders:read", gatehousev1.ClaimAPIKeyID: w.revoked.Key.ID()}))), status: 401, reason: "token_revoked", chall: bearerChallenge},
		{name: "A token exchanged from a key no record lists is denied", req: get("/orders/1", bearer(esTok(map[string]any{gatehousev1.ClaimAPIKeyID: "aaaaaaaaaaaaaaaa"}))), status: 401, reason: "token_revoked", chall: bearerChallenge},
		{name: "An expired token is denied", req: get("/orders/1", bearer(esTok(map[string]any{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix(), "nbf": nil}))), status: 401, reason: "token_expired", chall: bearerChallenge},
		{name: "A token whose nbf is beyond the skew is not yet valid", req: get("/orders/1", bearer(esTok(map[string]any{"nbf": now.Add(5 * time.Minute).Unix()}))), status: 401, reason: "token_not_yet_valid", chall: bearerChallenge},
		{name: "A token issued in the future beyond the skew is not yet valid", req: get("/orders/1", bearer(esTok(map[string]any{"iat": now.Add(time.Hour).Unix()}))), status: 401, reason: "token_not_yet_valid", chall: bearerChallenge},
		{name: "A token without exp is denied", req: get("/orders/1", bearer(esTok(map[string]any{"exp": nil}))), status: 401, reason: "missing_exp", chall: bearerChallenge},
		{name: "A signed token whose sub would inject a header is refused", req: get("/orders/1", bearer(esTok(map[string]any{"sub": "alice\r\nx-admin: true"}))), status: 401, reason: "malformed_claims", chall: bearerChallenge},
		{name: "A signed token whose scope holds a control character is refused", req: get("/orders/1", bearer(esTok(map[string]any{"scope": "orders:read\x00"}))), status: 401, reason: "malformed_claims", chall: bearerChallenge},
		{name: "A token with a string exp is malformed", req: get("/orders/1", bearer(esTok(map[string]any{"exp": "4102444800"}))), status: 401, reason: "malformed_claims", chall: bearerChallenge},
		{name: "A token from an untrusted issuer is denied", req: get("/orders/1", bearer(w.es.Sign(t, testfixture.Claims("https://evil.example.com", "x", now, nil), nil))), status: 401, reason: "unknown_issuer", chall: bearerChallenge},
		{name: "A token for another audience is denied", req: get("/orders/1", bearer(esTok(map[string]any{"aud": []string{"billing"}}))), status: 401, reason: "wrong_audience", chall: bearerChallenge},
		{name: "A token without aud is denied when audiences are configured", req: get("/orders/1", bearer(esTok(map[string]any{"aud": nil}))), status: 401, reason: "wrong_audience", chall: bearerChallenge},
		{name: "A token with an unknown kid is denied", req: get("/orders/1", bearer(w.es.Sign(t, esClaims(nil), map[string]any{"kid": "no-such-key"}))), status: 401, reason: "unknown_kid", chall: bearerChallenge},
		{name: "A token without kid is denied", req: get("/orders/1", bearer(w.es.Sign(t, esClaims(nil), map[string]any{"kid": nil}))), status: 401, reason: "unknown_kid", chall: bearerChallenge},
		{name: "A kid with a path traversal finds no key", req: get("/orders/1", bearer(w.es.Sign(t, esClaims(nil), map[string]any{"kid": "../../../../dev/null"}))), status: 401, reason: "unknown_kid", chall: bearerChallenge},
		{name: "A kid with SQL in it finds no key", req: get("/orders/1", bearer(w.es.Sign(t, esClaims(nil), map[string]any{"kid": "x' OR '1'='1"}))), status: 401, reason: "unknown_kid", chall: bearerChallenge},
		{name: "A tampered payload fails the signature", req: get("/orders/1", bearer(tamper(t, validES, esClaims(map[string]any{"sub": "user:root", "scope": "orders:read"})))), status: 401, reason: "invalid_signature", chall: bearerChallenge},
		{name: "A stripped signature is malformed", req: get("/orders/1", bearer(strip(validES))), status: 401, reason: "malformed_token", chall: bearerChallenge},
		{name: "A token signed by an attacker key under a trusted kid fails the signature", req: get("/orders/1", bearer(signAs(t, w.attacker, w.es.KeyID, esClaims(nil), nil))), status: 401, reason: "invalid_signature", chall: bearerChallenge},
		{name: "A jku header is ignored: the attacker's key set is never fetched", req: get("/orders/1", bearer(signAs(t, w.attacker, w.es.KeyID, esClaims(nil), map[string]any{"jku": "https://evil.example.com/jwks.json"}))), status: 401, reason: "invalid_signature", chall: bearerChallenge},
		{name: "An x5u header is ignored", req: get("/orders/1", bearer(signAs(t, w.attacker, w.es.KeyID, esClaims(nil), map[string]any{"x5u": "https://evil.example.com/cert.pem"}))), status: 401, reason: "invalid_signature", chall: bearerChallenge},
		{name: "An embedded jwk header is ignored", req: get("/orders/1", bearer(signAs(t, w.attacker, w.es.KeyID, esClaims(nil), map[string]any{"jwk": w.attacker.PublicJWK(t)}))), status: 401, reason: "invalid_signature", chall: bearerChallenge},
		{name: "An embedded jwk with its own kid finds no trusted key", req: get("/orders/1", bearer(w.attacker.Sign(t, esClaims(nil), map[string]any{"jwk": w.attacker.PublicJWK(t)}))), status: 401, reason: "unknown_kid", chall: bearerChallenge},
		{name: "RS256 to HS256 key confusion with the public key as the secret is refused", req: get("/orders/1", bearer(testfixture.SignHMAC(t, jwa.HS256, w.rsPublicPEM, map[string]any{"kid": w.rs.KeyID}, testfixture.Claims(rsIssuer, "x", now, nil)))), status: 401, reason: "algorithm_not_allowed", chall: bearerChallenge},
		{name: "A PS256 header against an RS256 key is refused", req: get("/orders/1", bearer(signAs(t, w.rs, w.rs.KeyID, testfixture.Claims(rsIssuer, "x", now, nil), map[string]any{"alg": "PS256"}))), status: 401, reason: "algorithm_not_allowed", chall: bearerChallenge},
		{name: "A token of more than 8 KiB is refused before parsing", req: get("/orders/1", bearer(esTok(map[string]any{"pad": strings.Repeat("a", 9000)}))), status: 401, reason: "token_too_large", chall: bearerChallenge},
		{name: "A token with invalid base64 is malformed", req: get("/orders/1", bearer("eyJ!!!.eyJ.c2ln")), status: 401, reason: "malformed_token", chall: bearerChallenge},
		{name: "A token with padded base64 is malformed", req: get("/orders/1", bearer(pad(validES))), status: 401, reason: "malformed_token", chall: bearerChallenge},
		{name: "A token with five parts (JWE) is malformed", req: get("/orders/1", bearer(validES+".a.b")), status: 401, reason: "malformed_token", chall: bearerChallenge},
		{name: "A header that is not JSON is malformed", req: get("/orders/1", bearer(base64.RawURLEncoding.EncodeToString([]byte("not json"))+"."+strings.SplitN(validES, ".", 2)[1])), status: 401, reason: "malformed_token", chall: bearerChallenge},
		{name: "A token with a crit header is refused", req: get("/orders/1", bearer(w.es.Sign(t, esClaims(nil), map[string]any{"crit": []string{"b64"}, "b64": false}))), status: 401, reason: "malformed_token", chall: bearerChallenge},
		{name: "An empty bearer token is malformed", req: get("/orders/1", hdrs("Authorization", "Bearer ")), status: 401, reason: "malformed_token", chall: bearerChallenge},
	}
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		tok := testfixture.B64JSON(t, map[string]any{"alg": alg, "kid": w.es.KeyID}) + "." + testfixture.B64JSON(t, esClaims(nil))
		cases = append(cases,
			checkCase{name: "An unsigned token with alg " + alg + " and a junk signature is refused", req: get("/orders/1", bearer(tok+".c2ln")), status: 401, reason: "algorithm_not_allowed", chall: bearerChallenge},
			checkCase{name: "An unsigned token with alg " + alg + " and no signature is malformed", req: get("/orders/1", bearer(tok+".")), status: 401, reason: "malformed_token", chall: bearerChallenge},
		)
	}

	for _, tr := range serve(t, core) {
		t.Run(tr.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					for range tc.repeat {
						tr.send(t, tc.req)
					}
					got := tr.send(t, tc.req)
					if got.status != tc.status {
						t.Fatalf("status %d (reason %q), want %d (%q)", got.status, got.reason, tc.status, tc.reason)
					}
					if tc.status == 200 {
						if !reflect.DeepEqual(got.set, tc.set) {
							t.Errorf("identity headers %v, want %v", got.set, tc.set)
						}
						want := append([]string(nil), tc.remove...)
						sort.Strings(want)
						if !reflect.DeepEqual(got.remove, want) {
							t.Errorf("headers removed %v, want %v", got.remove, want)
						}
						return
					}
					if got.reason != tc.reason {
						t.Errorf("reason %q, want %q", got.reason, tc.reason)
					}
					if got.challenge != tc.chall {
						t.Errorf("WWW-Authenticate %q, want %q", got.challenge, tc.chall)
					}
					if got.retryAfter != tc.retryAt {
						t.Errorf("Retry-After %q, want %q", got.retryAfter, tc.retryAt)
					}
					checkDenyBody(t, got)
				})
			}
		})
	}
}

func manyHeaders(n int) [][2]string {
	var out [][2]string
	for i := range n {
		out = append(out, [2]string{"x-filler-" + strings.Repeat("a", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)), "v"})
	}
	return out
}

func flipLast(s string) string {
	last := s[len(s)-1]
	repl := byte('a')
	if last == 'a' {
		repl = 'b'
	}
	return s[:len(s)-1] + string(repl)
}

// tamper replaces a token's payload, keeping header and signature.
func tamper(t *testing.T, tok string, claims map[string]any) string {
	parts := strings.Split(tok, ".")
	return parts[0] + "." + testfixture.B64JSON(t, claims) + "." + parts[2]
}

func strip(tok string) string { return tok[:strings.LastIndexByte(tok, '.')+1] }

// pad adds base64 padding to the payload part.
func pad(tok string) string {
	parts := strings.Split(tok, ".")
	return parts[0] + "." + parts[1] + "==." + parts[2]
}

// signAs signs with s's private key but names kid in the header.
func signAs(t *testing.T, s *testfixture.Signer, kid string, claims, hdr map[string]any) string {
	h := map[string]any{"kid": kid}
	for k, v := range hdr {
		h[k] = v
	}
	return s.Sign(t, claims, h)
}

// The HTTP contract must answer any method on any path (Envoy forwards the
// original method and path to the authorization service).
func TestHTTPContractAcceptsAnyMethod(t *testing.T) {
	w := newWorld(t)
	core := newCore(t, w.store, w.clock)
	trs := serve(t, core)
	httpTr := trs[2]
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		t.Run("Method "+m+" is checked against the rules", func(t *testing.T) {
			got := httpTr.send(t, request{method: m, host: "api.example.com", path: "/public/x"})
			if got.status != http.StatusOK {
				t.Fatalf("status %d (%s), want 200 on an anonymous path", got.status, got.reason)
			}
		})
	}
}

// TestAnInterceptorGetsACheckResponseOfItsOwn: without an interceptor the
// handler answers with the shared encoded answer, which only the codec
// reads; an interceptor gets a CheckResponse it can read, and the client
// gets the same answer either way.
func TestAnInterceptorGetsACheckResponseOfItsOwn(t *testing.T) {
	w := newWorld(t)
	core := newCore(t, w.store, w.clock)
	seen := make(chan any, 2)
	intercept := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		seen <- resp
		return resp, err
	}
	check := func(opts ...grpc.ServerOption) *authv3.CheckResponse {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(append(opts, grpc.ForceServerCodecV2(core.GRPCCodec()))...)
		server.NewAuthorizationServer(core).Register(gs)
		go func() { _ = gs.Serve(lis) }()
		defer gs.Stop()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Host: "api.example.com", Path: "/orders/1", Headers: map[string]string{"x-api-key": w.active.Key.Plaintext()},
			}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	shared := check()
	intercepted := check(grpc.UnaryInterceptor(intercept))
	if shared.GetOkResponse() == nil || !proto.Equal(shared, intercepted) {
		t.Fatalf("answers differ: %v without an interceptor, %v with one", shared, intercepted)
	}
	if len(seen) != 1 {
		t.Fatalf("the interceptor saw %d answers", len(seen))
	}
	got := <-seen
	if resp, ok := got.(*authv3.CheckResponse); !ok || !proto.Equal(resp, shared) {
		t.Fatalf("the interceptor got %T %v, want the CheckResponse sent", got, got)
	}
}
