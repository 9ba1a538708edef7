package keyring

import (
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi"}

// assertPublicOnly fails when any key of a JWKS document carries a private
// member or lacks kid, alg or use=sig.
func assertPublicOnly(t *testing.T, doc []byte) {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatalf("jwks is not json: %v", err)
	}
	for _, k := range set.Keys {
		for _, f := range privateMembers {
			if _, ok := k[f]; ok {
				t.Fatalf("jwks key %v has private member %q", k["kid"], f)
			}
		}
		if k["kid"] == "" || k["alg"] == nil || k["use"] != "sig" {
			t.Fatalf("jwks key lacks kid, alg or use=sig: kid=%v alg=%v use=%v", k["kid"], k["alg"], k["use"])
		}
	}
}

func signToken(t *testing.T, priv jwk.Key, now time.Time, lifetime time.Duration) []byte {
	t.Helper()
	tok, err := jwt.NewBuilder().Issuer("https://issuer.test").Subject("svc").IssuedAt(now).Expiration(now.Add(lifetime)).Build()
	if err != nil {
		t.Fatal(err)
	}
	alg := priv.Algorithm().(jwa.SignatureAlgorithm)
	signed, err := jwt.Sign(tok, jwt.WithKey(alg, priv))
	if err != nil {
		t.Fatalf("signing with %s: %v", alg, err)
	}
	return signed
}

// verify checks a token against a JWKS document the way verifiers do: the
// key is found by kid and the algorithm comes from the key.
func verify(jwksDoc, token []byte, at time.Time) error {
	set, err := jwk.Parse(jwksDoc)
	if err != nil {
		return err
	}
	_, err = jwt.Parse(token, jwt.WithKeySet(set, jws.WithRequireKid(true), jws.WithInferAlgorithmFromKey(false), jws.WithUseDefault(false)),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return at })), jwt.WithValidate(true))
	return err
}

func TestGenerateMakesAKeyPerAlgorithmThatVerifiesThroughItsPublicJWKS(t *testing.T) {
	cases := []struct {
		name string
		alg  jwa.SignatureAlgorithm
		bits int
		kty  string
	}{
		{"ES256 makes a P-256 key.", jwa.ES256, 0, "EC"},
		{"ES384 makes a P-384 key.", jwa.ES384, 0, "EC"},
		{"RS256 makes a 2048-bit RSA key.", jwa.RS256, 2048, "RSA"},
		{"PS256 makes a 2048-bit RSA key.", jwa.PS256, 2048, "RSA"},
		{"EdDSA makes an Ed25519 key.", jwa.EdDSA, 0, "OKP"},
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			priv, err := Generate(tc.alg, tc.bits, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if !IsPrivate(priv) || string(priv.KeyType()) != tc.kty || priv.Algorithm() != tc.alg || priv.KeyUsage() != "sig" {
				t.Fatalf("got private=%v kty=%s alg=%v use=%s", IsPrivate(priv), priv.KeyType(), priv.Algorithm(), priv.KeyUsage())
			}
			pub, err := PublicKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			tpPriv, _ := Thumbprint(priv)
			tpPub, _ := Thumbprint(pub)
			if priv.KeyID() != tpPriv || pub.KeyID() != tpPub || tpPriv != tpPub || len(tpPriv) != 43 {
				t.Fatalf("kid is not the RFC 7638 thumbprint: priv kid %s tp %s, pub kid %s tp %s", priv.KeyID(), tpPriv, pub.KeyID(), tpPub)
			}
			if tc.bits != 0 && RSABits(priv) != tc.bits {
				t.Fatalf("rsa key has %d bits, want %d", RSABits(priv), tc.bits)
			}
			ks := &KeySet{Keys: []Key{{ID: priv.KeyID(), Algorithm: tc.alg, Private: priv, Public: pub, CreatedAt: now, ActivatesAt: now, Overlap: time.Hour}}}
			doc, err := ks.JWKS(now)
			if err != nil {
				t.Fatal(err)
			}
			assertPublicOnly(t, doc)
			signer, err := ks.ActiveSigningKey(now)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify(doc, signToken(t, signer, now, time.Minute), now); err != nil {
				t.Fatalf("token signed with the %s private key does not verify with the JWKS: %v", tc.alg, err)
			}
			// The algorithm comes from the key: a token whose header
			// claims another algorithm for the same kid is refused.
			if tc.alg == jwa.RS256 {
				other, _ := priv.Clone()
				_ = other.Set(jwk.AlgorithmKey, jwa.PS256)
				if err := verify(doc, signToken(t, other, now, time.Minute), now); err == nil {
					t.Fatal("a PS256 token verified against an RS256 key")
				}
			}
		})
	}
}

