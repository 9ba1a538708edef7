// Package testfixture makes the objects sidecar tests need: API keys as
// APIKeys and signing keys as SigningKeys, each with the status the
// operator writes, tokens (well-formed and hostile), AuthPolicies, and a
// settable clock. It is used by tests only.
package testfixture

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// Epoch is the fixed "now" tests start from.
var Epoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at Epoch.
func NewClock() *Clock { return &Clock{now: Epoch} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// APIKey is a generated key and its record.
type APIKey struct {
	Key    apikeyformat.Key
	Record *apikeyformat.Record
}

// NewAPIKey generates a key with an Active record named name.
func NewAPIKey(t testing.TB, namespace, name, subject string, scopes ...string) *APIKey {
	t.Helper()
	k, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &APIKey{Key: k, Record: &apikeyformat.Record{
		Version: apikeyformat.RecordVersion, Name: name, Namespace: namespace, Subject: subject,
		Scopes: scopes, State: apikeyformat.StateActive,
		Keys: []apikeyformat.RecordKey{{KeyID: k.ID(), SHA256: k.Hash()}},
	}}
}

// Object renders the key as an APIKey whose status the operator wrote
// (APIKeyOf its record).
func (a *APIKey) Object() *gatehousev1.APIKey { return APIKeyOf(a.Record) }

// APIKeyOf renders a record as the APIKey whose spec and status say the
// same, so that apikeyformat.RecordOf of it decides as r does: spec from
// the record's name, subject, scopes, expiry and rate limit, status from
// its state and keys (a record's notBefore has no place in status and is
// dropped).
func APIKeyOf(r *apikeyformat.Record) *gatehousev1.APIKey {
	ak := &gatehousev1.APIKey{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatehousev1.GroupVersion.String(), Kind: "APIKey"},
		ObjectMeta: metav1.ObjectMeta{Name: r.Name, Namespace: r.Namespace},
		Spec: gatehousev1.APIKeySpec{
			Subject:    r.Subject,
			Scopes:     r.Scopes,
			SecretName: r.Name + "-key",
		},
		Status: gatehousev1.APIKeyStatus{State: gatehousev1.APIKeyState(r.State)},
	}
	if r.ExpiresAt != nil {
		ak.Spec.ExpiresAt = &metav1.Time{Time: *r.ExpiresAt}
	}
	if rl := r.RateLimit; rl != nil {
		burst := rl.Burst
		ak.Spec.RateLimit = &gatehousev1.RateLimit{RequestsPerSecond: rl.RequestsPerSecond, Burst: &burst}
	}
	for _, k := range r.Keys {
		sk := gatehousev1.APIKeyStatusKey{KeyID: k.KeyID, SHA256: k.SHA256}
		if k.NotAfter != nil {
			sk.NotAfter = &metav1.Time{Time: *k.NotAfter}
		}
		ak.Status.Keys = append(ak.Status.Keys, sk)
	}
	if len(ak.Status.Keys) > 0 {
		ak.Status.KeyID = ak.Status.Keys[0].KeyID
	}
	return ak
}

// CreateAPIKey creates a.Object() on the API server and writes its status
// through the status subresource, as the operator does, and returns the
// created APIKey.
func CreateAPIKey(t testing.TB, c client.Client, a *APIKey) *gatehousev1.APIKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := a.Object()
	ak := want.DeepCopy()
	ak.TypeMeta = metav1.TypeMeta{}
	ak.Status = gatehousev1.APIKeyStatus{}
	if err := c.Create(ctx, ak); err != nil {
		t.Fatalf("creating apikey %s: %v", ak.Name, err)
	}
	ak.Status = want.Status
	if err := c.Status().Update(ctx, ak); err != nil {
		t.Fatalf("writing the status of apikey %s: %v", ak.Name, err)
	}
	return ak
}

// Signer is a private signing key with its kid and algorithm.
type Signer struct {
	Alg     jwa.SignatureAlgorithm
	KeyID   string
	Private crypto.Signer
}

