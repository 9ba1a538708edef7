package tokenendpoint

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

type fakeStore struct {
	records map[string]*apikeyformat.Record
	signer  *Signer
	err     error
}

func (f *fakeStore) RecordForKey(_ context.Context, key apikeyformat.Key) (*apikeyformat.Record, error) {
	if f.err != nil {
		return nil, f.err
	}
	for _, r := range f.records {
		for _, k := range r.Keys {
			if k.KeyID == key.ID() {
				return r, nil
			}
		}
	}
	return nil, ErrNotFound
}

func (f *fakeStore) ActiveSigner(_ context.Context, ns, name string, _ time.Time) (*Signer, error) {
	if f.signer == nil || ns != "shop" || name != "platform" {
		return nil, fmt.Errorf("no active key for %s/%s", ns, name)
	}
	return f.signer, nil
}

type fixture struct {
	srv     *Server
	store   *fakeStore
	clock   *clocktesting.FakeClock
	key     apikeyformat.Key
	public  jwk.Key
	logs    *bytes.Buffer
	reg     *prometheus.Registry
	handler http.Handler
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = priv.Set(jwk.KeyIDKey, "kid-1")
	_ = priv.Set(jwk.AlgorithmKey, jwa.ES256)
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	key, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	store := &fakeStore{
		records: map[string]*apikeyformat.Record{"billing": {
			Version: 1, Name: "billing", Namespace: "shop", Subject: "service:billing",
			Scopes: []string{"orders:read", "orders:write"}, State: apikeyformat.StateActive,
			TokenExchange: &apikeyformat.RecordTokenExchange{SigningKeyName: "platform", Audiences: []string{"orders", "billing"}, MaxLifetimeSeconds: 900},
			Keys:          []apikeyformat.RecordKey{{KeyID: key.ID(), SHA256: key.Hash()}},
		}},
		signer: &Signer{Key: priv, Issuer: "https://auth.example.com/platform", MaxLifetime: time.Hour},
	}
	logs := &bytes.Buffer{}
	log := funcr.New(func(prefix, args string) { logs.WriteString(prefix + args + "\n") }, funcr.Options{Verbosity: 10})
	reg := prometheus.NewRegistry()
	srv := NewServer(store, log, NewMetrics(reg))
	clk := clocktesting.NewFakeClock(t0)
	srv.Clock = clk
	return &fixture{srv: srv, store: store, clock: clk, key: key, public: pub, logs: logs, reg: reg, handler: srv}
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

func (f *fixture) do(t *testing.T, method string, form url.Values, mutate func(*http.Request)) reply {
	t.Helper()
	req := httptest.NewRequest(method, "/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.RemoteAddr = "192.0.2.1:40000"
	if mutate != nil {
		mutate(req)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	out := reply{status: rec.Code, header: rec.Header()}
	data, _ := io.ReadAll(rec.Body)
	if err := json.Unmarshal(data, &out.body); err != nil {
		t.Fatalf("response is not JSON (%d): %q", rec.Code, data)
	}
	return out
}

func basic(id, secret string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret)) }
}

func (f *fixture) parse(t *testing.T, token string) jwt.Token {
	t.Helper()
	set := jwk.NewSet()
	_ = set.AddKey(f.public)
	tok, err := jwt.Parse([]byte(token), jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(f.clock.Now)), jwt.WithValidate(true))
	if err != nil {
		t.Fatalf("issued token does not verify against the public key: %v", err)
	}
	return tok
}

