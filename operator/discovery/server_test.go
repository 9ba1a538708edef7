package discovery

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/keyring"
	"gatehouse.dev/gatehouse/internal/scheme"
)

const jwksDoc = `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a","alg":"EdDSA","use":"sig"}]}`

func signingKey(ns, name, issuer string, propagation time.Duration) *gatehousev1.SigningKey {
	return &gatehousev1.SigningKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name)},
		Spec: gatehousev1.SigningKeySpec{Issuer: issuer, Algorithm: gatehousev1.EdDSA, Rotation: &gatehousev1.SigningKeyRotation{
			Every: &metav1.Duration{Duration: time.Hour}, Overlap: &metav1.Duration{Duration: time.Minute}, Propagation: &metav1.Duration{Duration: propagation}}},
	}
}

// published sets the status the SigningKey controller writes: the JWKS,
// for the spec's issuer.
func published(sk *gatehousev1.SigningKey, doc string) *gatehousev1.SigningKey {
	sk.Status.JWKS, sk.Status.Issuer = doc, sk.Spec.Issuer
	return sk
}

// createdAt sets the creation time, which decides who owns an issuer.
func createdAt(sk *gatehousev1.SigningKey, minute int) *gatehousev1.SigningKey {
	sk.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, minute, 0, 0, time.UTC))
	return sk
}

// forgedJWKS is a look-alike of the JWKS ConfigMaps earlier versions
// wrote, as anyone who may write ConfigMaps can make it.
func forgedJWKS(sk *gatehousev1.SigningKey, doc string) *corev1.ConfigMap {
	yes := true
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: sk.Namespace, Name: sk.Name + "-jwks",
			Labels:          map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordJWKS, gatehousev1.LabelOwnerName: sk.Name},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: gatehousev1.GroupVersion.String(), Kind: "SigningKey", Name: sk.Name, UID: sk.UID, Controller: &yes}}},
		Data: map[string]string{gatehousev1.JWKSDataKey: doc, gatehousev1.JWKSIssuerKey: sk.Spec.Issuer},
	}
}

// serve starts the server on 127.0.0.1 with objs in its cache and returns
// its base URL and the client behind it.
func serve(t *testing.T, objs ...client.Object) (string, client.Client) {
	t.Helper()
	return serveWithPrefix(t, "", objs...)
}

func serveWithPrefix(t *testing.T, prefix keyring.IssuerPrefix, objs ...client.Object) (string, client.Client) {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithIndex(&gatehousev1.SigningKey{}, keyring.IssuerIndex, keyring.IssuerIndexValue).
		WithObjects(objs...).WithStatusSubresource(&gatehousev1.SigningKey{}).Build()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Listener: ln, Reader: c, Log: logr.Discard(), IssuerPrefix: prefix, TokenEndpoint: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })}
	if s.NeedLeaderElection() {
		t.Fatal("the discovery server must run on every replica")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("server did not stop within 15s")
		}
	})
	return "http://" + ln.Addr().String(), c
}

type response struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, method, base, host, path string, header map[string]string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(body)}
}

