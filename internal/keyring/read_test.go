package keyring

import (
	"context"
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

func TestActiveForReadsOnlyTheSecretTheSigningKeyControls(t *testing.T) {
	sk := &gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tokens", UID: types.UID("uid-1")}, Spec: gatehousev1.SigningKeySpec{Issuer: "https://issuer.test"}}
	plan, err := Decide(&KeySet{}, testPolicy(), nil, t0, (&countingGen{}).gen)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := plan.KeySet.Marshal()
	yes := true
	secret := func(controlled bool, typ corev1.SecretType) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: SecretName("tokens")}, Type: typ, Data: map[string][]byte{SecretDataKey: doc}}
		if controlled {
			s.OwnerReferences = []metav1.OwnerReference{{APIVersion: gatehousev1.GroupVersion.String(), Kind: "SigningKey", Name: "tokens", UID: sk.UID, Controller: &yes}}
		}
		return s
	}
	cases := []struct {
		name    string
		objs    []client.Object
		wantErr bool
	}{
		{"The controlled Secret of the right type yields the active key.", []client.Object{sk.DeepCopy(), secret(true, SecretType)}, false},
		{"A look-alike Secret the SigningKey does not control is refused.", []client.Object{sk.DeepCopy(), secret(false, SecretType)}, true},
		{"A controlled Secret of another type is refused.", []client.Object{sk.DeepCopy(), secret(true, corev1.SecretTypeOpaque)}, true},
		{"A missing SigningKey is an error.", []client.Object{secret(true, SecretType)}, true},
		{"A missing Secret is an error.", []client.Object{sk.DeepCopy()}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(tc.objs...).Build()
			a, got, err := ActiveFor(context.Background(), r, "ns", "tokens", t0.Add(time.Minute))
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Key.KeyID() != plan.KeySet.Keys[0].ID || a.Key.Algorithm() != jwa.ES256 || got.Spec.Issuer != sk.Spec.Issuer || a.MaxTokenLifetime != testPolicy().Overlap {
				t.Fatalf("got kid %s alg %s issuer %s lifetime %s", a.Key.KeyID(), a.Key.Algorithm(), got.Spec.Issuer, a.MaxTokenLifetime)
			}
		})
	}
	r := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(sk.DeepCopy(), secret(true, SecretType)).Build()
	if _, _, err := ActiveFor(context.Background(), r, "ns", "tokens", t0.Add(-time.Minute)); !errors.Is(err, ErrNoActiveKey) {
		t.Fatalf("before the first key's activation: %v, want ErrNoActiveKey", err)
	}
}