func TestAValidAPIKeyIsExchangedForAnAccessTokenWithTheRFC9068Claims(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, http.MethodPost, url.Values{"grant_type": {"client_credentials"}}, basic(f.key.ID(), f.key.Plaintext()))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %v", r.status, r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
	}
	if r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(900) || r.body["scope"] != "orders:read orders:write" {
		t.Errorf("unexpected response body %v", r.body)
	}
	token := r.body["access_token"].(string)
	tok := f.parse(t, token)
	if tok.Issuer() != "https://auth.example.com/platform" || tok.Subject() != "service:billing" {
		t.Errorf("iss/sub = %q/%q", tok.Issuer(), tok.Subject())
	}
	if aud := tok.Audience(); len(aud) != 1 || aud[0] != "orders" {
		t.Errorf("aud = %v, want the first allowed audience", aud)
	}
	if !tok.IssuedAt().Equal(t0) || !tok.NotBefore().Equal(t0) || !tok.Expiration().Equal(t0.Add(15*time.Minute)) {
		t.Errorf("iat/nbf/exp = %v/%v/%v", tok.IssuedAt(), tok.NotBefore(), tok.Expiration())
	}
	if tok.JwtID() == "" {
		t.Error("no jti")
	}
	for claim, want := range map[string]string{gatehousev1.ClaimAPIKeyID: f.key.ID(), "client_id": f.key.ID(), "scope": "orders:read orders:write"} {
		if v, _ := tok.Get(claim); v != want {
			t.Errorf("claim %s = %v, want %v", claim, v, want)
		}
	}
	msg, err := jws.Parse([]byte(token))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Type() != "at+jwt" || h.KeyID() != "kid-1" || h.Algorithm() != jwa.ES256 {
		t.Errorf("header typ/kid/alg = %q/%q/%q", h.Type(), h.KeyID(), h.Algorithm())
	}
	if got := testutil.ToFloat64(f.srv.metrics.requests.WithLabelValues("issued")); got != 1 {
		t.Errorf("issued counter = %v", got)
	}
}

func TestClientSecretPostIsAcceptedAndScopesAndAudienceAreDownScoped(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, http.MethodPost, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {f.key.ID()}, "client_secret": {f.key.Plaintext()},
		"scope": {"orders:read"}, "audience": {"billing"},
	}, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %v", r.status, r.body)
	}
	tok := f.parse(t, r.body["access_token"].(string))
	if v, _ := tok.Get("scope"); v != "orders:read" || r.body["scope"] != "orders:read" {
		t.Errorf("scope = %v / %v, want only the requested orders:read", v, r.body["scope"])
	}
	if aud := tok.Audience(); len(aud) != 1 || aud[0] != "billing" {
		t.Errorf("aud = %v, want billing", aud)
	}
}

func TestTokenLifetimeIsCappedByEveryLimit(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(f *fixture)
		want   time.Duration
	}{
		{"the APIKey's maxLifetime applies by default", func(*fixture) {}, 15 * time.Minute},
		{"the SigningKey's overlap caps a longer APIKey lifetime", func(f *fixture) {
			f.store.records["billing"].TokenExchange.MaxLifetimeSeconds = 7200
		}, time.Hour},
		{"the operator-wide cap applies", func(f *fixture) { f.srv.MaxLifetime = 5 * time.Minute }, 5 * time.Minute},
		{"a token never outlives its API key's expiry", func(f *fixture) {
			exp := t0.Add(3 * time.Minute)
			f.store.records["billing"].ExpiresAt = &exp
		}, 3 * time.Minute},
		{"a key in its rotation grace period mints tokens that end with it", func(f *fixture) {
			end := t0.Add(2 * time.Minute)
			f.store.records["billing"].Keys[0].NotAfter = &end
		}, 2 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.mutate(f)
			r := f.do(t, http.MethodPost, url.Values{"grant_type": {"client_credentials"}}, basic(f.key.ID(), f.key.Plaintext()))
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %v", r.status, r.body)
			}
			tok := f.parse(t, r.body["access_token"].(string))
			if got := tok.Expiration().Sub(t0); got != tc.want {
				t.Fatalf("lifetime %v, want %v", got, tc.want)
			}
			if r.body["expires_in"] != tc.want.Seconds() {
				t.Fatalf("expires_in %v, want %v", r.body["expires_in"], tc.want.Seconds())
			}
		})
	}
}

