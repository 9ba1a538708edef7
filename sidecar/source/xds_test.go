package source

import (
	"crypto/rand"
	"reflect"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/operator/xds"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// The record the sidecar rebuilds from the operator's APIKeyEntry is the
// one it would compile from the APIKey itself.
func TestRecordFromXDSIsRecordOf(t *testing.T) {
	k, _ := apikeyformat.Generate(rand.Reader)
	prev, _ := apikeyformat.Generate(rand.Reader)
	burst := int32(5)
	now := time.Now().UTC().Truncate(time.Second)
	ak := &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: "shop"},
		Spec: gatehousev1.APIKeySpec{Subject: "svc", Scopes: []string{"a", "b"}, ExpiresAt: &metav1.Time{Time: now.Add(time.Hour)},
			RateLimit: &gatehousev1.RateLimit{RequestsPerSecond: 3, Burst: &burst}},
		Status: gatehousev1.APIKeyStatus{State: gatehousev1.APIKeyActive, Keys: []gatehousev1.APIKeyStatusKey{
			{KeyID: k.ID(), SHA256: k.Hash()},
			{KeyID: prev.ID(), SHA256: prev.Hash(), NotAfter: &metav1.Time{Time: now.Add(time.Minute)}},
		}},
	}
	for _, edit := range []func(*gatehousev1.APIKey){nil, func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true }} {
		if edit != nil {
			edit(ak)
		}
		want := apikeyformat.RecordOf(ak)
		got := recordFromXDS(xds.APIKeyEntry(ak), "shop")
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("record from xDS:\n%+v\nwant\n%+v", got, want)
		}
	}
}

// A policy that went through the operator's compiler and back builds the
// same decisions as the AuthPolicy itself.
func TestPolicyFromXDSSelectsAndBuildsLikeTheAuthPolicy(t *testing.T) {
	p := &gatehousev1.AuthPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api", CreationTimestamp: metav1.Now()},
		Spec: gatehousev1.AuthPolicySpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Issuers: []gatehousev1.TrustedIssuer{
				{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}, Audiences: []string{"orders"}},
				{Name: "static", Issuer: "https://static", JWKS: &gatehousev1.StaticJWKS{Inline: `{"keys":[]}`}},
			},
			APIKeys:           gatehousev1.APIKeySource{Header: "X-Key"},
			PathNormalization: &gatehousev1.PathNormalization{EmptySegments: gatehousev1.EmptySegmentsMerge},
			Rules: []gatehousev1.Rule{
				{Name: "public", Match: gatehousev1.RuleMatch{Paths: []string{"/health"}}, Action: gatehousev1.ActionAllowAnonymous},
				{Name: "orders", Match: gatehousev1.RuleMatch{Hosts: []string{"Shop"}, Methods: []string{"get"}, Paths: []string{"/orders/*"}},
					Credentials: []gatehousev1.CredentialType{gatehousev1.CredentialJWT}, Scopes: []string{"orders:read"},
					Claims: []gatehousev1.ClaimRequirement{{Name: "tier", Values: []string{"gold"}}}},
			},
		},
	}
	platform := &gatehousev1.SigningKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "platform"},
		Status:     gatehousev1.SigningKeyStatus{Issuer: "https://platform", JWKS: `{"keys":[]}`},
	}
	build := func(in snapshot.Inputs) *snapshot.Policy {
		s := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: "shop", PodLabels: labels.Set{"app": "shop"}}).Build(in)
		if s.Policy == nil {
			t.Fatalf("no policy selected; problems: %v", s.Problems)
		}
		return s.Policy
	}
	want := build(snapshot.Inputs{Policies: []*gatehousev1.AuthPolicy{p}, SigningKeys: []*gatehousev1.SigningKey{platform}})
	ks := &xdsv1alpha1.IssuerKeySet{Name: "platform", Issuer: "https://platform", Jwks: []byte(`{"keys":[]}`)}
	got := build(snapshot.Inputs{
		Policies:    []*gatehousev1.AuthPolicy{policyFromXDS(xds.AuthPolicy(p, func(string) *corev1.ConfigMap { return nil }), "shop")},
		SigningKeys: []*gatehousev1.SigningKey{signingKeyFromXDS(ks, "shop")},
	})
	if want.APIKeyHeader != got.APIKeyHeader || want.PathOptions != got.PathOptions || len(want.Issuers) != len(got.Issuers) {
		t.Fatalf("policy from xDS: %+v\nwant %+v", got, want)
	}
	for i := range want.Issuers {
		if want.Issuers[i].Fingerprint != got.Issuers[i].Fingerprint {
			t.Errorf("issuer %d: %q, want %q", i, got.Issuers[i].Fingerprint, want.Issuers[i].Fingerprint)
		}
	}
	if !reflect.DeepEqual(want.Rules, got.Rules) {
		t.Fatalf("rules from xDS:\n%+v\nwant\n%+v", got.Rules, want.Rules)
	}
}