func TestDiscoveryAndJWKSAreServedPerIssuer(t *testing.T) {
	root := signingKey("a", "root", "https://auth.example.com", 5*time.Minute)
	tenant := signingKey("b", "tenant", "https://auth.example.com/tenants/b/", 30*time.Second)
	base, _ := serve(t, published(root, jwksDoc), published(tenant, jwksDoc))

	cases := []struct {
		name       string
		host, path string
		wantStatus int
		wantIssuer string
		wantMaxAge string
	}{
		{"The root issuer's discovery document is served at its host.", "auth.example.com", ConfigurationPath, 200, "https://auth.example.com", "max-age=60"},
		{"A Host with the default port matches the issuer.", "auth.example.com:443", ConfigurationPath, 200, "https://auth.example.com", "max-age=60"},
		{"Host matching ignores case.", "AUTH.example.com", ConfigurationPath, 200, "https://auth.example.com", "max-age=60"},
		{"An issuer with a path is served below that path.", "auth.example.com", "/tenants/b" + ConfigurationPath, 200, "https://auth.example.com/tenants/b/", "max-age=15"},
		{"The root issuer's JWKS is served.", "auth.example.com", JWKSPath, 200, "", "max-age=60"},
		{"A short propagation interval shortens max-age to half of it.", "auth.example.com", "/tenants/b" + JWKSPath, 200, "", "max-age=15"},
		{"An unknown host gets 404.", "other.example.com", ConfigurationPath, 404, "", ""},
		{"An unknown path prefix gets 404.", "auth.example.com", "/tenants/c" + JWKSPath, 404, "", ""},
		{"The token endpoint is served at the root of any host.", "other.example.com", TokenEndpointPath, http.StatusTeapot, "", ""},
		{"The token endpoint is served below an issuer.", "auth.example.com", "/tenants/b" + TokenEndpointPath, http.StatusTeapot, "", ""},
		{"The token endpoint is not served below an unknown prefix.", "auth.example.com", "/tenants/c" + TokenEndpointPath, 404, "", ""},
		{"Another path gets 404.", "auth.example.com", "/", 404, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := get(t, http.MethodGet, base, tc.host, tc.path, nil)
			if res.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.status, tc.wantStatus, res.body)
			}
			if tc.wantStatus != 200 {
				return
			}
			if cc := res.header.Get("Cache-Control"); cc != "public, "+tc.wantMaxAge {
				t.Fatalf("Cache-Control %q, want public, %s", cc, tc.wantMaxAge)
			}
			if et := res.header.Get("ETag"); !strings.HasPrefix(et, `"`) || strings.HasPrefix(et, "W/") {
				t.Fatalf("ETag %q is not a strong tag", et)
			}
			if strings.HasSuffix(tc.path, JWKSPath) {
				if res.body != jwksDoc {
					t.Fatalf("jwks body %q", res.body)
				}
				return
			}
			var doc map[string]any
			if err := json.Unmarshal([]byte(res.body), &doc); err != nil {
				t.Fatal(err)
			}
			wantURI := strings.TrimSuffix(tc.wantIssuer, "/") + JWKSPath
			if doc["issuer"] != tc.wantIssuer || doc["jwks_uri"] != wantURI {
				t.Fatalf("issuer %v jwks_uri %v, want %s %s", doc["issuer"], doc["jwks_uri"], tc.wantIssuer, wantURI)
			}
			if algs, _ := doc["id_token_signing_alg_values_supported"].([]any); len(algs) != 1 || algs[0] != "EdDSA" {
				t.Fatalf("algorithms %v", doc["id_token_signing_alg_values_supported"])
			}
			wantToken := strings.TrimSuffix(tc.wantIssuer, "/") + TokenEndpointPath
			if doc["token_endpoint"] != wantToken {
				t.Fatalf("token_endpoint %v, want %s", doc["token_endpoint"], wantToken)
			}
			if grants, _ := doc["grant_types_supported"].([]any); len(grants) != 1 || grants[0] != "client_credentials" {
				t.Fatalf("grant types %v", doc["grant_types_supported"])
			}
		})
	}
}

func TestConditionalRequestsAnswer304UntilTheJWKSChanges(t *testing.T) {
	sk := signingKey("a", "root", "https://auth.example.com", 5*time.Minute)
	base, c := serve(t, published(sk, jwksDoc))
	first := get(t, http.MethodGet, base, "auth.example.com", JWKSPath, nil)
	etag := first.header.Get("ETag")
	if first.status != 200 || etag == "" {
		t.Fatalf("first fetch %d etag %q", first.status, etag)
	}
	cases := []struct {
		name        string
		ifNoneMatch string
		want        int
	}{
		{"The current tag gets 304.", etag, 304},
		{"The current tag among others gets 304.", `"x", ` + etag, 304},
		{"The weak form of the current tag gets 304.", "W/" + etag, 304},
		{"A star gets 304.", "*", 304},
		{"Another tag gets the document.", `"stale"`, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := get(t, http.MethodGet, base, "auth.example.com", JWKSPath, map[string]string{"If-None-Match": tc.ifNoneMatch})
			if res.status != tc.want {
				t.Fatalf("status %d, want %d", res.status, tc.want)
			}
			if tc.want == 304 && (res.body != "" || res.header.Get("ETag") != etag || res.header.Get("Cache-Control") == "") {
				t.Fatalf("304 with body %q, ETag %q, Cache-Control %q", res.body, res.header.Get("ETag"), res.header.Get("Cache-Control"))
			}
		})
	}
	head := get(t, http.MethodHead, base, "auth.example.com", JWKSPath, nil)
	if head.status != 200 || head.body != "" || head.header.Get("ETag") != etag || head.header.Get("Content-Length") != strconv.Itoa(len(jwksDoc)) {
		t.Fatalf("HEAD: %d body %q etag %q", head.status, head.body, head.header.Get("ETag"))
	}

	// A rotation rewrites the status: the old tag no longer matches.
	cur := &gatehousev1.SigningKey{}
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "a", Name: "root"}, cur); err != nil {
		t.Fatal(err)
	}
	cur.Status.JWKS = `{"keys":[]}`
	if err := c.Status().Update(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	res := get(t, http.MethodGet, base, "auth.example.com", JWKSPath, map[string]string{"If-None-Match": etag})
	if res.status != 200 || res.body != `{"keys":[]}` || res.header.Get("ETag") == etag {
		t.Fatalf("after the change: %d %q etag %q", res.status, res.body, res.header.Get("ETag"))
	}
}