func TestEveryRefusalFollowsRFC6749(t *testing.T) {
	other, _ := apikeyformat.Generate(rand.Reader)
	grant := url.Values{"grant_type": {"client_credentials"}}
	with := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	cases := []struct {
		name       string
		method     string
		form       func(f *fixture) url.Values
		mutate     func(f *fixture) func(*http.Request)
		setup      func(f *fixture)
		wantStatus int
		wantError  string
	}{
		{"a GET is refused", http.MethodGet, func(*fixture) url.Values { return grant }, nil, nil, 405, "invalid_request"},
		{"a JSON body is refused", http.MethodPost, func(*fixture) url.Values { return grant },
			func(*fixture) func(*http.Request) {
				return func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }
			}, nil, 400, "invalid_request"},
		{"a missing grant_type is invalid_request", http.MethodPost, func(*fixture) url.Values { return url.Values{} }, nil, nil, 400, "invalid_request"},
		{"the password grant is unsupported", http.MethodPost, func(*fixture) url.Values { return url.Values{"grant_type": {"password"}} }, nil, nil, 400, "unsupported_grant_type"},
		{"no client authentication is invalid_client", http.MethodPost, func(*fixture) url.Values { return grant }, nil, nil, 401, "invalid_client"},
		{"a malformed key is invalid_client", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), "not-a-key") }, nil, 401, "invalid_client"},
		{"a well-formed unknown key is invalid_client", http.MethodPost, func(*fixture) url.Values { return grant },
			func(*fixture) func(*http.Request) { return basic(other.ID(), other.Plaintext()) }, nil, 401, "invalid_client"},
		{"a client_id that is not the key's ID is invalid_client", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) { return basic(other.ID(), f.key.Plaintext()) }, nil, 401, "invalid_client"},
		{"a revoked key is invalid_client", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) },
			func(f *fixture) { f.store.records["billing"].State = apikeyformat.StateRevoked }, 401, "invalid_client"},
		{"an expired key is invalid_client", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) },
			func(f *fixture) { e := t0.Add(-time.Second); f.store.records["billing"].ExpiresAt = &e }, 401, "invalid_client"},
		{"two authentication methods are invalid_request", http.MethodPost, func(f *fixture) url.Values { return with("client_secret", f.key.Plaintext()) },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) }, nil, 400, "invalid_request"},
		{"a repeated parameter is invalid_request", http.MethodPost, func(f *fixture) url.Values { return with("scope", "orders:read", "scope", "orders:write") },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) }, nil, 400, "invalid_request"},
		{"credentials in the URL are invalid_request", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) {
				return func(r *http.Request) { r.URL.RawQuery = "client_secret=x"; basic(f.key.ID(), f.key.Plaintext())(r) }
			}, nil, 400, "invalid_request"},
		{"a key without tokenExchange is unauthorized_client", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) },
			func(f *fixture) { f.store.records["billing"].TokenExchange = nil }, 400, "unauthorized_client"},
		{"asking for an ungranted scope is invalid_scope", http.MethodPost, func(*fixture) url.Values { return with("scope", "orders:read admin") },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) }, nil, 400, "invalid_scope"},
		{"asking for a foreign audience is invalid_target", http.MethodPost, func(*fixture) url.Values { return with("audience", "payroll") },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) }, nil, 400, "invalid_target"},
		{"no active signing key fails closed with 503", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) },
			func(f *fixture) { f.store.signer = nil }, 503, "temporarily_unavailable"},
		{"an unreadable store fails closed with 503", http.MethodPost, func(*fixture) url.Values { return grant },
			func(f *fixture) func(*http.Request) { return basic(f.key.ID(), f.key.Plaintext()) },
			func(f *fixture) { f.store.err = io.ErrUnexpectedEOF }, 503, "temporarily_unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			var mutate func(*http.Request)
			if tc.mutate != nil {
				mutate = tc.mutate(f)
			}
			r := f.do(t, tc.method, tc.form(f), mutate)
			if r.status != tc.wantStatus || r.body["error"] != tc.wantError {
				t.Fatalf("got %d %v, want %d %s", r.status, r.body, tc.wantStatus, tc.wantError)
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", r.header.Get("Cache-Control"))
			}
			if tc.wantStatus == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 without a WWW-Authenticate Basic challenge: %q", r.header.Get("WWW-Authenticate"))
			}
			if _, ok := r.body["access_token"]; ok {
				t.Error("a refusal carried a token")
			}
			if strings.Contains(f.logs.String(), f.key.Plaintext()) {
				t.Error("the logs contain the API key")
			}
		})
	}
}

