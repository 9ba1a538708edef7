package server_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/go-logr/logr"

	"gatehouse.dev/gatehouse/sidecar/authz"
	"gatehouse.dev/gatehouse/sidecar/canonical"
	"gatehouse.dev/gatehouse/sidecar/server"
)

// FuzzCheckHandler sends arbitrary requests to the gRPC Check handler. It
// must never fail the RPC or panic, every denial must carry a known reason
// and a body made of that reason only (nothing echoed), and an allow must
// only ever come from one of the known-good credentials in the state.
func FuzzCheckHandler(f *testing.F) {
	w := newWorld(f)
	now := w.clock.Now()
	good := w.es.Sign(f, map[string]any{"iss": esIssuer, "sub": "a", "aud": "orders", "exp": now.Unix() + 600, "scope": "orders:read"}, nil)
	engine := authz.New(w.store, authz.Options{Clock: w.clock.Now})
	srv := server.NewAuthorizationServer(server.NewCore(engine, w.store, nil, server.Options{StripCredential: true, Log: logr.Discard()}))

	f.Add("GET", "api.example.com", "/orders/1", "authorization", "Bearer "+good, false)
	f.Add("GET", "api.example.com", "/orders/1", "x-api-key", w.active.Key.Plaintext(), true)
	f.Add("POST", "api.example.com", "/public/../orders", "authorization", "ApiKey "+w.active.Key.Plaintext(), false)
	f.Add("GET", "a.example.org:1", "/orders/%2e%2e", "authorization", "Bearer e30.e30.", true)
	f.Add("GET", "", "*", "authorization", "Bearer "+strings.Repeat("A", 9000), false)
	f.Add("\x00", "\xff", "/\u2028", "x-api-key", "gth_"+strings.Repeat("a", 80), true)

	allowedCreds := []string{"Bearer " + good, w.active.Key.Plaintext(), "ApiKey " + w.active.Key.Plaintext(),
		w.previous.Plaintext(), "ApiKey " + w.previous.Plaintext(), w.limited.Key.Plaintext(), "ApiKey " + w.limited.Key.Plaintext()}
	f.Fuzz(func(t *testing.T, method, host, path, name, value string, raw bool) {
		httpReq := &authv3.AttributeContext_HttpRequest{Method: method, Host: host, Path: path}
		if raw {
			httpReq.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: name, RawValue: []byte(value)}}}
		} else {
			httpReq.Headers = map[string]string{name: value}
		}
		resp, err := srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: httpReq}}})
		if err != nil {
			t.Fatalf("Check returned an error: %v", err)
		}
		// A request the canonicaliser refuses never reaches the rules.
		if _, _, err := canonical.Request(method, path, canonical.Options{}); err != nil {
			if resp.GetOkResponse() != nil || resp.GetDeniedResponse().GetStatus().GetCode() != typev3.StatusCode_BadRequest {
				t.Fatalf("a refused method or path got %v, want 400", resp.GetHttpResponse())
			}
		}
		if resp.GetOkResponse() != nil {
			v := strings.TrimSpace(value)
			if !slices.Contains(allowedCreds, v) && !strings.HasPrefix(path, "/public/") {
				t.Fatalf("allowed a request whose credential is not a known-good one")
			}
			return
		}
		d := resp.GetDeniedResponse()
		var body map[string]string
		if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || len(body) != 1 {
			t.Fatalf("deny body %q is not a single-code JSON object", d.GetBody())
		}
		if !slices.Contains(authz.AllReasons, authz.Reason(body["error"])) {
			t.Fatalf("deny reason %q is not a known code", body["error"])
		}
		// Deny headers are built from static parts only.
		for _, h := range d.GetHeaders() {
			k, v := h.GetHeader().GetKey(), h.GetHeader().GetValue()
			ok := false
			switch k {
			case "content-type":
				ok = v == "application/json"
			case "x-gatehouse-deny-reason":
				ok = v == body["error"]
			case "www-authenticate":
				ok = strings.HasPrefix(v, `Bearer realm="gatehouse"`) || strings.HasPrefix(v, `ApiKey realm="gatehouse"`)
			case "retry-after":
				ok = strings.Trim(v, "0123456789") == ""
			}
			if !ok {
				t.Fatalf("unexpected deny header %s: %q", k, v)
			}
		}
	})
}
