package server_test

import (
	"context"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	corev1 "k8s.io/api/core/v1"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// benchState is a state with one API key, an ES256 and an RS256 issuer,
// and extra records so that lookups happen in a realistically sized index.
func benchState(b *testing.B, extraRecords int) (*snapshot.Store, *testfixture.APIKey, *testfixture.Signer, *testfixture.Signer) {
	b.Helper()
	key := testfixture.NewAPIKey(b, ns, "billing", "service:billing", "orders:read")
	es, rs := testfixture.NewSigner(b, jwa.ES256), testfixture.NewSigner(b, jwa.RS256)
	cms := []*corev1.ConfigMap{key.ConfigMap(b),
		testfixture.JWKSConfigMap(b, ns, "es", esIssuer, es), testfixture.JWKSConfigMap(b, ns, "rs", rsIssuer, rs)}
	for i := range extraRecords {
		k := testfixture.NewAPIKey(b, ns, "extra-"+string(rune('a'+i%26))+time.Duration(i).String(), "svc")
		cms = append(cms, k.ConfigMap(b))
	}
	pol := testfixture.Policy(ns, "main", testfixture.Epoch, []gatehousev1.TrustedIssuer{
		{Name: "es", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "es"}, Audiences: []string{"orders"}},
		{Name: "rs", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "rs"}, Audiences: []string{"orders"}},
	}, gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}})
	store := &snapshot.Store{}
	snap := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(snapshot.Inputs{ConfigMaps: cms, Policies: []*gatehousev1.AuthPolicy{pol}})
	if len(snap.Problems) > 0 {
		b.Fatal(snap.Problems)
	}
	store.Swap(snap)
	return store, key, es, rs
}

func benchRequest(headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders/42?expand=items",
			Headers: mergeHeaders(headers)},
	}}}
}

// mergeHeaders adds the headers a real Envoy request carries.
func mergeHeaders(h map[string]string) map[string]string {
	out := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/orders/42?expand=items", ":scheme": "https",
		"user-agent": "bench/1.0", "accept": "application/json", "x-request-id": "3f1c2a7e-0d4b-4c55-9d6e-1b2a3c4d5e6f",
		"x-forwarded-proto": "https", "content-length": "0",
	}
	for k, v := range h {
		out[k] = v
	}
	return out
}

// BenchmarkCheck measures the gRPC Check handler (decision, identity
// headers, response, metrics; no network) on each credential path.
func BenchmarkCheck(b *testing.B) {
	store, key, es, rs := benchState(b, 1000)
	now := time.Now()
	esTok := es.Sign(b, testfixture.Claims(esIssuer, "alice", now, map[string]any{"scope": "orders:read"}), nil)
	rsTok := rs.Sign(b, testfixture.Claims(rsIssuer, "alice", now, map[string]any{"scope": "orders:read"}), nil)
	cases := []struct {
		name    string
		cache   int
		headers map[string]string
	}{
		{"APIKey", 0, map[string]string{"x-api-key": key.Key.Plaintext()}},
		{"JWTCached/ES256", 0, map[string]string{"authorization": "Bearer " + esTok}},
		{"JWTCached/RS256", 0, map[string]string{"authorization": "Bearer " + rsTok}},
		{"JWTUncached/ES256", -1, map[string]string{"authorization": "Bearer " + esTok}},
		{"JWTUncached/RS256", -1, map[string]string{"authorization": "Bearer " + rsTok}},
		{"DenyMissingCredential", 0, nil},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			engine := authz.New(store, authz.Options{CacheSize: tc.cache})
			core := server.NewCore(engine, store, metrics.New(store, nil), server.Options{StripCredential: true, Log: logr.Discard()})
			srv := server.NewAuthorizationServer(core)
			req := benchRequest(tc.headers)
			ctx := context.Background()
			resp, err := srv.Check(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			if allowed := resp.GetOkResponse() != nil; allowed != (tc.headers != nil) {
				b.Fatalf("unexpected verdict: %v", resp)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := srv.Check(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