// forgeWithID returns a well-formed key (right format, right checksum)
// with the key ID of real and a random secret: what an attacker who read a
// key ID from a token can send.
func forgeWithID(t *testing.T, real apikeyformat.Key) apikeyformat.Key {
	t.Helper()
	id, err := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding).DecodeString(real.ID())
	if err != nil {
		t.Fatal(err)
	}
	k, err := apikeyformat.Generate(io.MultiReader(bytes.NewReader(id), rand.Reader))
	if err != nil || k.ID() != real.ID() || k.Plaintext() == real.Plaintext() {
		t.Fatalf("forging a key for ID %s: %v", real.ID(), err)
	}
	return k
}

func tokenRequestFrom(addr string, k apikeyformat.Key) func(*http.Request) {
	return func(r *http.Request) {
		basic(k.ID(), k.Plaintext())(r)
		r.RemoteAddr = addr
	}
}

func TestJunkForARealKeyIDFromManyAddressesDoesNotLockTheRealClientOut(t *testing.T) {
	f := newFixture(t)
	junk := forgeWithID(t, f.key)
	grant := url.Values{"grant_type": {"client_credentials"}}
	for i := 0; i < 100; i++ {
		r := f.do(t, http.MethodPost, grant, tokenRequestFrom(fmt.Sprintf("203.0.113.%d:1", i%50), junk))
		if r.status != http.StatusUnauthorized && r.status != http.StatusTooManyRequests {
			t.Fatalf("junk attempt %d: %d %v", i, r.status, r.body)
		}
	}
	if !strings.Contains(f.logs.String(), `"keyFailuresExceeded"=true`) {
		t.Errorf("the key ID's failures were not reported as exceeded:\n%s", f.logs.String())
	}
	for _, addr := range []string{"192.0.2.1:40000", "203.0.113.7:1"} {
		r := f.do(t, http.MethodPost, grant, tokenRequestFrom(addr, f.key))
		if r.status != http.StatusOK {
			t.Fatalf("the real key from %s after the junk: %d %v, want 200", addr, r.status, r.body)
		}
	}
}

func TestFailuresForAnExistingKeyIDGetTheSameAnswerAsForAnUnknownOne(t *testing.T) {
	f := newFixture(t)
	junk := forgeWithID(t, f.key)
	unknown, _ := apikeyformat.Generate(rand.Reader)
	grant := url.Values{"grant_type": {"client_credentials"}}
	for i := 0; i < 30; i++ {
		addr := fmt.Sprintf("198.51.100.%d:1", i) // one failure per address: only key ID buckets fill
		a := f.do(t, http.MethodPost, grant, tokenRequestFrom(addr, junk))
		b := f.do(t, http.MethodPost, grant, tokenRequestFrom(addr, unknown))
		if a.status != http.StatusUnauthorized || b.status != http.StatusUnauthorized ||
			a.body["error_description"] != b.body["error_description"] || a.header.Get("Retry-After") != b.header.Get("Retry-After") {
			t.Fatalf("attempt %d: existing key ID got %d %v (Retry-After %q), unknown got %d %v (Retry-After %q)",
				i, a.status, a.body, a.header.Get("Retry-After"), b.status, b.body, b.header.Get("Retry-After"))
		}
	}
}