func response(t *testing.T, typ string, removed []string, msgs ...proto.Message) *discovery.DeltaDiscoveryResponse {
	t.Helper()
	r := &discovery.DeltaDiscoveryResponse{TypeUrl: typ, RemovedResources: removed}
	for _, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		r.Resources = append(r.Resources, &discovery.Resource{Name: m.(namedMessage).GetName(), Version: "v-" + m.(namedMessage).GetName(), Resource: a})
	}
	return r
}

func TestXDSStateAppliesDeltas(t *testing.T) {
	st := newXDSState("shop")
	st.apply(response(t, xdsAPIKeyEntryType, nil, &xdsv1alpha1.APIKeyEntry{Name: "a"}, &xdsv1alpha1.APIKeyEntry{Name: "b"}))
	st.apply(response(t, xdsAPIKeyEntryType, []string{"a"}))
	if st.records["a"] != nil || st.records["b"] == nil || st.versions[xdsAPIKeyEntryType]["b"] != "v-b" || st.versions[xdsAPIKeyEntryType]["a"] != "" {
		t.Fatalf("after removing a: records %v, versions %v", st.records, st.versions)
	}
	t.Run("a resource sent under another name is dropped and its version forgotten", func(t *testing.T) {
		r := response(t, xdsAPIKeyEntryType, nil, &xdsv1alpha1.APIKeyEntry{Name: "c"})
		r.Resources[0].Name = "b"
		if bad := st.apply(r); len(bad) != 1 {
			t.Fatalf("bad = %v", bad)
		}
		if rec, ok := st.records["b"]; !ok || rec != nil || st.versions[xdsAPIKeyEntryType]["b"] != "" {
			t.Fatal("b was kept")
		}
	})
	t.Run("a resource of another type is dropped", func(t *testing.T) {
		r := response(t, xdsAPIKeyEntryType, nil, &xdsv1alpha1.IssuerKeySet{Name: "d"})
		bad := st.apply(r)
		if rec, ok := st.records["d"]; len(bad) != 1 || !ok || rec != nil {
			t.Fatalf("bad = %v, records %v", bad, st.records)
		}
	})
	t.Run("the first delta holds the complete state, later ones what changed", func(t *testing.T) {
		st.apply(response(t, xdsIssuerKeySetType, nil, &xdsv1alpha1.IssuerKeySet{Name: "platform"}))
		st.apply(response(t, xdsAuthPolicyType, nil, &xdsv1alpha1.AuthPolicy{Name: "api"}))
		st.apply(response(t, xdsAPIKeyEntryType, nil, &xdsv1alpha1.APIKeyEntry{Name: "e"}))
		d, ok := st.delta()
		if !ok || len(d.Records) != 1 || d.Records[0].Name != "e" || d.Policy == nil || len(d.Policy.SigningKeys) != 1 || len(d.Policy.Policies) != 1 {
			t.Fatalf("first delta = %+v", d)
		}
		if d, ok := st.delta(); ok {
			t.Fatalf("a delta without changes: %+v", d)
		}
		st.apply(response(t, xdsAPIKeyEntryType, []string{"e"}, &xdsv1alpha1.APIKeyEntry{Name: "f"}))
		if d, ok := st.delta(); !ok || len(d.Records) != 1 || d.Records[0].Name != "f" || !slices.Equal(d.Removed, []string{"e"}) || d.Policy != nil {
			t.Fatalf("a key's delta = %+v", d)
		}
		st.apply(response(t, xdsAuthPolicyType, []string{"api"}))
		if d, ok := st.delta(); !ok || len(d.Records) != 0 || d.Policy == nil || len(d.Policy.Policies) != 0 || len(d.Policy.SigningKeys) != 1 {
			t.Fatalf("a policy's delta = %+v", d)
		}
	})
}

// The sidecar's type URLs are the operator's.
func TestXDSTypesAreTheOperators(t *testing.T) {
	if !reflect.DeepEqual(xdsTypes, xds.Types) {
		t.Fatalf("sidecar types %v, operator types %v", xdsTypes, xds.Types)
	}
}
