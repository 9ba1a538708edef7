package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/lestrrat-go/jwx/v2/jwa"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/controllers/apikeys"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/source"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
	"gatehouse.dev/gatehouse/test/testfixture"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// sidecarConfig is a client configuration that acts as the sidecar's
// service account, bound to the read-only Role the chart grants: get, list
// and watch on configmaps and authpolicies of its namespace, no Secrets.
func sidecarConfig(t *testing.T, env *testenv.Env, ns string) *rest.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-sidecar", Namespace: ns},
		Rules:      testenv.SidecarRules,
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-sidecar", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "sidecar", Namespace: ns}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T: %v", o, err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":sidecar"}
	// The sidecar's identity must not read Secrets: prove the binding is
	// what we think before relying on it.
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)); err == nil {
		t.Fatal("the sidecar identity can list Secrets; the test would prove nothing about least privilege")
	}
	return cfg
}

func startAPIKeyController(t *testing.T, env *testenv.Env, ns string) {
	t.Helper()
	skip := true
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:     env.Scheme,
		Logger:     testr.New(t).WithName("operator"),
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&apikeys.Reconciler{}).SetupWithManager(t.Context(), mgr, 1); err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)
}

func create(t *testing.T, env *testenv.Env, objs ...client.Object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func waitReady(t *testing.T, r *running) {
	t.Helper()
	framework.Eventually(t, "the sidecar to be ready", 30*time.Second, func() (bool, string) {
		code, body := httpGet(t, "http://"+r.addrs.Health+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code, body)
	})
}

func TestIntegrationAnAPIKeyIsAllowedThenDeniedSoonAfterItIsDisabled(t *testing.T) {
	env, ns := testenv.Start(t)
	startAPIKeyController(t, env, ns)
	ak := &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: ns},
		Spec:       gatehousev1.APIKeySpec{Subject: "service:billing", Scopes: []string{"orders:read"}, SecretName: "billing-key"},
	}
	pol := testfixture.Policy(ns, "main", time.Time{}, nil,
		gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}, Scopes: []string{"orders:read"}})
	pol.CreationTimestamp = metav1.Time{}
	create(t, env, ak, pol)

	// The operator delivers the key; a client would read it from the Secret.
	var key apikeyformat.Key
	framework.Eventually(t, "the operator to deliver the key", 30*time.Second, func() (bool, string) {
		sec := &corev1.Secret{}
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "billing-key"}, sec); err != nil {
			return false, err.Error()
		}
		k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey]))
		key = k
		return err == nil, "no parsable key in the delivery Secret"
	})

	r := start(t, ns, &source.Kubernetes{Config: sidecarConfig(t, env, ns), Namespace: ns, Log: testr.New(t)}, nil)
	waitReady(t, r)
	framework.Eventually(t, "the delivered key to be allowed", 10*time.Second, func() (bool, string) {
		got := reason(r.send(t, map[string]string{"x-api-key": key.Plaintext()}))
		return got == "allowed", got
	})

	// Disable the key and measure the time from the update to the first
	// denial, polling as fast as a busy client would.
	ctx := context.Background()
	cur := &gatehousev1.APIKey{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ak), cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Disabled = true
	t0 := time.Now()
	if err := env.Client.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	var got string
	for time.Since(t0) < 10*time.Second {
		if got = reason(r.send(t, map[string]string{"x-api-key": key.Plaintext()})); got != "allowed" {
			break
		}
	}
	took := time.Since(t0)
	if got != "api_key_revoked" {
		t.Fatalf("after disabling the key the check answered %q (after %v), want api_key_revoked", got, took)
	}
	t.Logf("time from disabling the APIKey to the first deny: %v", took)
	if took > 2*time.Second {
		t.Errorf("the key was denied %v after it was disabled; the target is under 2s", took)
	}
}

// rotationClient sends checks continuously with every token in tokens and
// counts wrongful denials.
type rotationClient struct {
	tokens        atomic.Pointer[[]string]
	sent, denied  atomic.Int64
	mu            sync.Mutex
	denialReasons map[string]int
}

