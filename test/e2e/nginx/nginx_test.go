package nginx_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/test/nginxtest"
	"gatehouse.dev/gatehouse/test/testfixture"
)

const (
	ns     = "shop"
	issuer = "https://issuer.example.com"
)

func TestNginxAuthRequestAllowsAndDeniesThroughTheSidecar(t *testing.T) {
	dir := t.TempDir()
	key := testfixture.NewAPIKey(t, ns, "billing", "service:billing", "orders:read")
	signer := testfixture.NewSigner(t, jwa.ES256)
	pol := testfixture.Policy(ns, "main", testfixture.Epoch, []gatehousev1.TrustedIssuer{
		{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}},
	},
		gatehousev1.Rule{Name: "public", Match: gatehousev1.RuleMatch{Paths: []string{"/public/*"}}, Action: gatehousev1.ActionAllowAnonymous},
		gatehousev1.Rule{Name: "orders-write", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}, Methods: []string{"POST"}}, Scopes: []string{"orders:write"}},
		gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}},
	)
	state := testfixture.YAML(t, pol, testfixture.SigningKey(t, ns, "platform", issuer, signer), key.Object())
	if err := os.WriteFile(filepath.Join(dir, "state.yaml"), state, 0o600); err != nil {
		t.Fatal(err)
	}

	a := startSidecar(t, dir)
	proxy := nginxtest.Start(t, a.HTTP, nginxtest.EchoUpstream(t))

	tok := signer.Sign(t, testfixture.Claims(issuer, "user:alice", time.Now(), map[string]any{"scope": "orders:read", "aud": nil}), nil)
	cases := []struct {
		name       string
		method     string
		path       string
		headers    map[string]string
		wantStatus int
		wantSeen   map[string]string // headers the upstream received (exactly)
		wantChall  string            // WWW-Authenticate prefix on 401
	}{
		{
			name: "A valid API key passes; the upstream gets the identity and neither the key nor spoofed headers",
			path: "/orders/1?x=1", headers: map[string]string{"x-api-key": key.Key.Plaintext(), "x-gatehouse-issuer": "https://evil.example.com"},
			wantStatus: 200,
			wantSeen: map[string]string{"x-gatehouse-subject": "service:billing", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "apikey", "x-gatehouse-key-id": key.Key.ID()},
		},
		{
			name: "A valid bearer token passes with issuer and token ID",
			path: "/orders/1", headers: map[string]string{"Authorization": "Bearer " + tok},
			wantStatus: 200,
			wantSeen: map[string]string{"x-gatehouse-subject": "user:alice", "x-gatehouse-scopes": "orders:read",
				"x-gatehouse-credential": "jwt", "x-gatehouse-issuer": issuer, "x-gatehouse-token-id": "tok-1"},
		},
		{
			name: "An anonymous path passes without identity, even a spoofed one",
			path: "/public/index.html", headers: map[string]string{"x-gatehouse-subject": "admin"},
			wantStatus: 200, wantSeen: map[string]string{},
		},
		{name: "A request without credential gets 401 with a challenge", path: "/orders/1", wantStatus: 401, wantChall: `Bearer realm="gatehouse"`},
		{name: "A wrong API key gets 401 with the ApiKey challenge", path: "/orders/1", headers: map[string]string{"x-api-key": testfixture.NewAPIKey(t, ns, "x", "x").Key.Plaintext()}, wantStatus: 401, wantChall: `ApiKey realm="gatehouse", error="invalid_key"`},
		{name: "A tampered token gets 401", path: "/orders/1", headers: map[string]string{"Authorization": "Bearer " + tok[:len(tok)-4] + "AAAA"}, wantStatus: 401, wantChall: `Bearer realm="gatehouse", error="invalid_token"`},
		{name: "A key without the write scope gets 403 on POST", method: "POST", path: "/orders/1", headers: map[string]string{"x-api-key": key.Key.Plaintext()}, wantStatus: 403},
		{name: "A path no rule matches gets 403", path: "/admin", headers: map[string]string{"x-api-key": key.Key.Plaintext()}, wantStatus: 403},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req, err := http.NewRequest(method, "http://"+proxy+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.wantStatus == 200 {
				var seen map[string]string
				if err := json.Unmarshal(body, &seen); err != nil {
					t.Fatalf("upstream answer %q: %v", body, err)
				}
				if fmt.Sprint(seen) != fmt.Sprint(tc.wantSeen) {
					t.Errorf("the upstream received %v, want %v", seen, tc.wantSeen)
				}
				return
			}
			if tc.wantChall != "" && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), tc.wantChall) {
				t.Errorf("WWW-Authenticate %q, want it to start with %q", resp.Header.Get("WWW-Authenticate"), tc.wantChall)
			}
		})
	}
}
