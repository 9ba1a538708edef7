package source

import (
	"crypto/rand"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// TestSlimObjectKeepsWhatTheBuilderReads checks that the record compiled
// from a slimmed APIKey is the one compiled from the original, that a
// snapshot built from slimmed objects is the one built from the originals,
// and that the slimmed objects dropped the rest.
func TestSlimObjectKeepsWhatTheBuilderReads(t *testing.T) {
	k, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	prev, _ := apikeyformat.Generate(rand.Reader)
	meta := func(name string, labels map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "shop", UID: "uid-x", ResourceVersion: "42",
			Labels:          labels,
			Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "gatehouse"}},
			OwnerReferences: []metav1.OwnerReference{{Name: "x"}},
		}
	}
	burst := int32(5)
	now := metav1.Now()
	orig := &gatehousev1.APIKey{
		ObjectMeta: meta("billing", map[string]string{"team": "a"}),
		Spec: gatehousev1.APIKeySpec{Subject: "svc", Scopes: []string{"a", "b"}, SecretName: "billing-key", ExpiresAt: &metav1.Time{Time: now.Add(3600e9)},
			RateLimit:     &gatehousev1.RateLimit{RequestsPerSecond: 3, Burst: &burst},
			TokenExchange: &gatehousev1.TokenExchange{SigningKeyName: "platform"}},
		Status: gatehousev1.APIKeyStatus{State: gatehousev1.APIKeyActive, KeyID: k.ID(), Conditions: []metav1.Condition{{Type: "Ready"}},
			Keys: []gatehousev1.APIKeyStatusKey{
				{KeyID: k.ID(), SHA256: k.Hash(), IssuedAt: &now},
				{KeyID: prev.ID(), SHA256: prev.Hash(), IssuedAt: &now, NotAfter: &metav1.Time{Time: now.Add(60e9)}},
			}},
	}
	jwks := &corev1.ConfigMap{ObjectMeta: meta("jwks-platform", map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordJWKS, gatehousev1.LabelOwnerName: "platform"}),
		Data: map[string]string{gatehousev1.JWKSDataKey: `{"keys":[]}`}}
	slim, err := slimObject(orig.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	sa := slim.(*gatehousev1.APIKey)
	if sa.Annotations != nil || sa.ManagedFields != nil || sa.Labels != nil || sa.OwnerReferences != nil || sa.Status.Conditions != nil ||
		sa.Spec.TokenExchange != nil || sa.Status.Keys[0].IssuedAt != nil || sa.UID != orig.UID || sa.ResourceVersion != orig.ResourceVersion {
		t.Fatalf("slimmed APIKey kept more than it needs: %+v", sa)
	}
	want, got := apikeyformat.RecordOf(orig), apikeyformat.RecordOf(sa)
	want.TokenExchange = nil // the sidecar does not exchange tokens
	for i := range want.Keys {
		want.Keys[i].IssuedAt = nil
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("the slimmed APIKey compiles to another record:\n%+v\n%+v", want, got)
	}
	slimJWKS, _ := slimObject(jwks.DeepCopy())
	if j := slimJWKS.(*corev1.ConfigMap); j.Annotations != nil || j.ManagedFields != nil || j.Labels[gatehousev1.LabelOwnerName] != "platform" {
		t.Fatalf("slimmed JWKS ConfigMap: %+v", j.ObjectMeta)
	}
	build := func(ak *gatehousev1.APIKey) *snapshot.Snapshot {
		return snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "shop"}).Build(snapshot.Inputs{APIKeys: []*gatehousev1.APIKey{ak}})
	}
	a, b := build(orig), build(sa)
	for _, key := range []apikeyformat.Key{k, prev} {
		ra, okA := a.Record(key.ID())
		rb, okB := b.Record(key.ID())
		if !okA || !okB || ra.Subject() != rb.Subject() || ra.Check(key, now.Time) != rb.Check(key, now.Time) || ra.ScopesJoined() != rb.ScopesJoined() {
			t.Fatal("the slimmed APIKey builds another snapshot")
		}
	}
	if tomb, _ := slimObject("tombstone"); tomb != "tombstone" {
		t.Fatal("a non-object was changed")
	}
}