func TestGenerateRefusesUnsupportedAlgorithmsAndSizes(t *testing.T) {
	cases := []struct {
		name string
		alg  jwa.SignatureAlgorithm
		bits int
	}{
		{"HS256 is symmetric and refused.", jwa.HS256, 0},
		{"none is refused.", jwa.NoSignature, 0},
		{"RS256 with 1024 bits is refused.", jwa.RS256, 1024},
		{"PS256 without a size is refused.", jwa.PS256, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if k, err := Generate(tc.alg, tc.bits, rand.Reader); err == nil {
				t.Fatalf("generated a %s key of type %s", tc.alg, k.KeyType())
			}
		})
	}
}

func TestKeySetRoundTripsThroughTheSecretAndRejectsTamperedEntries(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := mustKey(t, jwa.ES256)
	b := mustKey(t, jwa.EdDSA)
	ks := &KeySet{
		LastRotationRequest: "2026-01-01T00:00:00Z",
		Keys: []Key{
			{ID: a.ID, Algorithm: a.Algorithm, Private: a.Private, Public: a.Public, CreatedAt: now, PublishedAt: now, ActivatesAt: now, RetiresAt: now.Add(time.Hour), RemoveAt: now.Add(2 * time.Hour), Overlap: time.Hour},
			{ID: b.ID, Algorithm: b.Algorithm, Private: b.Private, Public: b.Public, CreatedAt: now, PublishedAt: now, ActivatesAt: now.Add(time.Hour), Overlap: time.Hour},
			{ID: "revoked-kid", Algorithm: jwa.ES256, CreatedAt: now, RevokedAt: now, RemoveAt: now.Add(time.Hour)},
		},
	}
	data, err := ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadKeySet(&corev1.Secret{Type: SecretType, Data: map[string][]byte{SecretDataKey: data}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Keys) != 3 || len(got.Invalid) != 0 || got.LastRotationRequest != ks.LastRotationRequest {
		t.Fatalf("round trip lost data: %d keys, invalid %v, request %q", len(got.Keys), got.Invalid, got.LastRotationRequest)
	}
	again, _ := got.Marshal()
	if string(again) != string(data) {
		t.Fatalf("round trip is not stable:\n%s\n%s", data, again)
	}
	if k, err := got.ActiveSigningKey(now.Add(90 * time.Minute)); err != nil || k.KeyID() != b.ID {
		t.Fatalf("active key after the hand-over is %v (%v), want %s", k, err, b.ID)
	}

	tamper := func(edit func(m map[string]any)) []byte {
		var doc map[string]any
		_ = json.Unmarshal(data, &doc)
		edit(doc["keys"].([]any)[0].(map[string]any))
		out, _ := json.Marshal(doc)
		return out
	}
	cases := []struct {
		name string
		doc  []byte
	}{
		{"An entry whose kid is not its key's thumbprint is refused.", tamper(func(m map[string]any) { m["kid"] = b.ID })},
		{"An entry whose alg differs from its JWK is refused.", tamper(func(m map[string]any) { m["alg"] = "ES384" })},
		{"An entry holding only a public key is refused.", tamper(func(m map[string]any) {
			pub, _ := json.Marshal(a.Public)
			var pm map[string]any
			_ = json.Unmarshal(pub, &pm)
			m["jwk"] = pm
		})},
		{"An entry with a malformed JWK is refused.", tamper(func(m map[string]any) { m["jwk"] = map[string]any{"kty": "EC"} })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeySet(tc.doc)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Keys) != 2 || len(got.Invalid) != 1 || got.Key(a.ID) != nil {
				t.Fatalf("want the tampered entry left out and listed: %d keys, invalid %v", len(got.Keys), got.Invalid)
			}
		})
	}

	for name, sec := range map[string]*corev1.Secret{
		"A Secret of another type is refused.":     {Type: corev1.SecretTypeOpaque, Data: map[string][]byte{SecretDataKey: data}},
		"A Secret without the document is refused": {Type: SecretType},
		"A document that is not JSON is refused.":  {Type: SecretType, Data: map[string][]byte{SecretDataKey: []byte("{not json")}},
		"A document of another version is refused": {Type: SecretType, Data: map[string][]byte{SecretDataKey: []byte(`{"version":2,"keys":[]}`)}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadKeySet(sec); err == nil {
				t.Fatal("loaded")
			} else if strings.Contains(err.Error(), `"d"`) {
				t.Fatalf("error quotes the document: %v", err)
			}
		})
	}
}

