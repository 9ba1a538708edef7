package server_test

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	apiKeys := []*gatehousev1.APIKey{key.Object()}
	sks := []*gatehousev1.SigningKey{testfixture.SigningKey(b, ns, "es", esIssuer, es), testfixture.SigningKey(b, ns, "rs", rsIssuer, rs)}
	for i := range extraRecords {
		k := testfixture.NewAPIKey(b, ns, "extra-"+string(rune('a'+i%26))+time.Duration(i).String(), "svc")
		apiKeys = append(apiKeys, k.Object())
	}
	pol := testfixture.Policy(ns, "main", testfixture.Epoch, []gatehousev1.TrustedIssuer{
		{Name: "es", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "es"}, Audiences: []string{"orders"}},
		{Name: "rs", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "rs"}, Audiences: []string{"orders"}},
	}, gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}})
	store := &snapshot.Store{}
	snap := snapshot.NewBuilder(snapshot.BuildOptions{Namespace: ns}).Build(snapshot.Inputs{APIKeys: apiKeys, SigningKeys: sks, Policies: []*gatehousev1.AuthPolicy{pol}})
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
	expired := map[string]any{"scope": "orders:read", "iat": now.Add(-3 * time.Hour).Unix(), "nbf": nil, "exp": now.Add(-time.Hour).Unix()}
	esExpired := es.Sign(b, testfixture.Claims(esIssuer, "alice", now, expired), nil)
	rsExpired := rs.Sign(b, testfixture.Claims(rsIssuer, "alice", now, expired), nil)
	cases := []struct {
		name    string
		cache   int
		headers map[string]string
		allow   bool
	}{
		{"APIKey", 0, map[string]string{"x-api-key": key.Key.Plaintext()}, true},
		{"JWTCached/ES256", 0, map[string]string{"authorization": "Bearer " + esTok}, true},
		{"JWTCached/RS256", 0, map[string]string{"authorization": "Bearer " + rsTok}, true},
		{"JWTUncached/ES256", -1, map[string]string{"authorization": "Bearer " + esTok}, true},
		{"JWTUncached/RS256", -1, map[string]string{"authorization": "Bearer " + rsTok}, true},
		{"JWTExpiredUncached/ES256", -1, map[string]string{"authorization": "Bearer " + esExpired}, false},
		{"JWTExpiredUncached/RS256", -1, map[string]string{"authorization": "Bearer " + rsExpired}, false},
		{"DenyMissingCredential", 0, nil, false},
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
			if allowed := resp.GetOkResponse() != nil; allowed != tc.allow {
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

// envoyShaped is what Envoy really sends for the same request: every
// request header (including the ones it adds), both peers with their
// SPIFFE principals and labels, the request time, route context
// extensions and filter metadata. The sidecar reads only the method,
// host, path, request id and headers of it.
func envoyShaped(compact *authv3.CheckRequest) *authv3.CheckRequest {
	r := proto.Clone(compact).(*authv3.CheckRequest)
	h := r.Attributes.Request.Http
	for k, v := range map[string]string{
		"accept-encoding": "gzip, deflate, br", "accept-language": "en-GB,en;q=0.9", "cache-control": "no-cache",
		"x-forwarded-for": "10.12.0.7", "x-envoy-external-address": "10.12.0.7", "x-envoy-expected-rq-timeout-ms": "15000",
		"x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7", "x-b3-spanid": "e457b5a2e4d86bd1", "x-b3-sampled": "1",
		"x-envoy-attempt-count": "1", "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
		"cookie":  "session=2f6c1e0d9b8a7c6e5d4c3b2a1f0e9d8c; theme=dark; consent=yes",
		"referer": "https://app.example.com/orders", "origin": "https://app.example.com",
		"sec-fetch-mode": "cors", "sec-fetch-site": "same-site", "x-forwarded-client-cert": "By=spiffe://cluster.local/ns/shop/sa/orders;Hash=0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0;Subject=\"\";URI=spiffe://cluster.local/ns/edge/sa/gateway",
	} {
		h.Headers[k] = v
	}
	h.Scheme, h.Protocol, h.Size, h.Id = "https", "HTTP/2", 0, "3f1c2a7e-0d4b-4c55-9d6e-1b2a3c4d5e6f"
	peer := func(ip string, port uint32, principal, app string) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
			Principal: principal,
			Labels:    map[string]string{"app": app, "version": "v1", "pod-template-hash": "7d9f8c6b5"},
		}
	}
	r.Attributes.Source = peer("10.12.0.7", 48512, "spiffe://cluster.local/ns/edge/sa/gateway", "gateway")
	r.Attributes.Destination = peer("10.12.3.9", 8080, "spiffe://cluster.local/ns/shop/sa/orders", "orders")
	r.Attributes.Request.Time = timestamppb.New(time.Unix(1796000000, 123456789))
	r.Attributes.ContextExtensions = map[string]string{"policy": "main", "route": "orders", "virtual_host": "api"}
	md, _ := structpb.NewStruct(map[string]any{"route": "orders", "cluster": "outbound|8080||orders.shop.svc.cluster.local"})
	r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio_authn": md}}
	r.Attributes.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.ext_authz": md}}
	return r
}

