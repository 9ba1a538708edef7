package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/metrics"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// request is a check to send, protocol-neutral. headers keep order and
// duplicates.
type request struct {
	method, host, path string
	headers            [][2]string
}

// outcome is what a frontend answered, normalised across protocols.
type outcome struct {
	status     int
	reason     string
	challenge  string
	retryAfter string
	set        map[string]string
	remove     []string
	body       string
}

// transport sends a request over one protocol.
type transport struct {
	name string
	send func(t *testing.T, r request) outcome
}

// serve starts the gRPC and HTTP frontends of core on 127.0.0.1 and returns
// the three transports: gRPC with the headers map, gRPC with header_map
// (encode_raw_headers), and HTTP.
func serve(t *testing.T, core *server.Core) []transport {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(core.GRPCCodec()))
	server.NewAuthorizationServer(core).Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := authv3.NewAuthorizationClient(conn)

	hs := httptest.NewUnstartedServer(core.HTTPHandler(server.HTTPOptions{}))
	hs.Config.DisableGeneralOptionsHandler = true // as sidecar/app sets it
	hs.Start()
	t.Cleanup(hs.Close)

	grpcSend := func(raw bool) func(t *testing.T, r request) outcome {
		return func(t *testing.T, r request) outcome {
			t.Helper()
			httpReq := &authv3.AttributeContext_HttpRequest{Method: r.method, Host: r.host, Path: r.path}
			if raw {
				httpReq.HeaderMap = &corev3.HeaderMap{}
				for _, h := range r.headers {
					httpReq.HeaderMap.Headers = append(httpReq.HeaderMap.Headers, &corev3.HeaderValue{Key: strings.ToLower(h[0]), RawValue: []byte(h[1])})
				}
			} else {
				httpReq.Headers = map[string]string{}
				for _, h := range r.headers {
					k := strings.ToLower(h[0])
					if prev, ok := httpReq.Headers[k]; ok {
						httpReq.Headers[k] = prev + "," + h[1] // Envoy joins repeated headers
					} else {
						httpReq.Headers[k] = h[1]
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Request: &authv3.AttributeContext_Request{Http: httpReq},
			}})
			if err != nil {
				t.Fatalf("Check returned an RPC error (denials must be responses): %v", err)
			}
			return grpcOutcome(t, resp)
		}
	}
	httpSend := func(t *testing.T, r request) outcome {
		t.Helper()
		resp := sendRawHTTP(t, hs.Listener.Addr().String(), r)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		o := outcome{status: resp.StatusCode, body: string(body), set: map[string]string{}}
		if resp.StatusCode == http.StatusOK {
			for k, v := range resp.Header {
				if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-gatehouse-") {
					o.set[lk] = v[0]
				}
			}
			if rm := resp.Header.Get(server.EnvoyHeadersToRemove); rm != "" {
				o.remove = strings.Split(rm, ", ")
			}
		} else {
			o.reason = resp.Header.Get("x-gatehouse-deny-reason")
			o.challenge = resp.Header.Get("WWW-Authenticate")
			o.retryAfter = resp.Header.Get("Retry-After")
		}
		sort.Strings(o.remove)
		return o
	}
	return []transport{
		{"gRPC with the headers map", grpcSend(false)},
		{"gRPC with header_map", grpcSend(true)},
		{"HTTP", httpSend},
	}
}

// sendRawHTTP writes the request line and headers as given, the way a
// proxy forwards them: net/http's client would rewrite a target such as
// "//admin" or refuse "%zz".
func sendRawHTTP(t *testing.T, addr string, r request) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	b.WriteString(r.method + " " + r.path + " HTTP/1.1\r\nHost: " + r.host + "\r\nConnection: close\r\n")
	for _, h := range r.headers {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func grpcOutcome(t *testing.T, resp *authv3.CheckResponse) outcome {
	t.Helper()
	o := outcome{set: map[string]string{}}
	code := codes.Code(resp.GetStatus().GetCode())
	if ok := resp.GetOkResponse(); ok != nil {
		if code != codes.OK {
			t.Fatalf("an OkHttpResponse came with status %v", code)
		}
		o.status = http.StatusOK
		for _, h := range ok.GetHeaders() {
			if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("header %s is appended, not overwritten: a client-sent copy would survive", h.GetHeader().GetKey())
			}
			o.set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		md := resp.GetDynamicMetadata().GetFields()
		for header, field := range map[string]string{"x-gatehouse-subject": "subject", "x-gatehouse-credential": "credential", "x-gatehouse-key-id": "keyId", "x-gatehouse-issuer": "issuer", "x-gatehouse-token-id": "tokenId"} {
			if got := md[field].GetStringValue(); got != o.set[header] {
				t.Errorf("dynamic metadata %s is %q, but header %s is %q", field, got, header, o.set[header])
			}
		}
		o.remove = append(o.remove, ok.GetHeadersToRemove()...)
		sort.Strings(o.remove)
		return o
	}
	denied := resp.GetDeniedResponse()
	if denied == nil {
		t.Fatalf("response has neither ok nor denied response: %v", resp)
	}
	if code == codes.OK {
		t.Fatalf("a DeniedHttpResponse came with status OK")
	}
	o.status = int(denied.GetStatus().GetCode())
	if want := map[int]codes.Code{401: codes.Unauthenticated, 403: codes.PermissionDenied, 429: codes.ResourceExhausted, 400: codes.InvalidArgument, 431: codes.InvalidArgument}[o.status]; want != code {
		t.Errorf("HTTP status %d came with gRPC code %v, want %v", o.status, code, want)
	}
	o.body = denied.GetBody()
	for _, h := range denied.GetHeaders() {
		switch h.GetHeader().GetKey() {
		case "x-gatehouse-deny-reason":
			o.reason = h.GetHeader().GetValue()
		case "www-authenticate":
			o.challenge = h.GetHeader().GetValue()
		case "retry-after":
			o.retryAfter = h.GetHeader().GetValue()
		}
	}
	return o
}

// newCore builds an engine and core over store with clock.
func newCore(t *testing.T, store *snapshot.Store, clock *testfixture.Clock) *server.Core {
	t.Helper()
	engine := authz.New(store, authz.Options{Clock: clock.Now, Log: testr.New(t)})
	return server.NewCore(engine, store, metrics.New(store, clock.Now), server.Options{
		StripCredential: true, DecisionLogsPerSecond: 1000, Clock: clock.Now, Log: testr.New(t),
	})
}

// checkDenyBody asserts the JSON body carries exactly the reason code.
func checkDenyBody(t *testing.T, o outcome) {
	t.Helper()
	var body map[string]string
	if err := json.Unmarshal([]byte(o.body), &body); err != nil || len(body) != 1 || body["error"] != o.reason {
		t.Errorf("deny body %q is not {\"error\": %q}", o.body, o.reason)
	}
}
