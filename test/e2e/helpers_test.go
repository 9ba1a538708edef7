package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	"gatehouse.dev/gatehouse/test/stack"
	"gatehouse.dev/gatehouse/test/testenv"
)

// logs collects every log line of the test binary: the operator's and the
// sidecar's loggers, and the global ones (controller-runtime's, used by
// the sidecar's informers, and klog's, used by client-go and leader
// election), to scan them for secrets and for refusals.
var logs = &stack.LogBuffer{}

func TestMain(m *testing.M) {
	ctrl.SetLogger(logs.Logger("ctrl"))
	klog.SetLogger(logs.Logger("klog"))
	os.Exit(testenv.Main(m))
}

// helm runs the pinned bin/helm on the test's API server, failing (never
// skipping) when it is missing.
func helm(ctx context.Context, t *testing.T, env *testenv.Env, args ...string) string {
	t.Helper()
	bin := filepath.Join(testenv.RepoRoot(), "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm is missing at %s: run `make %s`", bin, bin)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", env.KubeconfigPath)...)
	// Keep helm's caches and configuration out of the user's home.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// serviceAccountConfig asks the TokenRequest API (`kubectl create token`)
// for a token of the ServiceAccount ns/name and returns a configuration
// that authenticates with that token alone (the admin's client certificate
// is dropped; only the API server's CA is kept), and the token, to scan
// the logs for.
func serviceAccountConfig(ctx context.Context, t *testing.T, env *testenv.Env, ns, name string) (*rest.Config, string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", ns, name, err)
	}
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = tr.Status.Token

	// The API server must see the ServiceAccount, not the test's admin.
	who, err := kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview with the token of %s/%s: %v", ns, name, err)
	}
	if want := "system:serviceaccount:" + ns + ":" + name; who.Status.UserInfo.Username != want {
		t.Fatalf("the token authenticates as %q, want %q", who.Status.UserInfo.Username, want)
	}
	return cfg, tr.Status.Token
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// verifyServed dials the webhook as the API server does, trusting only
// caBundle.
func verifyServed(addr string, caBundle []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		return errors.New("the caBundle holds no certificate")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}
