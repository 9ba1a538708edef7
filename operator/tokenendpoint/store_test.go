package tokenendpoint

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/scheme"
)

func storeAPIKey(ns, name, subject string, recorded time.Time, keys ...gatehousev1.APIKeyStatusKey) *gatehousev1.APIKey {
	for i := range keys {
		keys[i].IssuedAt = &metav1.Time{Time: recorded}
	}
	return &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       gatehousev1.APIKeySpec{Subject: subject, SecretName: name + "-key"},
		Status:     gatehousev1.APIKeyStatus{State: gatehousev1.APIKeyActive, Keys: keys},
	}
}

func TestTheStoreFindsAKeyOnlyWhereItsHashIsAndNoOtherNamespaceCanBreakIt(t *testing.T) {
	key, _ := apikeyformat.Generate(rand.Reader)
	other, _ := apikeyformat.Generate(rand.Reader)
	real := gatehousev1.APIKeyStatusKey{KeyID: key.ID(), SHA256: key.Hash()}
	sameIDOtherHash := gatehousev1.APIKeyStatusKey{KeyID: key.ID(), SHA256: other.Hash()}
	cases := []struct {
		name        string
		objs        []client.Object
		wantSubject string
		wantErr     error
	}{
		{"The one APIKey holding the key is found.",
			[]client.Object{storeAPIKey("a", "k", "svc:a", t0, real)}, "svc:a", nil},
		{"An APIKey elsewhere listing the same key ID with another hash changes nothing.",
			[]client.Object{storeAPIKey("a", "k", "svc:a", t0, real), storeAPIKey("b", "dup", "svc:b", t0.Add(-time.Hour), sameIDOtherHash)}, "svc:a", nil},
		{"A copy of the hash recorded later in another namespace does not take the key over.",
			[]client.Object{storeAPIKey("a", "k", "svc:a", t0, real), storeAPIKey("b", "copy", "svc:b", t0.Add(time.Minute), real)}, "svc:a", nil},
		{"An APIKey listing the key ID with another hash alone does not find it.",
			[]client.Object{storeAPIKey("b", "dup", "svc:b", t0, sameIDOtherHash)}, "", ErrNotFound},
		{"An APIKey given by spec.hash counts only with the key status holds for it.",
			[]client.Object{func() client.Object {
				ak := storeAPIKey("a", "k", "svc:a", t0, real)
				ak.Spec.SecretName, ak.Spec.Hash = "", &gatehousev1.APIKeyHash{KeyID: other.ID(), SHA256: other.Hash()}
				return ak
			}()}, "", ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme.New()).WithIndex(&gatehousev1.APIKey{}, IndexKeyID, keyIDsOf).WithObjects(tc.objs...).Build()
			rec, err := (&KubeStore{Reader: c}).RecordForKey(context.Background(), key)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || rec.Subject != tc.wantSubject {
				t.Fatalf("got %+v, %v; want subject %s", rec, err, tc.wantSubject)
			}
		})
	}
}

func TestTwoAPIKeysOfOneNamespaceHoldingAKeyRefuseIt(t *testing.T) {
	key, _ := apikeyformat.Generate(rand.Reader)
	real := gatehousev1.APIKeyStatusKey{KeyID: key.ID(), SHA256: key.Hash()}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithIndex(&gatehousev1.APIKey{}, IndexKeyID, keyIDsOf).
		WithObjects(storeAPIKey("a", "k", "svc:a", t0, real), storeAPIKey("a", "twin", "svc:twin", t0, real)).Build()
	if _, err := (&KubeStore{Reader: c}).RecordForKey(context.Background(), key); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want a refusal", err)
	}
}
