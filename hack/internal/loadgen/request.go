package loadgen

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
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
	method  string
	host    string
	path    string
	headers map[string]string
	expect  Expect
	encoded []byte // the marshalled CheckRequest
}

// NewRequest builds a request. Header names are lower-cased, as Envoy sends
// them. The CheckRequest is encoded here, once, so sending it costs no
// marshalling.
func NewRequest(method, host, path string, headers map[string]string, expect Expect) (*Request, error) {
	h := make(map[string]string, len(headers))
	for k, v := range headers {
		h[strings.ToLower(k)] = v
	}
	r := &Request{method: method, host: host, path: path, headers: h, expect: expect}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.CheckRequest())
	if err != nil {
		return nil, fmt.Errorf("encoding check request: %w", err)
	}
	r.encoded = b
	return r, nil
}

// CheckRequest returns the gRPC form of the request, shaped like Envoy's:
// pseudo-headers in the header map, source and destination peers set.
func (r *Request) CheckRequest() *authv3.CheckRequest {
	headers := make(map[string]string, len(r.headers)+4)
	for k, v := range r.headers {
		headers[k] = v
	}
	headers[":authority"] = r.host
	headers[":method"] = r.method
	headers[":path"] = r.path
	headers[":scheme"] = "http"
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: socketAddress("127.0.0.1", 50000)},
		Destination: &authv3.AttributeContext_Peer{
			Address: socketAddress("127.0.0.1", 8080),
		},
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
	return fmt.Sprintf("%s %s%s headers=%v (values redacted) expect=%s", r.method, r.host, r.path, names, r.expect)
}

// GoString is String, so that %#v cannot print a credential either.
func (r *Request) GoString() string { return r.String() }
