package xds

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
)

var epoch = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func hashOf(i int) string { return fmt.Sprintf("%064x", i+1) }

// apiKey is APIKey i of namespace shop.
func apiKey(name string, i int) *gatehousev1.APIKey {
	const ns = "shop"
	return &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatehousev1.APIKeySpec{
			Subject:   "service:" + name,
			Scopes:    []string{"orders:read"},
			RateLimit: &gatehousev1.RateLimit{RequestsPerSecond: 10},
		},
		Status: gatehousev1.APIKeyStatus{
			State: gatehousev1.APIKeyActive,
			Keys: []gatehousev1.APIKeyStatusKey{
				{KeyID: fmt.Sprintf("key%013d", i), SHA256: hashOf(i)},
				{KeyID: fmt.Sprintf("old%013d", i), SHA256: hashOf(i + 1000), NotAfter: &metav1.Time{Time: epoch}},
			},
		},
	}
}

func version(t *testing.T, r types.Resource) string {
	t.Helper()
	b, err := cache.MarshalResource(r)
	if err != nil {
		t.Fatal(err)
	}
	return cache.HashResource(b)
}

func TestAPIKeyEntry(t *testing.T) {
	sum, _ := hex.DecodeString(hashOf(0))
	cases := []struct {
		name  string
		edit  func(*gatehousev1.APIKey)
		check func(t *testing.T, e *xdsv1alpha1.APIKeyEntry)
	}{
		{"an active APIKey gives its subject, scopes, rate limit and both keys with their windows", nil, func(t *testing.T, e *xdsv1alpha1.APIKeyEntry) {
			if e.GetName() != "billing" || e.GetSubject() != "service:billing" || e.GetState() != xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE {
				t.Errorf("entry = %v", e)
			}
			if rl := e.GetRateLimit(); rl.GetRequestsPerSecond() != 10 || rl.GetBurst() != 10 {
				t.Errorf("rate limit = %v, want 10/10 (burst defaults to the rate)", rl)
			}
			if len(e.GetKeys()) != 2 || string(e.GetKeys()[0].GetSha256()) != string(sum) || e.GetKeys()[1].GetNotAfter().AsTime() != epoch {
				t.Errorf("keys = %v", e.GetKeys())
			}
		}},
		{"a disabled APIKey is revoked", func(ak *gatehousev1.APIKey) { ak.Spec.Disabled = true }, func(t *testing.T, e *xdsv1alpha1.APIKeyEntry) {
			if e.GetState() != xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED {
				t.Errorf("state = %v", e.GetState())
			}
		}},
		{"an APIKey being deleted is revoked", func(ak *gatehousev1.APIKey) { ak.DeletionTimestamp = &metav1.Time{Time: epoch} }, func(t *testing.T, e *xdsv1alpha1.APIKeyEntry) {
			if e.GetState() != xdsv1alpha1.APIKeyState_API_KEY_STATE_REVOKED {
				t.Errorf("state = %v", e.GetState())
			}
		}},
		{"an unknown state is unspecified, which refuses every key", func(ak *gatehousev1.APIKey) { ak.Status.State = "Bogus" }, func(t *testing.T, e *xdsv1alpha1.APIKeyEntry) {
			if e.GetState() != xdsv1alpha1.APIKeyState_API_KEY_STATE_UNSPECIFIED {
				t.Errorf("state = %v", e.GetState())
			}
		}},
		{"a key whose hash is not 64 hex digits is left out", func(ak *gatehousev1.APIKey) { ak.Status.Keys[1].SHA256 = "zz" }, func(t *testing.T, e *xdsv1alpha1.APIKeyEntry) {
			if len(e.GetKeys()) != 1 {
				t.Errorf("keys = %v", e.GetKeys())
			}
		}},
		{"with spec.hash, only the status key that matches it counts", func(ak *gatehousev1.APIKey) {
			ak.Spec.Hash = &gatehousev1.APIKeyHash{KeyID: ak.Status.Keys[0].KeyID, SHA256: ak.Status.Keys[0].SHA256}
		}, func(t *testing.T, e *xdsv1alpha1.APIKeyEntry) {
			if len(e.GetKeys()) != 1 {
				t.Errorf("keys = %v", e.GetKeys())
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ak := apiKey("billing", 0)
			if tc.edit != nil {
				tc.edit(ak)
			}
			tc.check(t, APIKeyEntry(ak))
		})
	}
}

// One APIKey change must change one resource's version and no other's:
// that is what lets a delta client receive one small resource.
func TestOneAPIKeyChangeChangesOneResourceVersion(t *testing.T) {
	const n = 200
	keys := make([]*gatehousev1.APIKey, n)
	before := map[string]string{}
	for i := range keys {
		keys[i] = apiKey(fmt.Sprintf("key-%d", i), i)
		before[keys[i].Name] = version(t, APIKeyEntry(keys[i]))
	}
	keys[17].Spec.Disabled = true
	changed := []string{}
	for _, ak := range keys {
		if version(t, APIKeyEntry(ak)) != before[ak.Name] {
			changed = append(changed, ak.Name)
		}
	}
	if len(changed) != 1 || changed[0] != "key-17" {
		t.Fatalf("changed versions: %v, want only key-17", changed)
	}
	// The version is the content's: building the same APIKey again gives
	// the same version, so a reconnecting client is sent nothing for it.
	if version(t, APIKeyEntry(keys[3])) != before["key-3"] {
		t.Fatal("rebuilding an unchanged APIKey changed its version")
	}
}

func TestIssuerKeySet(t *testing.T) {
	published := func() *gatehousev1.SigningKey {
		return &gatehousev1.SigningKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "platform"},
			Spec:       gatehousev1.SigningKeySpec{Issuer: "https://issuer.example"},
			Status:     gatehousev1.SigningKeyStatus{Issuer: "https://issuer.example", JWKS: `{"keys":[]}`},
		}
	}
	cases := []struct {
		name string
		edit func(*gatehousev1.SigningKey)
		want bool
	}{
		{"the JWKS the status publishes is served", nil, true},
		{"nothing is served before the status publishes a JWKS", func(sk *gatehousev1.SigningKey) { sk.Status.JWKS = "" }, false},
		{"nothing is served for a SigningKey refused its issuer (status issuer cleared)", func(sk *gatehousev1.SigningKey) { sk.Status.Issuer = "" }, false},
		{"the issuer is the status's, not the spec's", func(sk *gatehousev1.SigningKey) { sk.Spec.Issuer = "https://claimed.example" }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sk := published()
			if tc.edit != nil {
				tc.edit(sk)
			}
			got := IssuerKeySet(sk)
			if (got != nil) != tc.want {
				t.Fatalf("IssuerKeySet = %v, want served: %v", got, tc.want)
			}
			if got != nil && (got.GetIssuer() != "https://issuer.example" || string(got.GetJwks()) != `{"keys":[]}`) {
				t.Fatalf("IssuerKeySet = %v", got)
			}
		})
	}
}

