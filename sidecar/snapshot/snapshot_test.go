package snapshot_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

const ns = "shop"

func rule(paths ...string) gatehousev1.Rule {
	return gatehousev1.Rule{Match: gatehousev1.RuleMatch{Paths: paths}}
}

func TestPolicySelection(t *testing.T) {
	old := testfixture.Epoch.Add(-time.Hour)
	selecting := func(name string, created time.Time, match map[string]string) *gatehousev1.AuthPolicy {
		p := testfixture.Policy(ns, name, created, nil, rule("/*"))
		p.Spec.Selector = metav1.LabelSelector{MatchLabels: match}
		return p
	}
	cases := []struct {
		name     string
		labels   map[string]string
		policies []*gatehousev1.AuthPolicy
		want     string
	}{
		{"No policy selects nothing", map[string]string{"app": "a"}, nil, ""},
		{"An empty selector selects every pod", map[string]string{"app": "a"}, []*gatehousev1.AuthPolicy{selecting("all", old, nil)}, "all"},
		{"A selector for other labels does not select the pod", map[string]string{"app": "a"}, []*gatehousev1.AuthPolicy{selecting("b", old, map[string]string{"app": "b"})}, ""},
		{"The oldest of several selecting policies wins", map[string]string{"app": "a"}, []*gatehousev1.AuthPolicy{
			selecting("newer", testfixture.Epoch, nil), selecting("older", old, map[string]string{"app": "a"})}, "older"},
		{"Equal ages are broken by name", nil, []*gatehousev1.AuthPolicy{selecting("b", old, nil), selecting("a", old, nil)}, "a"},
		{"A policy of another namespace is ignored", nil, []*gatehousev1.AuthPolicy{func() *gatehousev1.AuthPolicy {
			p := selecting("elsewhere", old, nil)
			p.Namespace = "other"
			return p
		}()}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns, PodLabels: labels.Set(tc.labels)})
			s := b.Build(snapshot.Inputs{Policies: tc.policies})
			got := ""
			if s.Policy != nil {
				got = s.Policy.Name
			}
			if got != tc.want {
				t.Fatalf("selected %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBadObjectsFailClosedAndAreReported(t *testing.T) {
	good := testfixture.NewAPIKey(t, ns, "good", "svc")
	twin := testfixture.NewAPIKey(t, ns, "twin", "svc")
	twin.Record.Keys = append(twin.Record.Keys, good.Record.Keys[0])
	pol := testfixture.Policy(ns, "p", testfixture.Epoch, []gatehousev1.TrustedIssuer{
		{Name: "missing", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "nope"}},
		{Name: "bad-inline", Issuer: "https://x.example.com", JWKS: &gatehousev1.StaticJWKS{Inline: "not json"}},
		{Name: "remote", Issuer: "https://r.example.com", Discovery: true},
	}, rule("/*"))
	s := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(snapshot.Inputs{
		APIKeys:  []*gatehousev1.APIKey{good.Object(), twin.Object()},
		Policies: []*gatehousev1.AuthPolicy{pol},
	})
	if _, ok := s.Record(good.Key.ID()); ok {
		t.Error("a key ID listed by two records is served; it must be denied")
	}
	if _, ok := s.Record(twin.Key.ID()); !ok {
		t.Error("the conflict took down the other record's own key")
	}
	if _, ok := s.Policy.IssuerFor("https://x.example.com"); !ok {
		t.Error("an issuer with an unusable JWKS vanished; it should stay and deny its tokens")
	} else if iss, _ := s.Policy.IssuerFor("https://x.example.com"); iss.Keys != snapshot.EmptyKeySet {
		t.Error("an unusable JWKS yielded keys")
	}
	all := strings.Join(s.Problems, "\n")
	for _, want := range []string{"appears in more than one APIKey", "no SigningKey nope", "issuer bad-inline: unusable JWKS", "issuer remote: remote key fetching is disabled"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
}

func jwkJSON(t *testing.T, raw any, set map[string]any) map[string]any {
	t.Helper()
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range set {
		if err := k.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	buf, _ := json.Marshal(k)
	var m map[string]any
	_ = json.Unmarshal(buf, &m)
	return m
}

func TestParseJWKSKeepsOnlyUsableVerificationKeys(t *testing.T) {
	es := testfixture.NewSigner(t, jwa.ES256)
	rs := testfixture.NewSigner(t, jwa.RS256)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		key     map[string]any
		wantAlg jwa.SignatureAlgorithm // "" when the key must be skipped
	}{
		{"An EC P-256 key verifies ES256", es.PublicJWK(t), jwa.ES256},
		{"An RSA key with alg RS256 verifies RS256", rs.PublicJWK(t), jwa.RS256},
		{"An RSA key without alg defaults to RS256", jwkJSON(t, rs.Private.Public(), map[string]any{"kid": "r"}), jwa.RS256},
		{"An RSA key with alg PS256 verifies PS256 only", jwkJSON(t, rs.Private.Public(), map[string]any{"kid": "p", "alg": "PS256"}), jwa.PS256},
		{"An RSA key with alg RS384 verifies RS384", jwkJSON(t, rs.Private.Public(), map[string]any{"kid": "r384", "alg": "RS384"}), jwa.RS384},
		{"An RSA key with alg RS512 verifies RS512", jwkJSON(t, rs.Private.Public(), map[string]any{"kid": "r512", "alg": "RS512"}), jwa.RS512},
		{"An RSA key with an even exponent is skipped", jwkJSON(t, &rsa.PublicKey{N: rs.Private.(*rsa.PrivateKey).N, E: 65536}, map[string]any{"kid": "even"}), ""},
		{"A symmetric key is skipped", jwkJSON(t, []byte("0123456789abcdef0123456789abcdef"), map[string]any{"kid": "h"}), ""},
		{"Private key material is skipped", jwkJSON(t, es.Private, map[string]any{"kid": "priv"}), ""},
		{"A key without kid is skipped", jwkJSON(t, es.Private.Public(), nil), ""},
		{"An encryption key is skipped", jwkJSON(t, es.Private.Public(), map[string]any{"kid": "e", "use": "enc"}), ""},
		{"An alg that does not fit the key is skipped", jwkJSON(t, es.Private.Public(), map[string]any{"kid": "m", "alg": "RS256"}), ""},
		{"An HMAC alg on a public key is skipped", jwkJSON(t, rs.Private.Public(), map[string]any{"kid": "hs", "alg": "HS256"}), ""},
		{"A 1024-bit RSA key is skipped", jwkJSON(t, &weak.PublicKey, map[string]any{"kid": "weak"}), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc, _ := json.Marshal(map[string]any{"keys": []any{tc.key}})
			set, problems, err := snapshot.ParseJWKS(doc)
			if err != nil {
				t.Fatal(err)
			}
			kid, _ := tc.key["kid"].(string)
			k, ok := set.Key(kid)
			if tc.wantAlg == "" {
				if ok || set.Len() != 0 || len(problems) != 1 {
					t.Fatalf("the key was kept (problems %v)", problems)
				}
				return
			}
			if !ok || k.Algorithm != tc.wantAlg {
				t.Fatalf("got %v (found %v), want algorithm %s; problems %v", k, ok, tc.wantAlg, problems)
			}
			requireVerifiesOnlyItsAlgorithm(t, k, signerKey(es, rs, k))
		})
	}
	t.Run("A kid that appears twice is dropped altogether", func(t *testing.T) {
		doc, _ := json.Marshal(map[string]any{"keys": []any{es.PublicJWK(t), es.PublicJWK(t)}})
		set, _, _ := snapshot.ParseJWKS(doc)
		if _, ok := set.Key(es.KeyID); ok {
			t.Fatal("an ambiguous kid was kept")
		}
	})
}

// signerKey is the private key of the fixture signer whose public key k is.
func signerKey(es, rs *testfixture.Signer, k *snapshot.VerificationKey) any {
	if _, ok := k.Public.(*rsa.PublicKey); ok {
		return rs.Private
	}
	return es.Private
}

// requireVerifiesOnlyItsAlgorithm signs one input under the key's algorithm
// and under every other algorithm of its key type: the key verifies the
// first, refuses it with a changed byte, and refuses all the others.
func requireVerifiesOnlyItsAlgorithm(t *testing.T, k *snapshot.VerificationKey, priv any) {
	t.Helper()
	input := []byte("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9")
	for _, alg := range []jwa.SignatureAlgorithm{jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512, jwa.ES256} {
		signer, err := jws.NewSigner(alg)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := signer.Sign(input, priv)
		if err != nil {
			continue // not an algorithm of this key type
		}
		err = k.Verify(input, sig)
		if alg != k.Algorithm {
			if err == nil {
				t.Errorf("a %s key verified a %s signature", k.Algorithm, alg)
			}
			continue
		}
		if err != nil {
			t.Errorf("a %s key refused its own signature: %v", alg, err)
		}
		sig[len(sig)/2] ^= 1
		if k.Verify(input, sig) == nil {
			t.Errorf("a %s key verified a changed signature", alg)
		}
	}
}

func TestRuleMatching(t *testing.T) {
	pol := testfixture.Policy(ns, "p", testfixture.Epoch, nil,
		gatehousev1.Rule{Name: "exact", Match: gatehousev1.RuleMatch{Paths: []string{"/health"}}},
		gatehousev1.Rule{Name: "prefix-get", Match: gatehousev1.RuleMatch{Paths: []string{"/api/*"}, Methods: []string{"GET"}}},
		gatehousev1.Rule{Name: "wild-host", Match: gatehousev1.RuleMatch{Hosts: []string{"*.example.com"}}},
		gatehousev1.Rule{Name: "any", Match: gatehousev1.RuleMatch{Hosts: []string{"*"}, Methods: []string{"DELETE"}}},
	)
	s := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(snapshot.Inputs{Policies: []*gatehousev1.AuthPolicy{pol}})
	cases := []struct {
		name, method, host, path, want string
	}{
		{"An exact path matches", "GET", "h", "/health", "exact"},
		{"An exact path does not match a longer one", "GET", "h", "/healthz", ""},
		{"A prefix matches below it", "GET", "h", "/api/v1/x", "prefix-get"},
		{"A prefix rule's method must match", "POST", "h", "/api/v1/x", ""},
		{"A wildcard host matches a subdomain, case-insensitively, with a port", "POST", "A.Example.COM:443", "/x", "wild-host"},
		{"A wildcard host does not match the bare domain", "POST", "example.com", "/x", ""},
		{"A wildcard host does not match a look-alike", "POST", "evilexample.com", "/x", ""},
		{"Rules are tried in order", "DELETE", "a.example.com", "/x", "wild-host"},
		{"The * host matches anything", "DELETE", "[::1]:8080", "/x", "any"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if r := s.Policy.Match(tc.method, tc.host, tc.path); r != nil {
				got = r.Name
			}
			if got != tc.want {
				t.Fatalf("matched %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRulePathsAreMatchedInCanonicalForm(t *testing.T) {
	pol := testfixture.Policy(ns, "p", testfixture.Epoch, nil,
		gatehousev1.Rule{Name: "encoded", Match: gatehousev1.RuleMatch{Paths: []string{"/%61dmin"}}},
		gatehousev1.Rule{Name: "lower-hex", Match: gatehousev1.RuleMatch{Paths: []string{"/caf%c3%a9/*"}}},
		gatehousev1.Rule{Name: "dot-prefix", Match: gatehousev1.RuleMatch{Paths: []string{"/.well-known/*", "/x/.*"}}},
		gatehousev1.Rule{Name: "unusable", Match: gatehousev1.RuleMatch{Paths: []string{"/a/../b*", "/c%2fd", "/e?f"}}},
	)
	s := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(snapshot.Inputs{Policies: []*gatehousev1.AuthPolicy{pol}})
	cases := []struct {
		name, path, want string
	}{
		{"A pattern with an encoded letter matches the decoded path.", "/admin", "encoded"},
		{"A pattern's escapes are upper-cased like the request's.", "/caf%C3%A9/menu", "lower-hex"},
		{"A prefix may end in a dot.", "/x/.hidden", "dot-prefix"},
		{"A prefix may start a segment with a dot.", "/.well-known/jwks.json", "dot-prefix"},
		{"A pattern with a dot segment matches nothing, not everything.", "/b", ""},
		{"A pattern with an encoded slash matches nothing.", "/c/d", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if r := s.Policy.Match("GET", "h", tc.path); r != nil {
				got = r.Name
			}
			if got != tc.want {
				t.Fatalf("matched %q, want %q", got, tc.want)
			}
		})
	}
	if len(s.Problems) != 3 {
		t.Fatalf("want one problem per unusable pattern, got %q", s.Problems)
	}
}

func TestPathNormalizationOptInReachesThePolicy(t *testing.T) {
	pol := testfixture.Policy(ns, "p", testfixture.Epoch, nil, gatehousev1.Rule{Name: "r", Match: gatehousev1.RuleMatch{Paths: []string{"/a//b;x/*"}}})
	pol.Spec.PathNormalization = &gatehousev1.PathNormalization{EmptySegments: gatehousev1.EmptySegmentsMerge, PathParameters: gatehousev1.PathParametersStrip}
	s := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(snapshot.Inputs{Policies: []*gatehousev1.AuthPolicy{pol}})
	if o := s.Policy.PathOptions; !o.MergeSlashes || !o.StripPathParameters {
		t.Fatalf("PathOptions = %+v", o)
	}
	if got := s.Policy.Rules[0].Paths[0]; got != "/a/b/*" {
		t.Fatalf("the pattern was compiled to %q, want /a/b/*", got)
	}
}

func TestAStaticJWKSIsReadFromALabelledConfigMap(t *testing.T) {
	es := testfixture.NewSigner(t, jwa.ES256)
	labelled := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "partner-keys", Namespace: ns, Labels: map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordJWKS}},
		Data:       map[string]string{"keys": testfixture.JWKS(t, es)},
	}
	ref := func(name string) gatehousev1.TrustedIssuer {
		return gatehousev1.TrustedIssuer{Name: name, Issuer: "https://" + name + ".example.com", JWKS: &gatehousev1.StaticJWKS{
			ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "partner-keys"}, Key: "keys"}}}
	}
	missing := ref("missing")
	missing.JWKS.ConfigMapKeyRef.Name = "unlabelled"
	pol := testfixture.Policy(ns, "p", testfixture.Epoch, []gatehousev1.TrustedIssuer{ref("partner"), missing}, rule("/*"))
	s := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(snapshot.Inputs{ConfigMaps: []*corev1.ConfigMap{labelled}, Policies: []*gatehousev1.AuthPolicy{pol}})
	iss, ok := s.Policy.IssuerFor("https://partner.example.com")
	if !ok {
		t.Fatal("the issuer is missing")
	}
	if _, ok := iss.Keys.Key(es.KeyID); !ok {
		t.Fatal("the key of the referenced ConfigMap is missing")
	}
	if !strings.Contains(strings.Join(s.Problems, "\n"), "JWKS ConfigMap unlabelled not found") {
		t.Fatalf("a missing reference is not reported: %v", s.Problems)
	}
}

