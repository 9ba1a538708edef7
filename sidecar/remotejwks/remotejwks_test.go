package remotejwks_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/lestrrat-go/jwx/v2/jwa"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/remotejwks"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// issuerServer is an https issuer on 127.0.0.1 whose JWKS the test sets.
type issuerServer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	jwks     string
	status   int
	cacheCtl string
	jwksHits atomic.Int64
}

func newIssuerServer(t *testing.T) *issuerServer {
	t.Helper()
	s := &issuerServer{status: http.StatusOK}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"issuer": %q, "jwks_uri": %q}`, s.srv.URL, s.srv.URL+"/keys")
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		s.jwksHits.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cacheCtl != "" {
			w.Header().Set("Cache-Control", s.cacheCtl)
		}
		w.WriteHeader(s.status)
		_, _ = w.Write([]byte(s.jwks))
	})
	s.srv = httptest.NewTLSServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *issuerServer) set(status int, jwks string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.jwks = status, jwks
}

func registry(t *testing.T, s *issuerServer, fetches chan<- error) *remotejwks.Registry {
	t.Helper()
	r := remotejwks.NewRegistry(remotejwks.Options{
		Client:             s.srv.Client(),
		UnknownKIDInterval: -1, // no rate limit: tests drive refreshes
		Log:                testr.New(t),
		OnFetch: func(_ string, err error) {
			if fetches != nil {
				fetches <- err
			}
		},
	})
	t.Cleanup(r.Close)
	return r
}

func waitKey(t *testing.T, set snapshot.KeySet, kid string) {
	t.Helper()
	framework.Eventually(t, "key "+kid, 10*time.Second, func() (bool, string) {
		_, ok := set.Key(kid)
		return ok, "not found"
	})
}

func TestRemoteKeysThroughDiscoveryAndJWKSURI(t *testing.T) {
	s := newIssuerServer(t)
	a := testfixture.NewSigner(t, jwa.ES256)
	s.set(http.StatusOK, testfixture.JWKS(t, a))
	r := registry(t, s, nil)
	for name, set := range map[string]snapshot.KeySet{"discovery": r.Discovery(s.srv.URL), "jwksURI": r.URI(s.srv.URL + "/keys")} {
		t.Run("Keys are found through "+name, func(t *testing.T) {
			waitKey(t, set, a.KeyID)
			k, _ := set.Key(a.KeyID)
			if k.Algorithm != jwa.ES256 {
				t.Fatalf("algorithm %s, want ES256 from the key", k.Algorithm)
			}
		})
	}
	if r.Discovery(s.srv.URL) != r.Discovery(s.srv.URL) {
		t.Fatal("the same issuer must yield the same key set across builds")
	}
}

func TestAnUnknownKidRefreshesAndFailuresKeepTheLastGoodKeys(t *testing.T) {
	s := newIssuerServer(t)
	a, b := testfixture.NewSigner(t, jwa.ES256), testfixture.NewSigner(t, jwa.RS256)
	s.set(http.StatusOK, testfixture.JWKS(t, a))
	fetches := make(chan error, 100)
	set := registry(t, s, fetches).URI(s.srv.URL + "/keys")
	if err := <-fetches; err != nil {
		t.Fatalf("first fetch: %v", err)
	}
	waitKey(t, set, a.KeyID)

	// The issuer rotates; a token with the new kid triggers a refresh.
	s.set(http.StatusOK, testfixture.JWKS(t, a, b))
	if _, ok := set.Key(b.KeyID); ok {
		t.Fatal("the new key was known before any refresh")
	}
	waitKey(t, set, b.KeyID)
	<-fetches

	// The issuer fails, then serves an oversized document: both are
	// refused and the last good keys stay.
	for _, bad := range []struct {
		status int
		body   string
	}{{http.StatusInternalServerError, "oops"}, {http.StatusOK, `{"keys":[` + strings.Repeat(" ", snapshot.MaxJWKSBytes) + `]}`}, {http.StatusOK, `{"keys":[]}`}} {
		s.set(bad.status, bad.body)
		set.Key("unknown-kid-to-force-a-refresh")
		// Fetches started before the change may still succeed; the one
		// that sees the bad answer must fail.
		timeout := time.After(10 * time.Second)
		for failed := false; !failed; {
			select {
			case err := <-fetches:
				failed = err != nil
			case <-timeout:
				t.Fatalf("no fetch of the answer %d with %d bytes failed", bad.status, len(bad.body))
			}
		}
		for _, kid := range []string{a.KeyID, b.KeyID} {
			if _, ok := set.Key(kid); !ok {
				t.Fatalf("key %s was lost after a failed fetch", kid)
			}
		}
	}
}

func TestUnknownKidRefreshesAreRateLimited(t *testing.T) {
	s := newIssuerServer(t)
	a := testfixture.NewSigner(t, jwa.ES256)
	s.set(http.StatusOK, testfixture.JWKS(t, a))
	clock := testfixture.NewClock()
	fetches := make(chan error, 100)
	r := remotejwks.NewRegistry(remotejwks.Options{
		Client: s.srv.Client(), UnknownKIDInterval: 10 * time.Second, Clock: clock.Now, Log: testr.New(t),
		OnFetch: func(_ string, err error) { fetches <- err },
	})
	t.Cleanup(r.Close)
	set := r.URI(s.srv.URL + "/keys")
	<-fetches
	for range 50 {
		set.Key("junk")
	}
	<-fetches // the first junk kid may refresh once
	hits := s.jwksHits.Load()
	for range 50 {
		set.Key("junk")
	}
	select {
	case <-fetches:
		t.Fatalf("junk kids caused another fetch within the interval (%d fetches before)", hits)
	default:
	}
	clock.Advance(11 * time.Second)
	set.Key("junk")
	if err := <-fetches; err != nil {
		t.Fatalf("refresh after the interval: %v", err)
	}
}

func TestRefreshAfterHonoursCacheControlWithinBounds(t *testing.T) {
	cases := []struct {
		name   string
		header string
		want   time.Duration
	}{
		{"No Cache-Control means the default", "", remotejwks.DefaultRefresh},
		{"max-age is honoured", "public, max-age=600", 10 * time.Minute},
		{"A tiny max-age is raised to the minimum", "max-age=1", remotejwks.MinRefresh},
		{"A huge max-age is capped", "max-age=99999999", remotejwks.MaxRefresh},
		{"no-store means the minimum", "no-store", remotejwks.MinRefresh},
		{"A malformed max-age is ignored", "max-age=soon", remotejwks.DefaultRefresh},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("Cache-Control", tc.header)
			}
			if got := remotejwks.RefreshAfter(h); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOnlyHTTPSIsFetched(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	fetches := make(chan error, 1)
	r := remotejwks.NewRegistry(remotejwks.Options{Log: testr.New(t), OnFetch: func(_ string, err error) {
		select {
		case fetches <- err:
		default:
		}
	}})
	t.Cleanup(r.Close)
	r.URI(plain.URL + "/keys")
	if err := <-fetches; err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("fetching over http: %v, want a refusal", err)
	}
}

// bearerHeaders is a minimal authz.Headers with one bearer token.
type bearerHeaders string

func (h bearerHeaders) Values(name string) []string {
	if name == "authorization" {
		return []string{"Bearer " + string(h)}
	}
	return nil
}
func (bearerHeaders) Count() int { return 1 }

func TestAPolicyWithADiscoveryIssuerAcceptsItsTokens(t *testing.T) {
	s := newIssuerServer(t)
	a := testfixture.NewSigner(t, jwa.RS256)
	s.set(http.StatusOK, testfixture.JWKS(t, a))
	reg := registry(t, s, nil)
	pol := testfixture.Policy("shop", "p", testfixture.Epoch, []gatehousev1.TrustedIssuer{
		{Name: "idp", Issuer: s.srv.URL, Discovery: true, Audiences: []string{"orders"}},
	}, gatehousev1.Rule{Match: gatehousev1.RuleMatch{Paths: []string{"/*"}}})
	store := &snapshot.Store{}
	store.Swap(snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "shop", Remote: reg}).Build(snapshot.Inputs{Policies: []*gatehousev1.AuthPolicy{pol}}))
	engine := authz.New(store, authz.Options{})
	tok := a.Sign(t, testfixture.Claims(s.srv.URL, "alice", time.Now(), nil), nil)
	framework.Eventually(t, "the discovered key to verify the token", 10*time.Second, func() (bool, string) {
		d := engine.Check(&authz.Request{Method: "GET", Host: "h", Path: "/x", Headers: bearerHeaders(tok)})
		return d.Allowed && d.Identity.Issuer == s.srv.URL, string(d.Reason)
	})
}

func TestRedirectsAreFollowedOnlyToHTTPSOnTheSameHost(t *testing.T) {
	signer := testfixture.NewSigner(t, jwa.ES256)
	jwks := testfixture.JWKS(t, signer)
	// other is a second https server on 127.0.0.1: another host:port that
	// the client trusts as much as the first, so only the policy refuses it.
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(jwks))
	}))
	t.Cleanup(other.Close)
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/keys":
			_, _ = w.Write([]byte(jwks))
		case "/moved":
			http.Redirect(w, r, "/keys", http.StatusFound)
		case "/to-http":
			http.Redirect(w, r, "http://"+srv.Listener.Addr().String()+"/keys", http.StatusFound)
		case "/to-other-host":
			http.Redirect(w, r, other.URL+"/keys", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	cases := []struct {
		name    string
		path    string
		wantErr string
	}{
		{"A redirect to https on the same host is followed.", "/moved", ""},
		{"A redirect to plain http on the same host is not followed.", "/to-http", "not followed"},
		{"A redirect to https on another host is not followed.", "/to-other-host", "not followed"},
		{"A redirect loop stops after a few hops.", "/loop", "redirects"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fetches := make(chan error, 1)
			r := remotejwks.NewRegistry(remotejwks.Options{Client: srv.Client(), Log: testr.New(t), OnFetch: func(_ string, err error) {
				select {
				case fetches <- err:
				default:
				}
			}})
			t.Cleanup(r.Close)
			set := r.URI(srv.URL + tc.path)
			var err error
			select {
			case err = <-fetches:
			case <-time.After(10 * time.Second):
				t.Fatal("no fetch within 10s")
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("fetch failed: %v", err)
				}
				if _, ok := set.Key(signer.KeyID); !ok {
					t.Fatal("the keys behind the redirect were not loaded")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("fetch error %v, want one saying %q", err, tc.wantErr)
			}
			if _, ok := set.Key(signer.KeyID); ok {
				t.Fatal("keys from a refused redirect were loaded")
			}
		})
	}
}

func TestSweepRetiresFetchersOfSourcesNoBuildAsksFor(t *testing.T) {
	a, b := newIssuerServer(t), newIssuerServer(t)
	signer := testfixture.NewSigner(t, jwa.ES256)
	a.set(http.StatusOK, testfixture.JWKS(t, signer))
	b.set(http.StatusOK, testfixture.JWKS(t, signer))
	r := remotejwks.NewRegistry(remotejwks.Options{Client: a.srv.Client(), UnknownKIDInterval: -1, Log: testr.New(t)})
	t.Cleanup(r.Close)

	// Build 1 names both sources.
	setA, setB := r.URI(a.srv.URL+"/keys"), r.URI(b.srv.URL+"/keys")
	waitKey(t, setA, signer.KeyID)
	waitKey(t, setB, signer.KeyID)
	r.Sweep()
	if n := r.Fetchers(); n != 2 {
		t.Fatalf("%d fetchers after a build that named both sources, want 2", n)
	}
	// Build 2 names only a: b's fetcher stops.
	r.URI(a.srv.URL + "/keys")
	r.Sweep()
	if n := r.Fetchers(); n != 1 {
		t.Fatalf("%d fetchers after b was dropped, want 1", n)
	}
	hits := b.jwksHits.Load()
	setB.Key("unknown-kid") // would wake b's fetcher, were it running
	if _, ok := setB.Key(signer.KeyID); !ok {
		t.Error("a retired set forgot its last keys, which an older snapshot may still use")
	}
	// a's fetcher still runs: an unknown kid makes it fetch again.
	before := a.jwksHits.Load()
	setA.Key("unknown-kid")
	framework.Eventually(t, "a refetch of a", 10*time.Second, func() (bool, string) {
		return a.jwksHits.Load() > before, fmt.Sprintf("%d hits", a.jwksHits.Load())
	})
	if got := b.jwksHits.Load(); got != hits {
		t.Errorf("the retired source was fetched again (%d hits, was %d)", got, hits)
	}
	// Build 3 names both again: b gets a new fetcher.
	r.URI(a.srv.URL + "/keys")
	waitKey(t, r.URI(b.srv.URL+"/keys"), signer.KeyID)
	r.Sweep()
	if n := r.Fetchers(); n != 2 {
		t.Fatalf("%d fetchers after b came back, want 2", n)
	}
}