func TestFailuresCountAgainstAKeyIDOnlyWhenTheKeyExists(t *testing.T) {
	f := newFixture(t)
	unknown, _ := apikeyformat.Generate(rand.Reader)
	for i := 0; i < 20; i++ {
		f.do(t, http.MethodPost, url.Values{"grant_type": {"client_credentials"}}, tokenRequestFrom(fmt.Sprintf("198.51.100.%d:1", i), unknown))
	}
	if f.srv.byKeyID.buckets.Contains(unknown.ID()) || f.srv.byKeyID.buckets.Len() != 0 {
		t.Fatalf("an unknown key ID got a failure bucket (%d buckets)", f.srv.byKeyID.buckets.Len())
	}
	if strings.Contains(f.logs.String(), "keyFailuresExceeded") {
		t.Fatal("failures for an unknown key ID were counted against it")
	}
	f.do(t, http.MethodPost, url.Values{"grant_type": {"client_credentials"}}, tokenRequestFrom("198.51.100.1:1", forgeWithID(t, f.key)))
	if !f.srv.byKeyID.buckets.Contains(f.key.ID()) {
		t.Fatal("a failure for an existing key ID was not counted against it")
	}
}

func TestRepeatedFailuresFromOneAddressAreSlowedDownButTheRightKeyStillWorks(t *testing.T) {
	f := newFixture(t)
	bad, _ := apikeyformat.Generate(rand.Reader)
	grant := url.Values{"grant_type": {"client_credentials"}}
	for i := 0; i < 10; i++ {
		if r := f.do(t, http.MethodPost, grant, basic(bad.ID(), bad.Plaintext())); r.status != 401 {
			t.Fatalf("attempt %d: status %d", i, r.status)
		}
	}
	r := f.do(t, http.MethodPost, grant, basic(bad.ID(), bad.Plaintext()))
	if r.status != http.StatusTooManyRequests || r.body["error"] != "slow_down" || r.header.Get("Retry-After") == "" {
		t.Fatalf("11th failure: %d %v (Retry-After %q), want 429 slow_down", r.status, r.body, r.header.Get("Retry-After"))
	}
	if !strings.Contains(f.logs.String(), `"reason"="address_slowed_down" "failure"="unknown_key"`) {
		t.Errorf("the slowed-down failure's cause is not logged:\n%s", f.logs.String())
	}
	// A correct key from the same address (another client behind the
	// same NAT, say) is never refused by the failure limit.
	r = f.do(t, http.MethodPost, grant, basic(f.key.ID(), f.key.Plaintext()))
	if r.status != http.StatusOK {
		t.Fatalf("the right key from the slowed-down address: %d %v, want 200", r.status, r.body)
	}
	// The address's bucket refills: a failure is a plain 401 again.
	f.clock.Step(7 * time.Second)
	r = f.do(t, http.MethodPost, grant, basic(bad.ID(), bad.Plaintext()))
	if r.status != http.StatusUnauthorized {
		t.Fatalf("after the bucket refilled: %d %v, want 401", r.status, r.body)
	}
}

func TestFailuresCountAgainstTheClientAddressThatTrustedProxiesForwarded(t *testing.T) {
	f := newFixture(t)
	var err error
	f.srv.TrustedProxies, err = ParseTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := apikeyformat.Generate(rand.Reader)
	from := func(client string) func(*http.Request) {
		return func(r *http.Request) {
			basic(bad.ID(), bad.Plaintext())(r)
			r.RemoteAddr = "10.0.0.5:443" // the ingress
			r.Header.Set("X-Forwarded-For", client)
		}
	}
	grant := url.Values{"grant_type": {"client_credentials"}}
	for i := 0; i < 10; i++ {
		f.do(t, http.MethodPost, grant, from("203.0.113.9"))
	}
	if r := f.do(t, http.MethodPost, grant, from("203.0.113.9")); r.status != http.StatusTooManyRequests {
		t.Fatalf("the noisy client behind the ingress: %d, want 429", r.status)
	}
	if r := f.do(t, http.MethodPost, grant, from("198.51.100.4")); r.status != http.StatusUnauthorized {
		t.Fatalf("another client behind the same ingress: %d, want 401 (its own bucket)", r.status)
	}
	// A client cannot escape its bucket by prepending addresses.
	if r := f.do(t, http.MethodPost, grant, from("192.0.2.77, 203.0.113.9")); r.status != http.StatusTooManyRequests {
		t.Fatalf("the noisy client with a spoofed X-Forwarded-For prefix: %d, want 429", r.status)
	}
}

