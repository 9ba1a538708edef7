package authz_test

import (
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	corev1 "k8s.io/api/core/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

const (
	ns     = "shop"
	issuer = "https://issuer.example.com"
)

type headers http.Header

func (h headers) Values(name string) []string { return http.Header(h).Values(name) }
func (h headers) Count() int                  { return len(h) }

func req(kv ...string) *authz.Request {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &authz.Request{Method: "GET", Host: "api.example.com", Path: "/orders/1", Headers: headers(h)}
}

// env is a store, its builder and the objects it was built from.
type env struct {
	clock   *testfixture.Clock
	store   *snapshot.Store
	builder *snapshot.Builder
	cms     map[string]*corev1.ConfigMap
	sks     map[string]*gatehousev1.SigningKey
	keys    map[string]*gatehousev1.APIKey
	policy  *gatehousev1.AuthPolicy
	engine  *authz.Engine
}

func newEnv(t testing.TB, signer *testfixture.Signer, keys ...*testfixture.APIKey) *env {
	t.Helper()
	e := &env{clock: testfixture.NewClock(), store: &snapshot.Store{}, cms: map[string]*corev1.ConfigMap{}, sks: map[string]*gatehousev1.SigningKey{}, keys: map[string]*gatehousev1.APIKey{}}
	e.builder = snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns, Clock: e.clock.Now})
	e.engine = authz.New(e.store, authz.Options{Clock: e.clock.Now, Log: testr.NewWithInterface(t, testr.Options{})})
	for _, k := range keys {
		e.keys[k.Record.Name] = k.Object()
	}
	if signer != nil {
		e.sks["platform"] = testfixture.SigningKey(t, ns, "platform", issuer, signer)
	}
	e.policy = testfixture.Policy(ns, "p", testfixture.Epoch, []gatehousev1.TrustedIssuer{
		{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}},
	}, gatehousev1.Rule{Match: gatehousev1.RuleMatch{Paths: []string{"/*"}}})
	e.rebuild()
	return e
}

func (e *env) rebuild() {
	var in snapshot.Inputs
	for _, cm := range e.cms {
		in.ConfigMaps = append(in.ConfigMaps, cm)
	}
	for _, sk := range e.sks {
		in.SigningKeys = append(in.SigningKeys, sk)
	}
	for _, ak := range e.keys {
		in.APIKeys = append(in.APIKeys, ak)
	}
	if e.policy != nil {
		in.Policies = []*gatehousev1.AuthPolicy{e.policy}
	}
	e.store.Swap(e.builder.Build(in))
}

func TestEngineFailsClosed(t *testing.T) {
	key := testfixture.NewAPIKey(t, ns, "k", "svc")
	t.Run("Before the first state is loaded every request is denied as not ready", func(t *testing.T) {
		e := authz.New(&snapshot.Store{}, authz.Options{})
		d := e.Check(req("x-api-key", key.Key.Plaintext()))
		if d.Allowed || d.Reason != authz.NotReady || d.Status != 403 {
			t.Fatalf("got %+v, want a 403 not_ready denial", d)
		}
	})
	t.Run("Without a policy selecting the pod every request is denied", func(t *testing.T) {
		e := newEnv(t, nil, key)
		e.policy = nil
		e.rebuild()
		d := e.engine.Check(req("x-api-key", key.Key.Plaintext()))
		if d.Allowed || d.Reason != authz.NoPolicy {
			t.Fatalf("got %+v, want no_policy", d)
		}
	})
	t.Run("A panic inside the check is recovered as an internal_error denial", func(t *testing.T) {
		e := newEnv(t, nil, key)
		d := e.engine.Check(&authz.Request{Method: "GET", Host: "h", Path: "/x", Headers: panickingHeaders{}})
		if d.Allowed || d.Reason != authz.InternalError || d.Status != 403 {
			t.Fatalf("got %+v, want a 403 internal_error denial", d)
		}
	})
}

type panickingHeaders struct{}

func (panickingHeaders) Values(string) []string { panic("boom") }
func (panickingHeaders) Count() int             { return 1 }

func TestRevocationReachesCachedTokens(t *testing.T) {
	signer := testfixture.NewSigner(t, jwa.ES256)
	key := testfixture.NewAPIKey(t, ns, "billing", "svc:billing")
	e := newEnv(t, signer, key)
	tok := signer.Sign(t, testfixture.Claims(issuer, "svc:billing", e.clock.Now(), map[string]any{gatehousev1.ClaimAPIKeyID: key.Key.ID()}), nil)
	if d := e.engine.Check(req("Authorization", "Bearer "+tok)); !d.Allowed {
		t.Fatalf("the exchanged token was denied at first: %s", d.Reason)
	}
	// The token is now cached; revoking the key must deny it on the next
	// request, without any re-verification trigger but the new record.
	key.Record.State = apikeyformat.StateRevoked
	e.keys[key.Record.Name] = key.Object()
	e.rebuild()
	if d := e.engine.Check(req("Authorization", "Bearer "+tok)); d.Allowed || d.Reason != authz.TokenRevoked {
		t.Fatalf("got %+v after revoking the key, want token_revoked", d)
	}
}