func (c *rotationClient) run(ctx context.Context, t *testing.T, r *running) {
	for ctx.Err() == nil {
		for _, tok := range *c.tokens.Load() {
			resp, err := r.check.Check(ctx, checkRequest(tok))
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("Check: %v", err)
				}
				return
			}
			c.sent.Add(1)
			if got := reason(resp); got != "allowed" {
				c.denied.Add(1)
				c.mu.Lock()
				c.denialReasons[got]++
				c.mu.Unlock()
			}
		}
	}
}

func TestIntegrationASigningKeyRotationDeniesNoValidToken(t *testing.T) {
	env, ns := testenv.Start(t)
	const iss = "https://issuer.example.com"
	a, b, c := testfixture.NewSigner(t, jwa.ES256), testfixture.NewSigner(t, jwa.ES256), testfixture.NewSigner(t, jwa.RS256)
	jwks := testfixture.SigningKey(t, ns, "platform", iss, a)
	jwks.TypeMeta = metav1.TypeMeta{}
	published := jwks.Status
	pol := testfixture.Policy(ns, "main", time.Time{}, []gatehousev1.TrustedIssuer{
		{Name: "platform", SigningKeyRef: &gatehousev1.LocalObjectReference{Name: "platform"}, Audiences: []string{"orders"}},
	}, gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}})
	pol.CreationTimestamp = metav1.Time{}
	create(t, env, jwks, pol)
	// The status as the operator writes it (create drops the status).
	jwks.Status = published
	if err := env.Client.Status().Update(context.Background(), jwks); err != nil {
		t.Fatal(err)
	}

	r := start(t, ns, &source.Kubernetes{Config: sidecarConfig(t, env, ns), Namespace: ns, Log: testr.New(t)}, nil)
	waitReady(t, r)

	mint := func(s *testfixture.Signer, jti string) string {
		return s.Sign(t, testfixture.Claims(iss, "svc", time.Now(), map[string]any{"jti": jti}), nil)
	}
	// publish rewrites the status JWKS as the operator would.
	publish := func(signers ...*testfixture.Signer) {
		t.Helper()
		sk := &gatehousev1.SigningKey{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(jwks), sk); err != nil {
			t.Fatal(err)
		}
		sk.Status.JWKS = testfixture.JWKS(t, signers...)
		if err := env.Client.Status().Update(context.Background(), sk); err != nil {
			t.Fatal(err)
		}
	}
	// propagated waits until a probe token of s is accepted: the
	// propagation delay the Next phase exists for. Probes are not counted.
	propagated := func(s *testfixture.Signer) {
		t.Helper()
		probe := mint(s, "probe")
		framework.Eventually(t, "the next key to reach the sidecar", 10*time.Second, func() (bool, string) {
			got := reason(r.send(t, map[string]string{"authorization": "Bearer " + probe}))
			return got == "allowed", got
		})
	}
	// traffic waits for the client to send n more requests.
	client := &rotationClient{denialReasons: map[string]int{}}
	traffic := func(n int64) {
		t.Helper()
		target := client.sent.Load() + n
		framework.Eventually(t, "client traffic", 30*time.Second, func() (bool, string) {
			return client.sent.Load() >= target, fmt.Sprint(client.sent.Load())
		})
	}
	setTokens := func(toks ...string) { client.tokens.Store(&toks) }

	setTokens(mint(a, "a1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); client.run(ctx, t, r) }()
	defer func() { cancel(); <-done }()

	traffic(50)
	// Cycle 1: B is published as Next, becomes Active (new tokens are
	// signed with B while A's tokens are still in use), A is retired and,
	// once its tokens have expired, removed. Cycle 2 does the same from B
	// to C, an RS256 key.
	for _, step := range []struct{ old, next *testfixture.Signer }{{a, b}, {b, c}} {
		publish(step.old, step.next) // next: Next
		propagated(step.next)
		traffic(50)
		setTokens(mint(step.old, "old"), mint(step.next, "new")) // next: Active, old: Retired
		traffic(100)
		setTokens(mint(step.next, "new2")) // old tokens expired
		traffic(20)
		publish(step.next) // old: removed
		traffic(100)
	}
	cancel()
	<-done
	t.Logf("rotation through two full cycles: %d requests, %d denied", client.sent.Load(), client.denied.Load())
	if client.denied.Load() != 0 {
		t.Fatalf("%d of %d requests were wrongly denied during the rotation: %v", client.denied.Load(), client.sent.Load(), client.denialReasons)
	}
	// And the removed keys are really gone.
	if got := reason(r.send(t, map[string]string{"authorization": "Bearer " + mint(a, "late")})); got != "unknown_kid" {
		t.Fatalf("a token of the removed key got %q, want unknown_kid", got)
	}
}

// cuttableProxy forwards TCP to target until cut, and again once restored,
// on the same address: an API server that goes away and comes back.
type cuttableProxy struct {
	addr, target string
	mu           sync.Mutex
	lis          net.Listener
	conns        map[net.Conn]bool
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	t.Helper()
	p := &cuttableProxy{target: target, conns: map[net.Conn]bool{}}
	p.listen(t, "127.0.0.1:0")
	p.addr = p.lis.Addr().String()
	t.Cleanup(p.cut)
	return p
}

func (p *cuttableProxy) listen(t *testing.T, addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.lis = lis
	p.mu.Unlock()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
}

func (p *cuttableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		_ = p.lis.Close()
		p.lis = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func TestIntegrationTheSidecarServesItsLastStateWhileTheAPIServerIsAwayAndResyncs(t *testing.T) {
	env, ns := testenv.Start(t)
	key := testfixture.NewAPIKey(t, ns, "billing", "service:billing", "orders:read")
	ak := testfixture.CreateAPIKey(t, env.Client, key)
	pol := testfixture.Policy(ns, "main", time.Time{}, nil, gatehousev1.Rule{Name: "orders", Match: gatehousev1.RuleMatch{Paths: []string{"/orders/*"}}})
	pol.CreationTimestamp = metav1.Time{}
	create(t, env, pol)

	cfg := sidecarConfig(t, env, ns)
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCuttableProxy(t, u.Host)
	cfg.Host = "https://" + proxy.addr
	r := start(t, ns, &source.Kubernetes{Config: cfg, Namespace: ns, Log: testr.New(t), ProbeInterval: 100 * time.Millisecond}, nil)
	waitReady(t, r)
	apiKey := map[string]string{"x-api-key": key.Key.Plaintext()}
	if got := reason(r.send(t, apiKey)); got != "allowed" {
		t.Fatalf("before the outage the key got %q", got)
	}

	proxy.cut()
	// The watch breaks; the sidecar must notice (reload errors) and keep
	// answering from what it has.
	framework.Eventually(t, "the outage to be counted", 30*time.Second, func() (bool, string) {
		_, body := httpGet(t, "http://"+r.addrs.Metrics+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "gatehouse_sidecar_reload_errors_total ") && line != "gatehouse_sidecar_reload_errors_total 0" {
				return true, line
			}
		}
		return false, "no reload error yet"
	})
	for range 20 {
		if got := reason(r.send(t, apiKey)); got != "allowed" {
			t.Fatalf("during the outage the key got %q, want allowed from the last state", got)
		}
	}
	if code, _ := httpGet(t, "http://"+r.addrs.Health+"/readyz"); code != http.StatusOK {
		t.Fatalf("during the outage /readyz answered %d; the last state is still good", code)
	}

	// The key is revoked while the sidecar cannot see it; once the API
	// server is back, the sidecar resyncs and denies.
	cur := &gatehousev1.APIKey{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(ak), cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Disabled = true
	if err := env.Client.Update(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	if got := reason(r.send(t, apiKey)); got != "allowed" {
		t.Fatalf("the sidecar saw a change through a cut connection (%q)", got)
	}
	proxy.listen(t, proxy.addr)
	framework.Eventually(t, "the sidecar to resync and deny the revoked key", 60*time.Second, func() (bool, string) {
		got := reason(r.send(t, apiKey))
		return got == "api_key_revoked", got
	})
}