func TestPublishedKeysIgnoresEntriesThatAreNotTheirThumbprintOrArePrivate(t *testing.T) {
	a, b := mustKey(t, jwa.ES256), mustKey(t, jwa.ES256)
	forged, _ := b.Public.Clone()
	_ = forged.Set(jwk.KeyIDKey, a.ID)
	set := jwk.NewSet()
	_ = set.AddKey(a.Public)
	_ = set.AddKey(b.Private)
	doc, _ := json.Marshal(set)
	got := PublishedKeys(doc)
	if len(got) != 1 || got[a.ID] == nil {
		t.Fatalf("got %v, want only %s", got, a.ID)
	}
	set2 := jwk.NewSet()
	_ = set2.AddKey(forged)
	doc2, _ := json.Marshal(set2)
	if got := PublishedKeys(doc2); len(got) != 0 {
		t.Fatalf("a key published under another key's kid was accepted: %v", got)
	}
}

type testKey struct {
	ID        string
	Algorithm jwa.SignatureAlgorithm
	Private   jwk.Key
	Public    jwk.Key
}

func mustKey(t *testing.T, alg jwa.SignatureAlgorithm) testKey {
	t.Helper()
	priv, err := Generate(alg, 2048, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := PublicKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{ID: priv.KeyID(), Algorithm: alg, Private: priv, Public: pub}
}

func TestObjectNamesStayValidForLongSigningKeyNames(t *testing.T) {
	long := strings.Repeat("a", 250)
	cases := []struct {
		name, got, want string
	}{
		{"A short name gets the plain Secret suffix.", SecretName("tokens"), "tokens-signing-keys"},
		{"A short name gets the plain ConfigMap suffix.", JWKSConfigMapName(&gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Name: "tokens"}}), "tokens-jwks"},
		{"spec.jwksConfigMapName wins.", JWKSConfigMapName(&gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Name: "tokens"}, Spec: gatehousev1.SigningKeySpec{JWKSConfigMapName: "custom"}}), "custom"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	a, b := SecretName(long), SecretName(long[:249]+"b")
	if len(a) > 253 || !strings.HasSuffix(a, "-signing-keys") || a == b {
		t.Fatalf("long names: %q (%d) and %q", a, len(a), b)
	}
}

func TestPublishedKeysSurvivesAMalformedHandEditedKey(t *testing.T) {
	// An EC coordinate wider than the curve made jwx panic while computing
	// the thumbprint (found by FuzzParseKeySet).
	doc := []byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"0","x":"","y":"00000000000000000000000000000000000000000000"}]}`)
	if got := PublishedKeys(doc); len(got) != 0 {
		t.Fatalf("a malformed key was accepted: %v", got)
	}
}