func TestAuthPolicyCompilesDefaultsAndConfigMapJWKS(t *testing.T) {
	p := &gatehousev1.AuthPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api", CreationTimestamp: metav1.Time{Time: epoch}},
		Spec: gatehousev1.AuthPolicySpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Issuers: []gatehousev1.TrustedIssuer{
				{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}},
				{Name: "static", Issuer: "https://static", JWKS: &gatehousev1.StaticJWKS{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "static-jwks"}, Key: "jwks.json"}}},
				{Name: "missing", Issuer: "https://missing", JWKS: &gatehousev1.StaticJWKS{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "jwks.json"}}},
				{Name: "skewed", Issuer: "https://skewed", JWKSURI: "https://skewed/jwks", ClockSkew: &metav1.Duration{Duration: time.Hour}},
			},
			Rules: []gatehousev1.Rule{{Match: gatehousev1.RuleMatch{Hosts: []string{"Shop.Example"}, Methods: []string{"get"}, Paths: []string{"/orders/*"}}}},
		},
	}
	cms := map[string]*corev1.ConfigMap{"static-jwks": {
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordJWKS}},
		Data:       map[string]string{"jwks.json": `{"keys":[1]}`},
	}}
	got := AuthPolicy(p, func(name string) *corev1.ConfigMap { return cms[name] })
	if got.GetApiKeyHeader() != defaultAPIKeyHeader || got.GetCreatedAt().AsTime() != epoch || got.GetSelector().GetMatchLabels()["app"] != "shop" {
		t.Errorf("policy = %v", got)
	}
	iss := got.GetIssuers()
	if iss[0].GetSigningKey() != "platform" || string(iss[1].GetJwks()) != `{"keys":[1]}` || iss[2].GetKeys() != nil || iss[3].GetJwksUri() != "https://skewed/jwks" {
		t.Errorf("issuers = %v", iss)
	}
	if iss[0].GetClockSkew().AsDuration() != defaultClockSkew || iss[3].GetClockSkew().AsDuration() != maxClockSkew {
		t.Errorf("clock skews = %v, %v", iss[0].GetClockSkew(), iss[3].GetClockSkew())
	}
	if len(got.GetProblems()) != 1 || !strings.Contains(got.GetProblems()[0], "nope") {
		t.Errorf("problems = %v, want one about the missing ConfigMap", got.GetProblems())
	}
	r := got.GetRules()[0]
	if r.GetHosts()[0] != "shop.example" || r.GetMethods()[0] != "GET" || r.GetAction() != xdsv1alpha1.Action_ACTION_AUTHENTICATE || !r.GetAcceptApiKey() || !r.GetAcceptJwt() {
		t.Errorf("rule = %v", r)
	}
}

// The type URLs are the generated messages' full names.
func TestTypeURLs(t *testing.T) {
	for url, msg := range map[string]types.Resource{
		APIKeyEntryType:  &xdsv1alpha1.APIKeyEntry{},
		IssuerKeySetType: &xdsv1alpha1.IssuerKeySet{},
		AuthPolicyType:   &xdsv1alpha1.AuthPolicy{},
	} {
		if want := "type.googleapis.com/" + string(msg.ProtoReflect().Descriptor().FullName()); url != want {
			t.Errorf("type URL %s, want %s", url, want)
		}
	}
}
