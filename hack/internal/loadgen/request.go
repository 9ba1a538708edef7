package loadgen

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Expect is the verdict a request must receive.
type Expect struct {
	// Allow is true when the server must allow the request.
	Allow bool `json:"allow"`
	// Status is the HTTP status a denied request must carry (401, 403,
	// 429). Zero accepts any denial.
	Status int `json:"status,omitempty"`
}

// Matches reports whether an outcome is the expected verdict.
func (e Expect) Matches(o Outcome) bool {
	if e.Allow || o.Allowed {
		return e.Allow == o.Allowed
	}
	return e.Status == 0 || e.Status == o.Status
}

// String describes the expectation, for reports.
func (e Expect) String() string {
	switch {
	case e.Allow:
		return "allow"
	case e.Status != 0:
		return fmt.Sprintf("deny %d", e.Status)
	default:
		return "deny"
	}
}

// Outcome is the verdict a server gave one request.
type Outcome struct {
	// Allowed is true for CheckResponse.status OK (gRPC) or HTTP 200.
	Allowed bool
	// Status is the HTTP status of a denial. A gRPC denial without
	// denied_response.status reports 403, the status Envoy then sends.
	Status int
	// GRPCCode is CheckResponse.status.code; zero for HTTP.
	GRPCCode int32
}

// Request is one prebuilt ext_authz request: the original HTTP request as
// Envoy describes it, its gRPC CheckRequest encoded once, and the verdict it
// must get. A Request is immutable and safe to share between goroutines.
//
// Header values may hold credentials: String and GoString never print them.
type Request struct {
	shape   string
	method  string
	host    string
	path    string
	headers map[string]string
	expect  Expect
	encoded []byte // the marshalled CheckRequest
}

// Request shapes: how much of what Envoy sends a CheckRequest carries.
const (
	// ShapeCompact carries the request id, method, host, path, scheme,
	// protocol and the request's own headers with the pseudo-headers.
	ShapeCompact = "compact"
	// ShapeEnvoy is what Envoy sends for the same request behind a mesh
	// gateway: also the headers Envoy and the mesh add (forwarding,
	// tracing, client certificate), both peers with addresses, SPIFFE
	// principals and labels, the request time, context extensions, and
	// route and filter metadata.
	ShapeEnvoy = "envoy"
)

// Shapes lists the request shapes.
var Shapes = []string{ShapeCompact, ShapeEnvoy}

// NewRequest builds a compact request (NewShapedRequest).
func NewRequest(method, host, path string, headers map[string]string, expect Expect) (*Request, error) {
	return NewShapedRequest(ShapeCompact, method, host, path, headers, expect)
}

// NewShapedRequest builds a request of a shape. Header names are
// lower-cased, as Envoy sends them. The CheckRequest is encoded here, once,
// so sending it costs no marshalling.
func NewShapedRequest(shape, method, host, path string, headers map[string]string, expect Expect) (*Request, error) {
	if shape != ShapeCompact && shape != ShapeEnvoy {
		return nil, fmt.Errorf("request shape %q: want %s or %s", shape, ShapeCompact, ShapeEnvoy)
	}
	h := make(map[string]string, len(headers))
	for k, v := range headers {
		h[strings.ToLower(k)] = v
	}
	r := &Request{shape: shape, method: method, host: host, path: path, headers: h, expect: expect}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.CheckRequest())
	if err != nil {
		return nil, fmt.Errorf("encoding check request: %w", err)
	}
	r.encoded = b
	return r, nil
}

// CheckRequest returns the gRPC form of the request in its shape.
func (r *Request) CheckRequest() *authv3.CheckRequest {
	headers := make(map[string]string, len(r.headers)+len(envoyHeaders)+4)
	for k, v := range r.headers {
		headers[k] = v
	}
	headers[":authority"] = r.host
	headers[":method"] = r.method
	headers[":path"] = r.path
	headers[":scheme"] = "http"
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       "loadgen",
			Method:   r.method,
			Headers:  headers,
			Path:     r.path,
			Host:     r.host,
			Scheme:   "http",
			Protocol: "HTTP/1.1",
		}},
	}}
	if r.shape == ShapeEnvoy {
		envoyShape(req)
	}
	return req
}

// envoyHeaders are what Envoy and a mesh add to a request's own headers.
var envoyHeaders = map[string]string{
	"x-request-id":                   "3f1c2a7e-0d4b-4c55-9d6e-1b2a3c4d5e6f",
	"x-forwarded-for":                "10.12.0.7",
	"x-forwarded-proto":              "https",
	"x-envoy-external-address":       "10.12.0.7",
	"x-envoy-expected-rq-timeout-ms": "15000",
	"x-envoy-attempt-count":          "1",
	"x-b3-traceid":                   "80f198ee56343ba864fe8b2a57d3eff7",
	"x-b3-spanid":                    "e457b5a2e4d86bd1",
	"x-b3-sampled":                   "1",
	"traceparent":                    "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
	"accept-encoding":                "gzip, deflate, br",
	"accept-language":                "en-GB,en;q=0.9",
	"cookie":                         "session=2f6c1e0d9b8a7c6e5d4c3b2a1f0e9d8c; theme=dark; consent=yes",
	"x-forwarded-client-cert":        "By=spiffe://cluster.local/ns/loadtest/sa/app;Hash=0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0;Subject=\"\";URI=spiffe://cluster.local/ns/edge/sa/gateway",
}

// envoyShape adds to a compact request what Envoy sends besides.
func envoyShape(req *authv3.CheckRequest) {
	a := req.Attributes
	for k, v := range envoyHeaders {
		a.Request.Http.Headers[k] = v
	}
	a.Request.Http.Protocol = "HTTP/2"
	a.Request.Time = timestamppb.New(time.Unix(1796000000, 123456789))
	peer := func(ip string, port uint32, principal, app string) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{
			Address:   socketAddress(ip, port),
			Principal: principal,
			Labels:    map[string]string{"app": app, "version": "v1", "pod-template-hash": "7d9f8c6b5"},
		}
	}
	a.Source = peer("10.12.0.7", 48512, "spiffe://cluster.local/ns/edge/sa/gateway", "gateway")
	a.Destination = peer("10.12.3.9", 8080, "spiffe://cluster.local/ns/loadtest/sa/app", "app")
	a.ContextExtensions = map[string]string{"policy": "loadtest", "route": "orders", "virtual_host": "app"}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		"route":   structpb.NewStringValue("orders"),
		"cluster": structpb.NewStringValue("outbound|8080||app.loadtest.svc.cluster.local"),
	}}
	a.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio_authn": md}}
	a.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.ext_authz": md}}
	a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "app.loadtest.example"}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// Expect returns the verdict the request must get.
func (r *Request) Expect() Expect { return r.expect }

// httpRequest builds the HTTP ext_authz form of the request against base
// (scheme://host:port): the original method and path, the original headers.
func (r *Request) httpRequest(ctx context.Context, base string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, base+r.path, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("building http request: %w", err)
	}
	req.Host = r.host
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	return req, nil
}

// String describes the request without its header values.
func (r *Request) String() string {
	names := slices.Sorted(maps.Keys(r.headers))
	return fmt.Sprintf("%s %s%s (%s) headers=%v (values redacted) expect=%s", r.method, r.host, r.path, r.shape, names, r.expect)
}

// GoString is String, so that %#v cannot print a credential either.
func (r *Request) GoString() string { return r.String() }