func TestClientAddressFollowsTheRightmostUntrustedRule(t *testing.T) {
	trusted, err := ParseTrustedProxies([]string{"10.0.0.0/8", "fd00::/8", "192.0.2.10"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		trusted TrustedProxies
		peer    string
		xff     []string
		want    string
	}{
		{"Without trusted proxies the peer is the client, whatever the header says.", nil, "10.0.0.5:1", []string{"203.0.113.9"}, "10.0.0.5"},
		{"An untrusted peer's header is ignored.", trusted, "198.51.100.1:1", []string{"203.0.113.9"}, "198.51.100.1"},
		{"A trusted peer's rightmost entry is the client.", trusted, "10.0.0.5:1", []string{"203.0.113.9"}, "203.0.113.9"},
		{"Entries left of the rightmost untrusted one are the client's own and are ignored.", trusted, "10.0.0.5:1", []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"Trusted hops on the right are skipped.", trusted, "10.0.0.5:1", []string{"203.0.113.9, 10.1.1.1, 192.0.2.10"}, "203.0.113.9"},
		{"Several header lines are read in order.", trusted, "10.0.0.5:1", []string{"1.1.1.1", "203.0.113.9, 10.1.1.1"}, "203.0.113.9"},
		{"A trusted peer with no header is the client.", trusted, "10.0.0.5:1", nil, "10.0.0.5"},
		{"When every hop is trusted the leftmost is the client.", trusted, "10.0.0.5:1", []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9"},
		{"A malformed entry stops the walk at the last good hop.", trusted, "10.0.0.5:1", []string{"203.0.113.9, not-an-ip, 10.1.1.1"}, "10.1.1.1"},
		{"Entries with ports and IPv6 brackets are understood.", trusted, "[fd00::1]:443", []string{"[2001:db8::7]:5555"}, "2001:db8::7"},
		{"An IPv4-mapped IPv6 peer matches an IPv4 range.", trusted, "[::ffff:10.0.0.5]:1", []string{"203.0.113.9"}, "203.0.113.9"},
		{"A single trusted address is a /32.", trusted, "192.0.2.10:1", []string{"203.0.113.9"}, "203.0.113.9"},
		{"A neighbour of a single trusted address is not trusted.", trusted, "192.0.2.11:1", []string{"203.0.113.9"}, "192.0.2.11"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tc.trusted.clientAddr(r); got != tc.want {
				t.Fatalf("client address %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTrustedProxiesRefuseWhatIsNotAnAddressOrCIDR(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1/x"} {
		if _, err := ParseTrustedProxies([]string{bad}); err == nil {
			t.Errorf("ParseTrustedProxies(%q) accepted it", bad)
		}
	}
}

func TestLogsNameKeyIDsAndJTIsButNeverTheKeyOrTheToken(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, http.MethodPost, url.Values{"grant_type": {"client_credentials"}}, basic(f.key.ID(), f.key.Plaintext()))
	token := r.body["access_token"].(string)
	tok := f.parse(t, token)
	f.do(t, http.MethodPost, url.Values{"grant_type": {"client_credentials"}, "scope": {"nope"}}, basic(f.key.ID(), f.key.Plaintext()))
	logs := f.logs.String()
	if strings.Contains(logs, f.key.Plaintext()) || strings.Contains(logs, token) {
		t.Fatalf("logs contain a credential:\n%s", logs)
	}
	for _, want := range []string{f.key.ID(), tok.JwtID(), `"result"="issued"`, `"result"="invalid_scope"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}
