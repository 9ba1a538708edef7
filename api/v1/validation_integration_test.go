package v1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func decode(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("decoding %q: %v", doc, err)
	}
	return u
}

func TestIntegrationSamplesAreAccepted(t *testing.T) {
	env, ns := testenv.Start(t)
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("want a sample of each kind in config/samples, found %v (%v)", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			obj := decode(t, string(data))
			obj.SetNamespace(ns)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("the API server rejected sample %s: %v", f, err)
			}
		})
	}
}

const validAPIKey = `
apiVersion: auth.gatehouse.dev/v1
kind: APIKey
metadata: {name: k}
spec:
  subject: svc
  secretName: k-key
`

const validSigningKey = `
apiVersion: auth.gatehouse.dev/v1
kind: SigningKey
metadata: {name: s}
spec:
  issuer: https://issuer.example.com
`

const validAuthPolicy = `
apiVersion: auth.gatehouse.dev/v1
kind: AuthPolicy
metadata: {name: p}
spec:
  rules:
  - match: {paths: ["/"]}
`

func TestIntegrationInvalidSpecsAreRejectedNamingTheField(t *testing.T) {
	env, ns := testenv.Start(t)
	cases := []struct {
		name string
		base string
		// patch is merged into spec.
		patch string
		// wantField must appear in the API server's message.
		wantField string
	}{
		{"an unknown algorithm", validSigningKey, `algorithm: HS256`, "spec.algorithm"},
		{"an RSA key size below 2048", validSigningKey, `{algorithm: RS256, rsaKeySize: 1024}`, "spec.rsaKeySize"},
		{"an RSA key size with an EC algorithm", validSigningKey, `{algorithm: ES256, rsaKeySize: 2048}`, "spec.rsaKeySize"},
		{"a SigningKey rotation period under one hour", validSigningKey, `rotation: {every: 30m, overlap: 1m, propagation: 1m}`, "spec.rotation.every"},
		{"an overlap not shorter than the rotation period", validSigningKey, `rotation: {every: 2h, overlap: 2h}`, "spec.rotation.overlap"},
		{"a malformed duration", validSigningKey, `rotation: {every: "thirty days"}`, "spec.rotation.every"},
		{"an issuer that is not an https URL", validSigningKey, `issuer: http://issuer.example.com`, "spec.issuer"},
		{"an issuer with a query", validSigningKey, `issuer: "https://issuer.example.com/?a=b"`, "spec.issuer"},
		{"a zero rate limit", validAPIKey, `rateLimit: {requestsPerSecond: 0}`, "spec.rateLimit.requestsPerSecond"},
		{"a negative rate limit burst", validAPIKey, `rateLimit: {requestsPerSecond: 5, burst: -1}`, "spec.rateLimit.burst"},
		{"both a delivery Secret and a caller-supplied hash", validAPIKey, `hash: {keyID: abcdefghijklmnop, sha256: "` + strings.Repeat("a", 64) + `"}`, "spec.secretName and spec.hash"},
		{"a malformed hash", `{apiVersion: auth.gatehouse.dev/v1, kind: APIKey, metadata: {name: k}, spec: {subject: s}}`, `hash: {keyID: abcdefghijklmnop, sha256: "xyz"}`, "spec.hash.sha256"},
		{"neither a delivery Secret nor a hash", `{apiVersion: auth.gatehouse.dev/v1, kind: APIKey, metadata: {name: k}, spec: {subject: s}}`, `{}`, "spec.secretName and spec.hash"},
		{"an empty scope string", validAPIKey, `scopes: [""]`, "spec.scopes[0]"},
		{"a scope with whitespace", validAPIKey, `scopes: ["orders read"]`, "spec.scopes[0]"},
		{"an empty subject", validAPIKey, `subject: ""`, "spec.subject"},
		{"an API key rotation under one hour", validAPIKey, `rotation: {every: 10m, gracePeriod: 1m}`, "spec.rotation.every"},
		{"a grace period not shorter than the rotation period", validAPIKey, `rotation: {every: 2h, gracePeriod: 3h}`, "spec.rotation.gracePeriod"},
		{"rotation of a caller-supplied hash", `{apiVersion: auth.gatehouse.dev/v1, kind: APIKey, metadata: {name: k}, spec: {subject: s}}`, `{hash: {keyID: abcdefghijklmnop, sha256: "` + strings.Repeat("a", 64) + `"}, rotation: {every: 2h}}`, "spec.rotation"},
		{"a token lifetime over 24h", validAPIKey, `tokenExchange: {signingKeyName: s, maxLifetime: 48h}`, "spec.tokenExchange.maxLifetime"},
		{"an AuthPolicy rule with no match", validAuthPolicy, `rules: [{match: {}}]`, "spec.rules[0].match"},
		{"an AuthPolicy with no rules", validAuthPolicy, `rules: []`, "spec.rules"},
		{"an unknown AuthPolicy action", validAuthPolicy, `rules: [{match: {paths: ["/"]}, action: Maybe}]`, "spec.rules[0].action"},
		{"an unknown HTTP method", validAuthPolicy, `rules: [{match: {methods: ["FETCH"]}}]`, "spec.rules[0].match.methods[0]"},
		{"a relative path", validAuthPolicy, `rules: [{match: {paths: ["orders"]}}]`, "spec.rules[0].match.paths[0]"},
		{"an issuer with two key sources", validAuthPolicy, `issuers: [{name: a, issuer: "https://a.example.com", discovery: true, jwksURI: "https://a.example.com/jwks"}]`, "spec.issuers[0]"},
		{"a remote issuer without an issuer", validAuthPolicy, `issuers: [{name: a, discovery: true}]`, "spec.issuers[0]"},
		{"a jwksURI that is not https", validAuthPolicy, `issuers: [{name: a, issuer: "https://a.example.com", jwksURI: "http://a.example.com/jwks"}]`, "spec.issuers[0].jwksURI"},
		{"an unknown empty-segments action", validAuthPolicy, `pathNormalization: {emptySegments: Keep}`, "spec.pathNormalization.emptySegments"},
		{"an unknown path-parameters action", validAuthPolicy, `pathNormalization: {pathParameters: Literal}`, "spec.pathNormalization.pathParameters"},
		{"a clock skew over five minutes", validAuthPolicy, `issuers: [{name: a, signingKeyRef: {name: s}, clockSkew: 1h}]`, "spec.issuers[0].clockSkew"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := decode(t, tc.base)
			patch := decode(t, tc.patch)
			spec, _, _ := unstructured.NestedMap(obj.Object, "spec")
			for k, v := range patch.Object {
				spec[k] = v
			}
			if err := unstructured.SetNestedMap(obj.Object, spec, "spec"); err != nil {
				t.Fatal(err)
			}
			obj.SetNamespace(ns)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := env.Client.Create(ctx, obj)
			if err == nil {
				t.Fatalf("the API server accepted an invalid %s (%s)", obj.GetKind(), tc.patch)
			}
			if !strings.Contains(err.Error(), tc.wantField) {
				t.Fatalf("rejection does not name %q: %v", tc.wantField, err)
			}
		})
	}
}

