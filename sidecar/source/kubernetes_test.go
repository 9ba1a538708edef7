package source

import (
	"crypto/rand"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// TestSlimObjectKeepsWhatTheBuilderReads checks that a snapshot built from
// slimmed API key record and JWKS ConfigMaps is the one built from the
// originals, and that the slimmed objects dropped the rest.
func TestSlimObjectKeepsWhatTheBuilderReads(t *testing.T) {
	k, err := apikeyformat.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rec := &apikeyformat.Record{Version: 1, Name: "billing", Namespace: "shop", Subject: "svc", State: apikeyformat.StateActive,
		Keys: []apikeyformat.RecordKey{{KeyID: k.ID(), SHA256: k.Hash()}}}
	data, _ := rec.Marshal()
	meta := func(name, kind string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "shop", UID: "uid-" + "x", ResourceVersion: "42",
			Labels:        map[string]string{gatehousev1.LabelRecord: kind, gatehousev1.LabelOwnerName: name, "app.kubernetes.io/managed-by": "gatehouse"},
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "gatehouse"}},
		}
	}
	orig := &corev1.ConfigMap{ObjectMeta: meta("apikey-billing", gatehousev1.RecordAPIKey), Data: map[string]string{gatehousev1.RecordDataKey: string(data)}}
	jwks := &corev1.ConfigMap{ObjectMeta: meta("jwks-platform", gatehousev1.RecordJWKS), Data: map[string]string{gatehousev1.JWKSDataKey: `{"keys":[]}`}}
	origCopy, jwksCopy := orig.DeepCopy(), jwks.DeepCopy()
	slim, err := slimObject(origCopy)
	if err != nil {
		t.Fatal(err)
	}
	slimJWKS, _ := slimObject(jwksCopy)
	sc := slim.(*corev1.ConfigMap)
	if sc.Annotations != nil || sc.ManagedFields != nil || len(sc.Labels) != 1 || sc.UID != orig.UID || sc.ResourceVersion != orig.ResourceVersion {
		t.Fatalf("slimmed record ConfigMap: %+v", sc.ObjectMeta)
	}
	if j := slimJWKS.(*corev1.ConfigMap); j.Annotations != nil || j.ManagedFields != nil || j.Labels[gatehousev1.LabelOwnerName] != "jwks-platform" {
		t.Fatalf("slimmed JWKS ConfigMap: %+v", j.ObjectMeta)
	}
	build := func(cms ...*corev1.ConfigMap) *snapshot.Snapshot {
		return snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "shop"}).Build(snapshot.Inputs{ConfigMaps: cms})
	}
	a, b := build(orig, jwks), build(sc, slimJWKS.(*corev1.ConfigMap))
	ra, okA := a.Record(k.ID())
	rb, okB := b.Record(k.ID())
	if !okA || !okB || ra.Subject() != rb.Subject() || a.KeyCount() != b.KeyCount() {
		t.Fatal("the slimmed record ConfigMap builds another snapshot")
	}
	if tomb, _ := slimObject("tombstone"); tomb != "tombstone" {
		t.Fatal("a non-object was changed")
	}
}
