package nginx_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/sidecar/server"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/nginxtest"
	"gatehouse.dev/gatehouse/test/testfixture"
)

// lenientUpstream is an app that reads paths as leniently as real servers
// do, all at once: ";" parameters stripped from the raw path (Tomcat,
// Jetty), percent-decoding twice (a decoding hop in front), backslashes as
// slashes (IIS), slashes merged and dot segments resolved. It counts the
// requests its /admin handler serves.
func lenientUpstream(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var adminHits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := r.URL.EscapedPath()
		segs := strings.Split(raw, "/")
		for i, s := range segs {
			if j := strings.IndexByte(s, ';'); j >= 0 {
				segs[i] = s[:j]
			}
		}
		p := strings.Join(segs, "/")
		for range 2 {
			if d, err := url.PathUnescape(p); err == nil {
				p = d
			}
		}
		p = path.Clean("/" + strings.ReplaceAll(p, "\\", "/"))
		if p == "/admin" || strings.HasPrefix(p, "/admin/") {
			adminHits.Add(1)
			_, _ = w.Write([]byte("admin"))
			return
		}
		_, _ = w.Write([]byte("public"))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), &adminHits
}

// rawRequest sends the request line as given (net/http's client would
// rewrite "//admin" or refuse "%zz") and returns the status.
func rawRequest(t *testing.T, addr, method, target string, headers map[string]string) int {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n")
	for k, v := range headers {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestNginxBypassAttemptsDoNotReachAProtectedHandler dresses /admin up in
// every way an upstream may read as /admin and sends it through real nginx
// auth_request: the admin handler, which needs an API key, must never run
// for a request without one. Before canonical matching, /%61dmin, //admin,
// /admin;x and the encoded forms passed the "/*" anonymous rule.
func TestNginxBypassAttemptsDoNotReachAProtectedHandler(t *testing.T) {
	dir := t.TempDir()
	key := testfixture.NewAPIKey(t, ns, "ops", "service:ops", "admin")
	pol := testfixture.Policy(ns, "main", testfixture.Epoch, nil,
		gatehousev1.Rule{Name: "admin", Match: gatehousev1.RuleMatch{Paths: []string{"/admin", "/admin/*"}}, Scopes: []string{"admin"}},
		gatehousev1.Rule{Name: "public", Match: gatehousev1.RuleMatch{Paths: []string{"/*"}}, Action: gatehousev1.ActionAllowAnonymous},
	)
	if err := os.WriteFile(filepath.Join(dir, "state.yaml"), testfixture.YAML(t, pol, key.Object()), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startSidecar(t, dir)
	upstream, adminHits := lenientUpstream(t)
	proxy := nginxtest.Start(t, a.HTTP, upstream)

	t.Run("The admin handler is reachable with the key, so the detector works.", func(t *testing.T) {
		before := adminHits.Load()
		if st := rawRequest(t, proxy, "GET", "/admin", map[string]string{"x-api-key": key.Key.Plaintext()}); st != 200 {
			t.Fatalf("status %d, want 200", st)
		}
		if adminHits.Load() != before+1 {
			t.Fatal("the admin handler did not run")
		}
	})
	t.Run("A public path passes anonymously.", func(t *testing.T) {
		if st := rawRequest(t, proxy, "GET", "/public/index.html", nil); st != 200 {
			t.Fatalf("status %d, want 200", st)
		}
	})
	// nginx passes 401 and 403 from the sidecar; it turns the sidecar's 400
	// (ambiguous_path, invalid_path) into 500, and itself answers 400 to
	// some targets. Either way the request stops at nginx.
	for _, tc := range []struct{ name, target string }{
		{"The plain protected path needs the key.", "/admin"},
		{"A percent-encoded letter is read as /admin.", "/%61dmin"},
		{"A lower-case escape is read as /admin.", "/a%64min/users"},
		{"A leading empty segment is refused.", "//admin"},
		{"An inner empty segment is refused.", "/public//../admin"},
		{"A path parameter is refused.", "/admin;x=1"},
		{"A path parameter on the protected segment is refused.", "/admin;/users"},
		{"A dot-dot segment is refused.", "/public/../admin"},
		{"An encoded dot-dot segment is refused.", "/public/%2e%2e/admin"},
		{"A Tomcat-style dot-dot segment is refused.", "/public/..;/admin"},
		{"An encoded slash is refused.", "/public%2f..%2fadmin"},
		{"A backslash is refused.", "/public\\..\\admin"},
		{"An encoded backslash is refused.", "/public%5c..%5cadmin"},
		{"A double-encoded letter is refused.", "/%2561dmin"},
		{"A double-encoded dot-dot is refused.", "/public/%252e%252e/admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := adminHits.Load()
			st := rawRequest(t, proxy, "GET", tc.target, nil)
			if adminHits.Load() != before {
				t.Fatalf("GET %s reached the admin handler (status %d)", tc.target, st)
			}
			if st == 200 {
				t.Fatalf("GET %s was allowed", tc.target)
			}
		})
	}
}

// startSidecar runs the sidecar on loopback over the state files in dir
// until the test ends, trusting the forwarded headers nginx sets.
func startSidecar(t *testing.T, dir string) app.Addresses {
	t.Helper()
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
	framework.Eventually(t, "the sidecar to be ready", 10*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + a.Health + "/readyz") //nolint:noctx // bounded by the client's default dial and the WaitFor timeout
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return a
}