func TestIntegrationDefaultsAreAppliedByTheAPIServer(t *testing.T) {
	env, ns := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sk := &gatehousev1.SigningKey{}
	sk.Name, sk.Namespace = "defaults", ns
	sk.Spec.Issuer = "https://issuer.example.com"
	if err := env.Client.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	got := &gatehousev1.SigningKey{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(sk), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Algorithm != gatehousev1.ES256 {
		t.Errorf("algorithm defaulted to %q, want ES256", got.Spec.Algorithm)
	}
	r := got.Spec.Rotation
	if r == nil || r.Every == nil || r.Overlap == nil || r.Propagation == nil {
		t.Fatalf("rotation not defaulted: %+v", r)
	}
	if r.Every.Duration != 720*time.Hour || r.Overlap.Duration != time.Hour || r.Propagation.Duration != 5*time.Minute {
		t.Errorf("rotation defaulted to every=%v overlap=%v propagation=%v, want 720h/1h/5m", r.Every, r.Overlap, r.Propagation)
	}

	ak := &gatehousev1.APIKey{}
	ak.Name, ak.Namespace = "defaults", ns
	ak.Spec = gatehousev1.APIKeySpec{
		Subject:       "svc",
		SecretName:    "defaults-key",
		Rotation:      &gatehousev1.APIKeyRotation{Every: mustDuration(t, "48h")},
		TokenExchange: &gatehousev1.TokenExchange{SigningKeyName: "defaults"},
	}
	if err := env.Client.Create(ctx, ak); err != nil {
		t.Fatal(err)
	}
	gotKey := &gatehousev1.APIKey{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ak), gotKey); err != nil {
		t.Fatal(err)
	}
	if g := gotKey.Spec.Rotation.GracePeriod; g == nil || g.Duration != 24*time.Hour {
		t.Errorf("gracePeriod defaulted to %v, want 24h", g)
	}
	if l := gotKey.Spec.TokenExchange.MaxLifetime; l == nil || l.Duration != 15*time.Minute {
		t.Errorf("maxLifetime defaulted to %v, want 15m", l)
	}

	ap := &gatehousev1.AuthPolicy{}
	ap.Name, ap.Namespace = "defaults", ns
	ap.Spec.Issuers = []gatehousev1.TrustedIssuer{{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "defaults"}}}
	ap.Spec.Rules = []gatehousev1.Rule{{Match: gatehousev1.RuleMatch{Paths: []string{"/"}}}}
	ap.Spec.PathNormalization = &gatehousev1.PathNormalization{}
	if err := env.Client.Create(ctx, ap); err != nil {
		t.Fatal(err)
	}
	gotPolicy := &gatehousev1.AuthPolicy{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ap), gotPolicy); err != nil {
		t.Fatal(err)
	}
	if gotPolicy.Spec.APIKeys.Header != "x-api-key" {
		t.Errorf("apiKeys.header defaulted to %q, want x-api-key", gotPolicy.Spec.APIKeys.Header)
	}
	if gotPolicy.Spec.Rules[0].Action != gatehousev1.ActionAuthenticate {
		t.Errorf("rule action defaulted to %q, want Authenticate", gotPolicy.Spec.Rules[0].Action)
	}
	if c := gotPolicy.Spec.Issuers[0].ClockSkew; c == nil || c.Duration != 30*time.Second {
		t.Errorf("clockSkew defaulted to %v, want 30s", c)
	}
	if pn := gotPolicy.Spec.PathNormalization; pn == nil || pn.EmptySegments != gatehousev1.EmptySegmentsReject || pn.PathParameters != gatehousev1.PathParametersReject {
		t.Errorf("pathNormalization defaulted to %+v, want Reject for both", pn)
	}
}

func mustDuration(t *testing.T, s string) metav1.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return metav1.Duration{Duration: d}
}
