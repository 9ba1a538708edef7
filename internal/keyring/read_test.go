package keyring

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/scheme"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testOverlap = 30 * time.Minute

// oneActiveKey is a key set whose one ES256 key signs from at.
func oneActiveKey(at time.Time) (*KeySet, error) {
	priv, err := Generate(jwa.ES256, 0, rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := PublicKey(priv)
	if err != nil {
		return nil, err
	}
	return &KeySet{Keys: []Key{{ID: priv.KeyID(), Algorithm: jwa.ES256, Private: priv, Public: pub, CreatedAt: at, PublishedAt: at, ActivatesAt: at, Overlap: testOverlap}}}, nil
}

func TestActiveForSignsOnlyWithAPublishedKeyOfTheIssuersOwner(t *testing.T) {
	ks, err := oneActiveKey(t0)
	if err != nil {
		t.Fatal(err)
	}
	forgedSet, err := oneActiveKey(t0)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := ks.JWKS(t0)
	doc, _ := ks.Marshal()
	forgedDoc, _ := forgedSet.Marshal()
	signingKey := func(ns, name string, minute int, issuer string, published bool) *gatehousev1.SigningKey {
		sk := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name),
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(minute) * time.Minute))}, Spec: gatehousev1.SigningKeySpec{Issuer: issuer}}
		if published {
			sk.Status.JWKS, sk.Status.Issuer = string(jwks), issuer
		}
		return sk
	}
	sk := signingKey("ns", "tokens", 0, "https://issuer.test/ns/", true)
	yes := true
	secret := func(controlled bool, typ corev1.SecretType, data []byte) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: SecretName("tokens")}, Type: typ, Data: map[string][]byte{SecretDataKey: data}}
		if controlled {
			s.OwnerReferences = []metav1.OwnerReference{{APIVersion: gatehousev1.GroupVersion.String(), Kind: "SigningKey", Name: "tokens", UID: sk.UID, Controller: &yes}}
		}
		return s
	}
	cases := []struct {
		name    string
		prefix  IssuerPrefix
		objs    []client.Object
		wantErr bool
	}{
		{"The controlled Secret of the right type yields the published active key.", "", []client.Object{sk.DeepCopy(), secret(true, SecretType, doc)}, false},
		{"A look-alike Secret the SigningKey does not control is refused.", "", []client.Object{sk.DeepCopy(), secret(false, SecretType, doc)}, true},
		{"A controlled Secret of another type is refused.", "", []client.Object{sk.DeepCopy(), secret(true, corev1.SecretTypeOpaque, doc)}, true},
		{"A Secret overwritten with a key the status never published is refused.", "", []client.Object{sk.DeepCopy(), secret(true, SecretType, forgedDoc)}, true},
		{"A SigningKey whose status publishes nothing is refused.", "", []client.Object{signingKey("ns", "tokens", 0, "https://issuer.test/ns/", false), secret(true, SecretType, doc)}, true},
		{"A SigningKey whose issuer an older SigningKey elsewhere claims is refused.", "", []client.Object{sk.DeepCopy(), secret(true, SecretType, doc),
			signingKey("other", "first", -1, "https://issuer.test/ns", false)}, true},
		{"A younger claimant elsewhere does not stop the owner.", "", []client.Object{sk.DeepCopy(), secret(true, SecretType, doc),
			signingKey("other", "later", 1, "https://issuer.test/ns", true)}, false},
		{"Under a namespace prefix an older claimant from another namespace does not count.", "https://issuer.test/{namespace}/", []client.Object{sk.DeepCopy(), secret(true, SecretType, doc),
			signingKey("other", "first", -1, "https://issuer.test/ns/", true)}, false},
		{"A SigningKey outside its namespace's prefix is refused.", "https://issuer.test/{namespace}/", []client.Object{signingKey("ns", "tokens", 0, "https://issuer.test/elsewhere/", true), secret(true, SecretType, doc)}, true},
		{"A missing SigningKey is an error.", "", []client.Object{secret(true, SecretType, doc)}, true},
		{"A missing Secret is an error.", "", []client.Object{sk.DeepCopy()}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fake.NewClientBuilder().WithScheme(scheme.New()).WithIndex(&gatehousev1.SigningKey{}, IssuerIndex, IssuerIndexValue).WithObjects(tc.objs...).Build()
			a, got, err := ActiveFor(context.Background(), r, tc.prefix, "ns", "tokens", t0.Add(time.Minute))
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Key.KeyID() != ks.Keys[0].ID || a.Key.Algorithm() != jwa.ES256 || got.Spec.Issuer != sk.Spec.Issuer || a.MaxTokenLifetime != testOverlap {
				t.Fatalf("got kid %s alg %s issuer %s lifetime %s", a.Key.KeyID(), a.Key.Algorithm(), got.Spec.Issuer, a.MaxTokenLifetime)
			}
		})
	}
	r := fake.NewClientBuilder().WithScheme(scheme.New()).WithIndex(&gatehousev1.SigningKey{}, IssuerIndex, IssuerIndexValue).WithObjects(sk.DeepCopy(), secret(true, SecretType, doc)).Build()
	if _, _, err := ActiveFor(context.Background(), r, "", "ns", "tokens", t0.Add(-time.Minute)); !errors.Is(err, ErrNoActiveKey) {
		t.Fatalf("before the first key's activation: %v, want ErrNoActiveKey", err)
	}
}

func TestIssuerPrefixConfinesEachNamespace(t *testing.T) {
	p := IssuerPrefix("https://Auth.example.com/{namespace}/")
	cases := []struct {
		name, namespace, issuer string
		ok                      bool
	}{
		{"An issuer below the namespace's own segment is allowed.", "a", "https://auth.example.com/a/tokens", true},
		{"The namespace's segment itself is allowed, with or without a slash.", "a", "https://auth.example.com/a", true},
		{"Host case does not matter.", "a", "https://AUTH.example.com/a/", true},
		{"Another namespace's segment is refused.", "b", "https://auth.example.com/a/tokens", false},
		{"A namespace that is a prefix of another gets nothing of it.", "a", "https://auth.example.com/ab/tokens", false},
		{"Dot segments cannot climb into another namespace.", "b", "https://auth.example.com/b/../a/", false},
		{"Percent-encoding cannot hide a separator.", "b", "https://auth.example.com/b%2F..%2Fa/", false},
		{"Empty segments are refused.", "a", "https://auth.example.com/a//x", false},
		{"Another host is refused.", "a", "https://evil.example.com/a/", false},
		{"Plain http is refused.", "a", "http://auth.example.com/a/", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := p.Allows(tc.namespace, tc.issuer); (err == nil) != tc.ok {
				t.Fatalf("Allows(%q, %q) = %v, want ok=%v", tc.namespace, tc.issuer, err, tc.ok)
			}
		})
	}
	for _, bad := range []IssuerPrefix{"http://auth.example.com/{namespace}/", "https://auth.example.com/{namespace}", "https://auth.example.com/x{namespace}/", "https://auth.example.com/"} {
		if bad.Validate() == nil {
			t.Errorf("prefix %q was accepted", bad)
		}
	}
	if p.Validate() != nil || IssuerPrefix("").Allows("a", "https://any.example.com/") != nil {
		t.Error("a valid prefix or the empty prefix was refused")
	}
}