func TestSigningKeyIssuersTrustOnlyTheStatusTheOperatorWrote(t *testing.T) {
	real, forged := testfixture.NewSigner(t, jwa.ES256), testfixture.NewSigner(t, jwa.ES256)
	const iss = "https://issuer.example.com/shop"
	pol := testfixture.Policy(ns, "main", testfixture.Epoch, []gatehousev1.TrustedIssuer{
		{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}, Audiences: []string{"orders"}},
	}, rule("/*"))
	forgedCM := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "platform-jwks", Namespace: ns, Labels: map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordJWKS, gatehousev1.LabelOwnerName: "platform"}},
		Data:       map[string]string{gatehousev1.JWKSDataKey: testfixture.JWKS(t, forged), gatehousev1.JWKSIssuerKey: iss},
	}
	unpublished := testfixture.SigningKey(t, ns, "platform", iss)
	unpublished.Status = gatehousev1.SigningKeyStatus{}
	cases := []struct {
		name       string
		in         snapshot.Inputs
		wantIssuer bool
	}{
		{"A SigningKey's status JWKS is trusted and a forged JWKS ConfigMap beside it is not.", snapshot.Inputs{
			ConfigMaps: []*corev1.ConfigMap{forgedCM}, SigningKeys: []*gatehousev1.SigningKey{testfixture.SigningKey(t, ns, "platform", iss, real)}}, true},
		{"A forged JWKS ConfigMap gives a SigningKey whose status publishes nothing no keys.", snapshot.Inputs{
			ConfigMaps: []*corev1.ConfigMap{forgedCM}, SigningKeys: []*gatehousev1.SigningKey{unpublished}}, false},
		{"A forged JWKS ConfigMap without any SigningKey gives no keys.", snapshot.Inputs{ConfigMaps: []*corev1.ConfigMap{forgedCM}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Policies = []*gatehousev1.AuthPolicy{pol}
			snap := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(tc.in)
			issuer, ok := snap.Policy.IssuerFor(iss)
			if ok != tc.wantIssuer {
				t.Fatalf("issuer present %v, want %v (problems %v)", ok, tc.wantIssuer, snap.Problems)
			}
			if !ok {
				return
			}
			if _, found := issuer.Keys.Key(forged.KeyID); found {
				t.Fatal("the forged key is trusted")
			}
			if _, found := issuer.Keys.Key(real.KeyID); !found {
				t.Fatal("the published key is not trusted")
			}
		})
	}
}
