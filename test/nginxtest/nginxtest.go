// Package nginxtest runs nginx on loopback as a real HTTP ext_authz client
// of a Gatehouse sidecar: auth_request asks the sidecar's HTTP contract
// about every request, as docs/sidecar.md shows, and passes the allowed ones
// with the identity headers to an upstream. It is used by tests only; nginx
// must be installed (.ci/run installs it), else the test fails.
package nginxtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

	"gatehouse.dev/gatehouse/test/framework"
)

// conf puts nginx in front of the upstream, asking the sidecar's HTTP
// contract about every request.
const conf = `daemon off;
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
    # nginx and the sidecar must read one path (docs/security.md, "What the
    # proxy must normalise"). The sidecar is asked about $request_uri, the
    # raw target, and proxy_pass below has no URI part, so the upstream gets
    # that same raw target. merge_slashes off keeps nginx's own location
    # matching from hiding "//" (which the sidecar refuses); nginx still
    # resolves dot segments for location matching, so every location must
    # be behind auth_request.
    merge_slashes off;
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
      # No URI part: the upstream gets the raw target the sidecar checked,
      # not nginx's decoded and re-encoded $uri.
      proxy_pass http://{{.Upstream}};
    }
  }
}
`

func freePort(t testing.TB) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs nginx on 127.0.0.1 in front of upstreamAddr, asking the
// sidecar's HTTP contract at sidecarAddr (host:port) with auth_request,
// until the test ends. It returns nginx's host:port once it listens.
func Start(t testing.TB, sidecarAddr, upstreamAddr string) string {
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
	var rendered bytes.Buffer
	if err := template.Must(template.New("nginx").Parse(conf)).Execute(&rendered, map[string]any{
		"Dir": dir, "Port": port, "Sidecar": sidecarAddr, "Upstream": upstreamAddr,
	}); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, rendered.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Cancelling asks nginx to stop (SIGTERM) and kills it 10 s later.
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log")) //nolint:gosec // nginx from PATH, arguments of this test
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting nginx: %v", err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log")) //nolint:gosec // the test's own temporary directory
			t.Logf("nginx output:\n%s\nnginx error.log:\n%s", out.String(), errLog)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	framework.Eventually(t, "nginx to listen", 10*time.Second, func() (bool, string) {
		select {
		case <-exited:
			t.Fatalf("nginx exited: %v\n%s", waitErr, out.String())
		default:
		}
		d := &net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, err.Error()
		}
		_ = c.Close()
		return true, ""
	})
	return addr
}

// EchoUpstream runs an HTTP server on loopback, until the test ends, that
// answers every request with a JSON object of the x-gatehouse-* and
// credential (Authorization, x-api-key) headers it received, names in lower
// case. It returns the server's host:port.
func EchoUpstream(t testing.TB) string {
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