func TestRequestsThatCannotBeAnsweredSafelyFailClosed(t *testing.T) {
	unpublished := signingKey("c", "nostatus", "https://nostatus.example.com", time.Minute)
	forged := signingKey("d", "forged", "https://forged.example.com", time.Minute)
	stale := published(signingKey("e", "stale", "https://stale.example.com", time.Minute), jwksDoc)
	stale.Status.Issuer = "https://before.example.com"
	base, _ := serve(t, unpublished, forged, forgedJWKS(forged, jwksDoc), stale)
	cases := []struct {
		name, method, host, path string
		want                     int
	}{
		{"A SigningKey whose status publishes no JWKS yet gets 503.", http.MethodGet, "nostatus.example.com", JWKSPath, 503},
		{"A forged JWKS ConfigMap is never served: only the status counts.", http.MethodGet, "forged.example.com", JWKSPath, 503},
		{"A status published for another issuer is not served under the new one.", http.MethodGet, "stale.example.com", JWKSPath, 503},
		{"POST is not allowed.", http.MethodPost, "nostatus.example.com", JWKSPath, 405},
		{"The token endpoint answers any method for itself.", http.MethodPost, "any.example.com", TokenEndpointPath, http.StatusTeapot},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := get(t, tc.method, base, tc.host, tc.path, nil)
			if res.status != tc.want {
				t.Fatalf("status %d, want %d", res.status, tc.want)
			}
			if strings.Contains(res.body, "keys") {
				t.Fatalf("a key set was served: %s", res.body)
			}
		})
	}
}

func TestAnIssuerIsServedForItsOldestClaimantWithinItsPrefixOnly(t *testing.T) {
	const docA = `{"keys":[{"kid":"owner-a"}]}`
	const docB = `{"keys":[{"kid":"intruder-b"}]}`
	cases := []struct {
		name     string
		prefix   keyring.IssuerPrefix
		objs     []client.Object
		want     int
		wantBody string
	}{
		{"A later claimant in another namespace neither takes the issuer nor takes it offline.", "",
			[]client.Object{createdAt(published(signingKey("a", "owner", "https://shared.example.com/a/", time.Minute), docA), 1),
				createdAt(published(signingKey("b", "intruder", "https://shared.example.com/a", time.Minute), docB), 2)}, 200, docA},
		{"Creation times that tie are broken by namespace and name.", "",
			[]client.Object{createdAt(published(signingKey("b", "intruder", "https://shared.example.com/a/", time.Minute), docB), 1),
				createdAt(published(signingKey("a", "owner", "https://shared.example.com/a/", time.Minute), docA), 1)}, 200, docA},
		{"Under a namespace prefix an older claimant from another namespace is ignored.", "https://shared.example.com/{namespace}/",
			[]client.Object{createdAt(published(signingKey("b", "intruder", "https://shared.example.com/a/", time.Minute), docB), 1),
				createdAt(published(signingKey("a", "owner", "https://shared.example.com/a/", time.Minute), docA), 2)}, 200, docA},
		{"Under a namespace prefix an issuer nobody may claim is not served at all.", "https://shared.example.com/{namespace}/",
			[]client.Object{createdAt(published(signingKey("b", "intruder", "https://shared.example.com/a/", time.Minute), docB), 1)}, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := serveWithPrefix(t, tc.prefix, tc.objs...)
			res := get(t, http.MethodGet, base, "shared.example.com", "/a"+JWKSPath, nil)
			if res.status != tc.want || (tc.want == 200 && res.body != tc.wantBody) {
				t.Fatalf("status %d body %s, want %d %s", res.status, res.body, tc.want, tc.wantBody)
			}
		})
	}
}

func TestWithoutATokenEndpointNoneIsAdvertisedOrServed(t *testing.T) {
	sk := signingKey("a", "root", "https://auth.example.com", 5*time.Minute)
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithIndex(&gatehousev1.SigningKey{}, keyring.IssuerIndex, keyring.IssuerIndexValue).
		WithObjects(published(sk, jwksDoc)).Build()
	s := &Server{Reader: c, Log: logr.Discard()}
	req := httptest.NewRequest(http.MethodGet, ConfigurationPath, nil)
	req.Host = "auth.example.com"
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "token_endpoint") || strings.Contains(rec.Body.String(), "grant_types") {
		t.Fatalf("status %d, document %s", rec.Code, rec.Body)
	}
	req = httptest.NewRequest(http.MethodPost, TokenEndpointPath, nil)
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST %s without a token endpoint: %d", TokenEndpointPath, rec.Code)
	}
}