// NewSigner generates a key for alg (ES256, ES384, RS256, PS256, EdDSA).
func NewSigner(t testing.TB, alg jwa.SignatureAlgorithm) *Signer {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case jwa.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jwa.RS256, jwa.PS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jwa.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unsupported algorithm %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &Signer{Alg: alg, Private: priv}
	pub, err := jwk.FromRaw(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	s.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return s
}

// PublicJWK is the signer's public key as a JWK map with kid, alg and use.
func (s *Signer) PublicJWK(t testing.TB) map[string]any {
	t.Helper()
	pub, err := jwk.FromRaw(s.Private.Public())
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, s.KeyID)
	_ = pub.Set(jwk.AlgorithmKey, s.Alg)
	_ = pub.Set(jwk.KeyUsageKey, "sig")
	buf, err := json.Marshal(pub)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// JWKS renders a JWKS document of the signers' public keys.
func JWKS(t testing.TB, signers ...*Signer) string {
	t.Helper()
	keys := []any{}
	for _, s := range signers {
		keys = append(keys, s.PublicJWK(t))
	}
	buf, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(buf)
}

// SigningKey renders SigningKey name as the operator leaves it: its status
// publishes the JWKS of signers for issuer.
func SigningKey(t testing.TB, namespace, name, issuer string, signers ...*Signer) *gatehousev1.SigningKey {
	t.Helper()
	return &gatehousev1.SigningKey{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatehousev1.GroupVersion.String(), Kind: "SigningKey"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       gatehousev1.SigningKeySpec{Issuer: issuer},
		Status:     gatehousev1.SigningKeyStatus{JWKS: JWKS(t, signers...), Issuer: issuer},
	}
}

// Claims returns standard claims valid at now for 15 minutes.
func Claims(issuer, subject string, now time.Time, extra map[string]any) map[string]any {
	c := map[string]any{
		"iss": issuer, "sub": subject, "aud": "orders", "jti": "tok-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// Sign mints a compact JWS with the signer's algorithm and kid. extraHeader
// entries are added to (or, when nil, removed from) the protected header.
func (s *Signer) Sign(t testing.TB, claims map[string]any, extraHeader map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": s.Alg.String(), "kid": s.KeyID, "typ": "JWT"}
	for k, v := range extraHeader {
		if v == nil {
			delete(hdr, k)
		} else {
			hdr[k] = v
		}
	}
	alg := jwa.SignatureAlgorithm(hdr["alg"].(string))
	input := B64JSON(t, hdr) + "." + B64JSON(t, claims)
	signer, err := jws.NewSigner(alg)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Sign([]byte(input), s.Private)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// SignHMAC mints a token with an HMAC algorithm and the given secret, for
// key-confusion tests (the secret being a public key's bytes).
func SignHMAC(t testing.TB, alg jwa.SignatureAlgorithm, secret []byte, hdr, claims map[string]any) string {
	t.Helper()
	h := map[string]any{"alg": alg.String()}
	for k, v := range hdr {
		h[k] = v
	}
	input := B64JSON(t, h) + "." + B64JSON(t, claims)
	signer, err := jws.NewSigner(alg)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Sign([]byte(input), secret)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// B64JSON is base64url(JSON(v)) without padding.
func B64JSON(t testing.TB, v any) string {
	t.Helper()
	buf, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

// Policy returns an AuthPolicy selecting every pod with the given issuers
// and rules.
func Policy(namespace, name string, created time.Time, issuers []gatehousev1.TrustedIssuer, rules ...gatehousev1.Rule) *gatehousev1.AuthPolicy {
	return &gatehousev1.AuthPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatehousev1.GroupVersion.String(), Kind: "AuthPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, CreationTimestamp: metav1.NewTime(created)},
		Spec: gatehousev1.AuthPolicySpec{
			Issuers: issuers,
			APIKeys: gatehousev1.APIKeySource{Header: "x-api-key"},
			Rules:   rules,
		},
	}
}

// YAML renders objects as one multi-document YAML file.
func YAML(t testing.TB, objs ...any) []byte {
	t.Helper()
	var out []byte
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, "---\n"...)
		out = append(out, b...)
	}
	return out
}