func TestCachedTokensFollowKeysAndClock(t *testing.T) {
	cases := []struct {
		name   string
		change func(e *env, signer *testfixture.Signer)
		want   authz.Reason
	}{
		{
			name: "A cached token is denied once its signing key leaves the JWKS",
			change: func(e *env, _ *testfixture.Signer) {
				e.sks["platform"] = testfixture.SigningKey(t, ns, "platform", issuer, testfixture.NewSigner(t, jwa.ES256))
				e.rebuild()
			},
			want: authz.UnknownKeyID,
		},
		{
			name:   "A cached token is denied once it expires",
			change: func(e *env, _ *testfixture.Signer) { e.clock.Advance(16 * time.Minute) },
			want:   authz.TokenExpired,
		},
		{
			name: "A cached token is denied once the issuer demands an audience it lacks",
			change: func(e *env, _ *testfixture.Signer) {
				e.policy.Spec.Issuers[0].Audiences = []string{"payments"}
				e.rebuild()
			},
			want: authz.WrongAudience,
		},
		{
			name: "A cached token is denied once its issuer is no longer trusted",
			change: func(e *env, _ *testfixture.Signer) {
				e.policy.Spec.Issuers = nil
				e.rebuild()
			},
			want: authz.UnknownIssuer,
		},
		{
			name: "A cached token stays allowed across an unrelated rebuild",
			change: func(e *env, _ *testfixture.Signer) {
				k := testfixture.NewAPIKey(t, ns, "other", "svc:other")
				e.keys["other"] = k.Object()
				e.rebuild()
			},
			want: authz.Authenticated,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signer := testfixture.NewSigner(t, jwa.ES256)
			e := newEnv(t, signer)
			tok := signer.Sign(t, testfixture.Claims(issuer, "alice", e.clock.Now(), nil), nil)
			if d := e.engine.Check(req("Authorization", "Bearer "+tok)); !d.Allowed {
				t.Fatalf("the token was denied at first: %s", d.Reason)
			}
			tc.change(e, signer)
			if d := e.engine.Check(req("Authorization", "Bearer "+tok)); d.Reason != tc.want {
				t.Fatalf("got %s, want %s", d.Reason, tc.want)
			}
		})
	}
}

func TestRateLimitRefillsWithTheClock(t *testing.T) {
	key := testfixture.NewAPIKey(t, ns, "limited", "svc")
	key.Record.RateLimit = &apikeyformat.RecordRateLimit{RequestsPerSecond: 2, Burst: 2}
	e := newEnv(t, nil, key)
	r := req("x-api-key", key.Key.Plaintext())
	for i := range 2 {
		if d := e.engine.Check(r); !d.Allowed {
			t.Fatalf("request %d within the burst was denied: %s", i, d.Reason)
		}
	}
	d := e.engine.Check(r)
	if d.Reason != authz.RateLimited || d.Status != 429 || d.RetryAfter <= 0 || d.RetryAfter > time.Second {
		t.Fatalf("got %+v, want rate_limited with a Retry-After within 1s", d)
	}
	e.clock.Advance(500 * time.Millisecond)
	if d := e.engine.Check(r); !d.Allowed {
		t.Fatalf("after half a second at 2/s a token should be back, got %s", d.Reason)
	}
}

func TestTokensExchangedFromAKeyShareTheKeysRateLimit(t *testing.T) {
	const limit = 5
	cases := []struct {
		name string
		// requests returns the requests sent at one instant, all at once.
		requests func(key *testfixture.APIKey, token string) []*authz.Request
	}{
		{"Concurrent requests with the exchanged token are limited as the key would be.", func(_ *testfixture.APIKey, token string) []*authz.Request {
			out := make([]*authz.Request, 100)
			for i := range out {
				out[i] = req("Authorization", "Bearer "+token)
			}
			return out
		}},
		{"The key and its token spend from one bucket.", func(key *testfixture.APIKey, token string) []*authz.Request {
			out := make([]*authz.Request, 100)
			for i := range out {
				if i%2 == 0 {
					out[i] = req("x-api-key", key.Key.Plaintext())
				} else {
					out[i] = req("Authorization", "Bearer "+token)
				}
			}
			return out
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signer := testfixture.NewSigner(t, jwa.ES256)
			key := testfixture.NewAPIKey(t, ns, "limited", "svc:limited")
			key.Record.RateLimit = &apikeyformat.RecordRateLimit{RequestsPerSecond: limit, Burst: limit}
			e := newEnv(t, signer, key)
			token := signer.Sign(t, testfixture.Claims(issuer, "svc:limited", e.clock.Now(), map[string]any{gatehousev1.ClaimAPIKeyID: key.Key.ID()}), nil)
			for round := range 2 {
				reqs := tc.requests(key, token)
				decisions := make([]authz.Decision, len(reqs))
				var wg sync.WaitGroup
				for i, r := range reqs {
					wg.Add(1)
					go func() { defer wg.Done(); decisions[i] = e.engine.Check(r) }()
				}
				wg.Wait()
				allowed := 0
				for _, d := range decisions {
					switch {
					case d.Allowed:
						allowed++
					case d.Reason != authz.RateLimited || d.Status != 429 || d.RetryAfter <= 0:
						t.Fatalf("round %d: a request was denied with %+v, want allowed or rate_limited with a Retry-After", round, d)
					}
				}
				if allowed != limit {
					t.Fatalf("round %d: %d of %d simultaneous requests allowed, want the key's %d", round, allowed, len(reqs), limit)
				}
				e.clock.Advance(time.Second) // the bucket refills exactly once
			}
		})
	}
}

