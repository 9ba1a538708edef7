package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/lestrrat-go/jwx/v2/jwa"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/sidecar/testfixture"
)

const (
	ns     = "shop"
	issuer = "https://issuer.example.com"
)

// nginxConf puts nginx in front of the upstream, asking the sidecar's HTTP
// contract about every request, as docs/sidecar.md shows.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log info;
events { worker_connections 64; }
http {
  access_log {{.Dir}}/access.log;
  client_body_temp_path {{.Dir}}/body;
  proxy_temp_path {{.Dir}}/proxy;
  fastcgi_temp_path {{.Dir}}/fastcgi;
  uwsgi_temp_path {{.Dir}}/uwsgi;
  scgi_temp_path {{.Dir}}/scgi;
  server {
    listen 127.0.0.1:{{.Port}};
    location = /_gatehouse_auth {
      internal;
      proxy_pass http://{{.Sidecar}};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Uri $request_uri;
    }
    location / {
      auth_request /_gatehouse_auth;
      auth_request_set $gh_subject $upstream_http_x_gatehouse_subject;
      auth_request_set $gh_scopes $upstream_http_x_gatehouse_scopes;
      auth_request_set $gh_credential $upstream_http_x_gatehouse_credential;
      auth_request_set $gh_key_id $upstream_http_x_gatehouse_key_id;
      auth_request_set $gh_issuer $upstream_http_x_gatehouse_issuer;
      auth_request_set $gh_token_id $upstream_http_x_gatehouse_token_id;
      # An empty value removes the header: client-sent copies never pass.
      proxy_set_header x-gatehouse-subject $gh_subject;
      proxy_set_header x-gatehouse-scopes $gh_scopes;
      proxy_set_header x-gatehouse-credential $gh_credential;
      proxy_set_header x-gatehouse-key-id $gh_key_id;
      proxy_set_header x-gatehouse-issuer $gh_issuer;
      proxy_set_header x-gatehouse-token-id $gh_token_id;
      proxy_set_header Authorization "";
      proxy_set_header x-api-key "";
      proxy_pass http://{{.Upstream}};
    }
  }
}
`

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNginx runs nginx with conf on loopback until the test ends.
func startNginx(t *testing.T, sidecarAddr, upstreamAddr string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/nginx"); statErr == nil {
			bin = "/usr/sbin/nginx"
		} else {
			t.Fatalf("nginx is not installed; this end-to-end test needs it (apt-get install -y nginx; .ci/run installs it): %v", err)
		}
	}
	dir := t.TempDir()
	port := freePort(t)
	var conf bytes.Buffer
	if err := template.Must(template.New("nginx").Parse(nginxConf)).Execute(&conf, map[string]any{
		"Dir": dir, "Port": port, "Sidecar": sidecarAddr, "Upstream": upstreamAddr,
	}); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nnginx error.log:\n%s", out.String(), errLog)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testfixture.WaitFor(t, 10*time.Second, "nginx to listen", func() (bool, string) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("nginx exited: %v\n%s", err, out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		_ = c.Close()
		return true, ""
	})
	return addr
}

// upstream echoes the gatehouse and credential headers it received.
func upstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := map[string]string{}
		for k, v := range r.Header {
			lk := strings.ToLower(k)
			if strings.HasPrefix(lk, "x-gatehouse-") || lk == "authorization" || lk == "x-api-key" {
				seen[lk] = strings.Join(v, ",")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

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
	state := testfixture.YAML(t, pol, testfixture.JWKSConfigMap(t, ns, "platform", issuer, signer), key.ConfigMap(t))
	if err := os.WriteFile(filepath.Join(dir, "state.yaml"), state, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan app.Addresses, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Config{
			Namespace: ns, Source: &source.Files{Dir: dir, PollInterval: 50 * time.Millisecond},
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0",
			HTTP:        server.HTTPOptions{TrustForwardedHeaders: true},
			Core:        server.Options{StripCredential: true},
			Log:         testr.New(t),
			OnListening: func(a app.Addresses) { addrs <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sidecar: %v", err)
		}
	})
	var a app.Addresses
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("the sidecar stopped: %v", err)
	}
	testfixture.WaitFor(t, 10*time.Second, "the sidecar to be ready", func() (bool, string) {
		resp, err := http.Get("http://" + a.Health + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	proxy := startNginx(t, a.HTTP, upstream(t))

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