// BenchmarkCheckWire measures what the gRPC server spends above its
// transport on one check: the codec decoding the request bytes, the
// handler, and the codec encoding the answer, for compact requests and for
// Envoy-shaped ones. cpu-ns/op is the process's CPU time per check
// (garbage collection included), whatever share of a core it got.
func BenchmarkCheckWire(b *testing.B) {
	store, key, es, _ := benchState(b, 1000)
	esTok := es.Sign(b, testfixture.Claims(esIssuer, "alice", time.Now(), map[string]any{"scope": "orders:read"}), nil)
	for _, shape := range []string{"Compact", "Envoy"} {
		for _, tc := range []struct {
			name    string
			headers map[string]string
		}{
			{"APIKey", map[string]string{"x-api-key": key.Key.Plaintext()}},
			{"JWTCached", map[string]string{"authorization": "Bearer " + esTok}},
		} {
			b.Run(shape+"/"+tc.name, func(b *testing.B) {
				engine := authz.New(store, authz.Options{})
				core := server.NewCore(engine, store, metrics.New(store, nil), server.Options{StripCredential: true, Log: logr.Discard()})
				srv := server.NewAuthorizationServer(core)
				req := benchRequest(tc.headers)
				if shape == "Envoy" {
					req = envoyShaped(req)
				}
				wire, err := proto.Marshal(req)
				if err != nil {
					b.Fatal(err)
				}
				w := newWireChecker(b, core.GRPCCodec(), srv, wire)
				ctx := context.Background()
				b.ReportAllocs()
				b.SetBytes(int64(len(wire)))
				start := cpuTime(b)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						w.allowOverWire(ctx, b)
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// wireChecker does what the gRPC server does with one check of the same
// request bytes: decode them with the codec, through the Check handler
// Register installs, and encode the answer.
type wireChecker struct {
	codec   encoding.CodecV2
	impl    any
	handler grpc.MethodHandler
	dec     func(any) error
	allowed bool
}

func newWireChecker(b *testing.B, codec encoding.CodecV2, srv *server.AuthorizationServer, wire []byte) *wireChecker {
	b.Helper()
	w := &wireChecker{codec: codec}
	srv.Register(w)
	if w.handler == nil {
		b.Fatal("Register registered no Check handler")
	}
	w.dec = func(v any) error { return codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, v) }
	return w
}

// RegisterService implements grpc.ServiceRegistrar: it keeps the Check
// handler.
func (w *wireChecker) RegisterService(desc *grpc.ServiceDesc, impl any) {
	for _, m := range desc.Methods {
		if m.MethodName == "Check" {
			w.impl, w.handler = impl, m.Handler
		}
	}
}

// allowOverWire checks the request once and encodes the answer as gRPC
// would; the first answer (the same request every time) must decode to an
// allow.
func (w *wireChecker) allowOverWire(ctx context.Context, b *testing.B) {
	out, err := w.handler(w.impl, ctx, w.dec, nil)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := w.codec.Marshal(out)
	if err != nil {
		b.Fatal(err)
	}
	if !w.allowed {
		resp := &authv3.CheckResponse{}
		if err := w.codec.Unmarshal(enc, resp); err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("not allowed: %v %v", resp, err)
		}
		w.allowed = true
	}
	enc.Free()
}