func TestExtractCredential(t *testing.T) {
	cases := []struct {
		name      string
		kv        []string
		wantKind  authz.CredentialKind
		wantValue string
		wantErr   authz.Reason
	}{
		{name: "A request with no credential yields none", kv: nil},
		{name: "A Basic authorization is not a Gatehouse credential", kv: []string{"Authorization", "Basic dXNlcjpwYXNz"}},
		{name: "A bearer token is found", kv: []string{"Authorization", "Bearer abc.def.ghi"}, wantKind: authz.CredentialJWT, wantValue: "abc.def.ghi"},
		{name: "Extra spaces after the scheme are tolerated", kv: []string{"Authorization", "Bearer    abc.def.ghi"}, wantKind: authz.CredentialJWT, wantValue: "abc.def.ghi"},
		{name: "An ApiKey authorization is found", kv: []string{"Authorization", "apikey gth_x"}, wantKind: authz.CredentialAPIKey, wantValue: "gth_x"},
		{name: "The API key header is found", kv: []string{"X-Api-Key", "gth_y"}, wantKind: authz.CredentialAPIKey, wantValue: "gth_y"},
		{name: "A comma-joined authorization is ambiguous", kv: []string{"Authorization", "Bearer a.b.c, Bearer d.e.f"}, wantErr: authz.MultipleCredentials},
		{name: "A comma-joined API key header is ambiguous", kv: []string{"X-Api-Key", "a,b"}, wantErr: authz.MultipleCredentials},
		{name: "An empty API key header is malformed", kv: []string{"X-Api-Key", " "}, wantErr: authz.MalformedAPIKey},
		{name: "An ApiKey scheme without a key is malformed", kv: []string{"Authorization", "ApiKey"}, wantErr: authz.MalformedAPIKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, reason := authz.ExtractCredential(req(tc.kv...).Headers, "x-api-key")
			if reason != tc.wantErr || c.Kind != tc.wantKind || c.Value != tc.wantValue {
				t.Fatalf("got (%s, %q, %s), want (%s, %q, %s)", c.Kind, c.Value, reason, tc.wantKind, tc.wantValue, tc.wantErr)
			}
		})
	}
}

func TestARecordWhoseSubjectWouldInjectAHeaderIsRefused(t *testing.T) {
	key := testfixture.NewAPIKey(t, ns, "bad", "svc\r\nx-admin: true")
	e := newEnv(t, nil, key)
	if d := e.engine.Check(req("x-api-key", key.Key.Plaintext())); d.Allowed || d.Reason != authz.InvalidAPIKeyRecord {
		t.Fatalf("got %+v, want invalid_api_key_record", d)
	}
}

// An API key's identity is written to the request's room when it has one,
// and is the same identity as the one allocated without it.
func TestAPIKeyIdentityIsWrittenToTheRequestsRoom(t *testing.T) {
	key := testfixture.NewAPIKey(t, ns, "roomy", "svc")
	e := newEnv(t, nil, key)
	alloc := e.engine.Check(req("x-api-key", key.Key.Plaintext()))
	if !alloc.Allowed || alloc.Identity == nil {
		t.Fatalf("without a room: %+v", alloc)
	}
	var room authz.Identity
	r := req("x-api-key", key.Key.Plaintext())
	r.IdentityRoom = &room
	d := e.engine.Check(r)
	if !d.Allowed || d.Identity != &room {
		t.Fatalf("with a room: %+v, identity %p, want the room %p", d, d.Identity, &room)
	}
	if !reflect.DeepEqual(room, *alloc.Identity) {
		t.Fatalf("identity in the room %+v, allocated %+v", room, *alloc.Identity)
	}
	if room.Subject != "svc" || room.KeyID == "" || room.Credential != authz.CredentialAPIKey {
		t.Fatalf("identity in the room %+v", room)
	}
	noRoom := req("x-api-key", key.Key.Plaintext())
	without := testing.AllocsPerRun(20, func() { _ = e.engine.Check(noRoom) })
	with := testing.AllocsPerRun(20, func() { _ = e.engine.Check(r) })
	if with != without-1 {
		t.Errorf("an API key check allocated %.0f times with a room, %.0f without: want one fewer (the Identity)", with, without)
	}
}
