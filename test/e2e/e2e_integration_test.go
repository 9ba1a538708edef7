package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/internal/conditions"
	"gatehouse.dev/gatehouse/internal/keyring"
	operatorapp "gatehouse.dev/gatehouse/operator/app"
	"gatehouse.dev/gatehouse/operator/webhook"
	"gatehouse.dev/gatehouse/sidecar/app"
	"gatehouse.dev/gatehouse/test/demo"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/nginxtest"
	"gatehouse.dev/gatehouse/test/stack"
	"gatehouse.dev/gatehouse/test/testenv"
)

const (
	// image is what the chart is installed with, and what the webhook
	// must inject.
	image = "example.com/gatehouse:e2e"
	// sidecarSA is the app namespace's ServiceAccount the chart binds the
	// sidecar ClusterRole to by default.
	sidecarSA = "default"
)

// TestIntegrationEndToEnd is issue #7: the chart installed with helm on a
// real API server; the operator and a sidecar running in this process,
// each with a TokenRequest token of the ServiceAccount the chart gives it
// and nothing more; the samples made Ready by that operator; the webhook
// called by the API server (url client config on loopback) injecting
// opted-in pods only; and the demo's flow asserted over gRPC and through
// nginx auth_request, with no key and no token in any log.
func TestIntegrationEndToEnd(t *testing.T) {
	env, appNS := testenv.Start(t)
	releaseNS := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()

	// envtest runs no ServiceAccount controller: make the app namespace's
	// default ServiceAccount, whose pods the chart's sidecar RBAC serves.
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sidecarSA, Namespace: appNS}}); err != nil {
		t.Fatal(err)
	}

	// 1. helm install (install, upgrade and uninstall themselves are
	// test/chart's; this test uses the installed release).
	prefix := "gh-" + releaseNS
	helm(ctx, t, env, "install", "gh", filepath.Join(testenv.RepoRoot(), "charts", "gatehouse"), "--namespace", releaseNS,
		"--set", "image.repository=example.com/gatehouse", "--set", "image.tag=e2e",
		"--set", "fullnameOverride="+prefix,
		"--set", "sidecar.namespaces[0].name="+appNS,
		"--set", "webhook.enabled=true", "--set", "webhook.failurePolicy=Fail",
	)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		helm(ctx, t, env, "uninstall", "gh", "--namespace", releaseNS)
	})
	mwcName := prefix + "-sidecar-injector"

	// 2. The ServiceAccounts' own tokens.
	operatorConfig, operatorToken := serviceAccountConfig(ctx, t, env, releaseNS, prefix)
	sidecarConfig, sidecarToken := serviceAccountConfig(ctx, t, env, appNS, sidecarSA)

	// 3. The webhook on loopback: the API server calls it through a url
	// client config (no Service routes anywhere here). The injection
	// config is the one the chart rendered.
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: releaseNS, Name: prefix + "-sidecar-injection"}, cm); err != nil {
		t.Fatal(err)
	}
	injectionConfig := filepath.Join(t.TempDir(), "injection.yaml")
	if err := os.WriteFile(injectionConfig, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	webhookAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: mwcName}, mwc); err != nil {
		t.Fatal(err)
	}
	if fp := mwc.Webhooks[0].FailurePolicy; fp == nil || *fp != admissionregistrationv1.Fail {
		t.Fatalf("the chart's webhook failurePolicy is %v, want Fail", fp)
	}
	mwc.Webhooks[0].ClientConfig.Service = nil
	mwc.Webhooks[0].ClientConfig.URL = ptr.To("https://" + webhookAddr + webhook.InjectPath)
	if err := env.Client.Update(ctx, mwc); err != nil {
		t.Fatalf("pointing the webhook configuration at loopback: %v", err)
	}

	// 4. The operator and the sidecar, as the chart runs them but in this
	// process, with the ServiceAccounts' tokens only.
	s, err := stack.Start(ctx, stack.Options{
		OperatorConfig: operatorConfig,
		SidecarConfig:  sidecarConfig,
		Namespace:      appNS,
		PodLabels:      map[string]string{"app": "orders"},
		OperatorLog:    logs.Logger("operator"),
		SidecarLog:     logs.Logger("sidecar"),
		Operator: func(o *operatorapp.Options) {
			// The chart's flags (templates/deployment.yaml).
			o.LeaderElect = true
			o.LeaderElectionNamespace = releaseNS
			o.Webhook = webhook.Options{
				BindAddress:         webhookAddr,
				Namespace:           releaseNS,
				SecretName:          prefix + "-webhook-tls",
				ServiceName:         prefix + "-webhook",
				ClusterDomain:       "cluster.local",
				IPAddresses:         []net.IP{net.IPv4(127, 0, 0, 1)},
				ConfigurationName:   mwcName,
				CAValidity:          43800 * time.Hour, // webhook.selfSigned.caValidity
				CertValidity:        8760 * time.Hour,  // webhook.selfSigned.certValidity
				InjectionConfigPath: injectionConfig,
			}
		},
		// nginx sends the original request in X-Forwarded-* headers.
		Sidecar: func(c *app.Config) { c.HTTP.TrustForwardedHeaders = true },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the operator and the sidecar: %v", err)
		}
	})
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "the operator to write the caBundle and serve a certificate it trusts", 30*time.Second, func() (bool, string) {
		got := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: mwcName}, got); err != nil {
			return false, err.Error()
		}
		if err := verifyServed(webhookAddr, got.Webhooks[0].ClientConfig.CABundle); err != nil {
			return false, err.Error()
		}
		return true, ""
	})

	// 5. The samples, made Ready by the operator with the chart's RBAC.
	if applied, err := demo.ApplySamples(ctx, env.Client, appNS); err != nil || len(applied) != 3 {
		t.Fatalf("samples %v: %v", applied, err)
	}
	for _, obj := range []client.Object{
		&gatehousev1.SigningKey{ObjectMeta: metav1.ObjectMeta{Name: "platform"}},
		&gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "billing"}},
		&gatehousev1.AuthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "orders"}},
	} {
		framework.Eventually(t, fmt.Sprintf("%T %s to be Ready", obj, obj.GetName()), 30*time.Second, func() (bool, string) {
			if err := env.Client.Get(ctx, types.NamespacedName{Namespace: appNS, Name: obj.GetName()}, obj); err != nil {
				return false, err.Error()
			}
			conds := demo.ReadyConditions(obj)
			return conditions.IsTrue(conds, gatehousev1.ConditionReady), fmt.Sprint(conds)
		})
	}
	t.Logf("installed, started and Ready in %v", time.Since(start).Round(time.Millisecond))

	t.Run("Each identity is limited to its chart RBAC.", func(t *testing.T) {
		assertRBAC(ctx, t, env, operatorConfig, sidecarConfig, releaseNS, appNS, mwcName)
	})

	sec := &corev1.Secret{}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: appNS, Name: "billing-api-key"}, sec); err != nil {
		t.Fatal(err)
	}
	key := string(sec.Data[gatehousev1.DeliveryKeyDataKey])
	parsed, err := apikeyformat.Parse(key)
	if err != nil {
		t.Fatalf("the delivered key does not parse: %v", err)
	}
	token := func(scope string) string {
		t.Helper()
		var tr stack.TokenResponse
		framework.Eventually(t, "the token endpoint to issue a token for "+scope, 30*time.Second, func() (bool, string) {
			var err error
			if tr, err = stack.GetToken(ctx, s.DiscoveryURL, key, scope, "orders"); err != nil {
				return false, err.Error()
			}
			return tr.Status == http.StatusOK, tr.String()
		})
		return tr.AccessToken
	}
	readToken, writeToken := token("orders:read"), token("orders:read orders:write")

	proxy := nginxtest.Start(t, s.Sidecar.HTTP, nginxtest.EchoUpstream(t))
	f := &flow{grpcAddr: s.Sidecar.GRPC, proxy: proxy, http: &http.Client{Timeout: 10 * time.Second}}
	withKey := map[string]string{"x-api-key": key}
	withRead := map[string]string{"authorization": "Bearer " + readToken}
	withWrite := map[string]string{"authorization": "Bearer " + writeToken}
	// The sidecar may get the record or the JWKS a moment after Ready.
	for _, h := range []map[string]string{withKey, withRead} {
		framework.Eventually(t, "the sidecar to know the key and the issuer", 30*time.Second, func() (bool, string) {
			v, err := stack.CheckGRPC(ctx, f.grpcAddr, stack.Request{Method: "GET", Host: "orders.example.com", Path: "/orders/42", Headers: h})
			if err != nil {
				return false, err.Error()
			}
			return v.Allowed, v.String()
		})
	}
	apiKeyIdentity := map[string]string{"x-gatehouse-subject": "service:billing", "x-gatehouse-credential": "apikey", "x-gatehouse-key-id": parsed.ID()}
	// A token carries the ID of the key it was exchanged for.
	jwtIdentity := map[string]string{"x-gatehouse-subject": "service:billing", "x-gatehouse-credential": "jwt", "x-gatehouse-issuer": "https://auth.example.com/platform", "x-gatehouse-key-id": parsed.ID()}
	t.Run("The demo's flow, over gRPC and through nginx auth_request.", func(t *testing.T) {
		f.expect(ctx, t, []expectation{
			{name: "GET /orders/42 with the API key is allowed as service:billing", method: "GET", path: "/orders/42", headers: withKey, status: 200, subject: "service:billing", upstream: apiKeyIdentity},
			{name: "GET /orders/42 with an orders:read token is allowed as service:billing", method: "GET", path: "/orders/42", headers: withRead, status: 200, subject: "service:billing", upstream: jwtIdentity},
			{name: "POST /orders/42 with an orders:write token is allowed", method: "POST", path: "/orders/42", headers: withWrite, status: 200, subject: "service:billing", upstream: jwtIdentity},
			{name: "GET /orders/42 without credentials is 401", method: "GET", path: "/orders/42", status: 401},
			{name: "POST /orders/42 with a token down-scoped to orders:read is 403", method: "POST", path: "/orders/42", headers: withRead, status: 403},
			{name: "GET /admin (the deny-rest rule) with the API key is 403", method: "GET", path: "/admin", headers: withKey, status: 403},
			{name: "GET /healthz without credentials is allowed anonymously", method: "GET", path: "/healthz", status: 200, upstream: map[string]string{}},
		})
	})

	t.Run("The webhook injects opted-in pods only, once.", func(t *testing.T) {
		assertInjection(ctx, t, env.Client, appNS)
	})

	// Disabling the key denies it and its unexpired tokens, and the token
	// endpoint refuses it.
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"disabled":true}}`))
	if err := env.Client.Patch(ctx, &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "billing"}}, patch); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, "the sidecar to deny the disabled key", 10*time.Second, func() (bool, string) {
		v, err := stack.CheckGRPC(ctx, f.grpcAddr, stack.Request{Method: "GET", Host: "orders.example.com", Path: "/orders/42", Headers: withKey})
		if err != nil {
			return false, err.Error()
		}
		return !v.Allowed, v.String()
	})
	t.Run("A disabled key and its tokens are refused.", func(t *testing.T) {
		f.expect(ctx, t, []expectation{
			{name: "GET /orders/42 with the disabled API key is 401", method: "GET", path: "/orders/42", headers: withKey, status: 401},
			{name: "GET /orders/42 with its unexpired token is 401", method: "GET", path: "/orders/42", headers: withRead, status: 401},
		})
		tr, err := stack.GetToken(ctx, s.DiscoveryURL, key, "orders:read", "orders")
		if err != nil {
			t.Fatal(err)
		}
		if tr.Status != http.StatusUnauthorized || tr.Error != "invalid_client" {
			t.Fatalf("the token endpoint answered the disabled key with %s, want 401 invalid_client", tr)
		}
	})

	t.Run("No log holds the API key, a token or a ServiceAccount token, and the operator was never refused.", func(t *testing.T) {
		all := logs.String()
		// The logs are never printed: they would show what leaked.
		for _, want := range []string{`"msg"="token issued"`, `"protocol"="grpc"`, `"protocol"="http"`, "operator/webhook/injector"} {
			if !strings.Contains(all, want) {
				t.Fatalf("nothing to scan: the logs lack %s (%d bytes)", want, len(all))
			}
		}
		secrets := map[string]string{"the API key": key, "a read token": readToken, "a write token": writeToken, "the operator's ServiceAccount token": operatorToken, "the sidecar's ServiceAccount token": sidecarToken}
		var redactions []string
		for name, secret := range secrets {
			for _, needle := range []string{secret, secret[len(secret)-20:]} {
				redactions = append(redactions, needle, "<"+name+", redacted>")
				if strings.Contains(all, needle) {
					t.Errorf("the logs contain %s (%d chars of it)", name, len(needle))
				}
			}
		}
		redact := strings.NewReplacer(redactions...)
		for line := range strings.Lines(all) {
			if strings.Contains(strings.ToLower(line), "forbidden") {
				t.Errorf("a refusal in the logs: %s", redact.Replace(line))
			}
		}
		t.Logf("scanned %d bytes of logs", len(all))
	})
	t.Logf("end to end in %v", time.Since(start).Round(time.Millisecond))
}

// assertRBAC checks, with the identities' own tokens, what the API server
// lets them do: what they need, and not what they must not.
func assertRBAC(ctx context.Context, t *testing.T, env *testenv.Env, operatorConfig, sidecarConfig *rest.Config, releaseNS, appNS, mwcName string) {
	t.Helper()
	clientFor := func(cfg *rest.Config) client.Client {
		c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	operatorClient, sidecarClient := clientFor(operatorConfig), clientFor(sidecarConfig)
	privateKeys := types.NamespacedName{Namespace: appNS, Name: keyring.SecretName("platform")}
	if err := env.Client.Get(ctx, privateKeys, &corev1.Secret{}); err != nil {
		t.Fatalf("the SigningKey's private Secret %s: %v", privateKeys, err)
	}
	jwks := &gatehousev1.SigningKey{}
	for _, tc := range []struct {
		name      string
		do        func() error
		forbidden bool
	}{
		{"The sidecar cannot read the SigningKey's private-key Secret.", func() error { return sidecarClient.Get(ctx, privateKeys, &corev1.Secret{}) }, true},
		{"The sidecar cannot read the APIKey's delivery Secret.", func() error {
			return sidecarClient.Get(ctx, types.NamespacedName{Namespace: appNS, Name: "billing-api-key"}, &corev1.Secret{})
		}, true},
		{"The sidecar cannot list Secrets.", func() error { return sidecarClient.List(ctx, &corev1.SecretList{}, client.InNamespace(appNS)) }, true},
		{"The sidecar reads its namespace's SigningKey, whose status holds the JWKS.", func() error {
			return sidecarClient.Get(ctx, types.NamespacedName{Namespace: appNS, Name: "platform"}, jwks)
		}, false},
		{"The sidecar cannot write its status.", func() error { return sidecarClient.Status().Update(ctx, jwks.DeepCopy()) }, true},
		{"The sidecar cannot read ConfigMaps of another namespace.", func() error {
			return sidecarClient.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(releaseNS))
		}, true},
		{"The operator cannot list pods.", func() error { return operatorClient.List(ctx, &corev1.PodList{}, client.InNamespace(appNS)) }, true},
		{"The operator cannot read another webhook configuration.", func() error {
			return operatorClient.Get(ctx, client.ObjectKey{Name: "istio-sidecar-injector"}, &admissionregistrationv1.MutatingWebhookConfiguration{})
		}, true},
		{"The operator reads its own webhook configuration.", func() error {
			return operatorClient.Get(ctx, client.ObjectKey{Name: mwcName}, &admissionregistrationv1.MutatingWebhookConfiguration{})
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if tc.forbidden && !apierrors.IsForbidden(err) {
				t.Fatalf("got %v, want Forbidden", err)
			}
			if !tc.forbidden && err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

type expectation struct {
	name         string
	method, path string
	headers      map[string]string
	status       int
	subject      string
	upstream     map[string]string // the identity headers the upstream gets (exactly); nil: not checked
}

// flow sends requests to the sidecar over gRPC (as Envoy) and through
// nginx auth_request (a real HTTP client, proxy and upstream).
type flow struct {
	grpcAddr, proxy string
	http            *http.Client
}

func (f *flow) expect(ctx context.Context, t *testing.T, es []expectation) {
	t.Helper()
	for _, e := range es {
		t.Run(e.name, func(t *testing.T) {
			v, err := stack.CheckGRPC(ctx, f.grpcAddr, stack.Request{Method: e.method, Host: "orders.example.com", Path: e.path, Headers: e.headers})
			if err != nil {
				t.Fatal(err)
			}
			if v.Allowed != (e.status == http.StatusOK) || v.Status != e.status || v.Subject != e.subject {
				t.Errorf("over gRPC: %s, want status %d subject %q", v, e.status, e.subject)
			}

			req, err := http.NewRequestWithContext(ctx, e.method, "http://"+f.proxy+e.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "orders.example.com"
			for k, v := range e.headers {
				req.Header.Set(k, v)
			}
			resp, err := f.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			if resp.StatusCode != e.status {
				t.Fatalf("through nginx: HTTP %d, want %d", resp.StatusCode, e.status)
			}
			if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("through nginx: a 401 without WWW-Authenticate")
			}
			if resp.StatusCode != http.StatusOK || e.upstream == nil {
				return
			}
			var seen map[string]string
			if err := json.Unmarshal(body, &seen); err != nil {
				t.Fatalf("the upstream's answer does not decode: %v", err)
			}
			for _, h := range []string{"authorization", "x-api-key"} {
				if _, ok := seen[h]; ok {
					t.Errorf("the upstream received the credential header %s", h)
				}
			}
			delete(seen, "x-gatehouse-scopes")
			delete(seen, "x-gatehouse-token-id")
			if fmt.Sprint(seen) != fmt.Sprint(e.upstream) {
				t.Errorf("the upstream received the identity %v, want %v", seen, e.upstream)
			}
		})
	}
}

// assertInjection creates pods through the API server, which sends the
// opted-in ones to the operator's webhook.
func assertInjection(ctx context.Context, t *testing.T, c client.Client, ns string) {
	t.Helper()
	newPod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "orders", Image: "example.com/orders:1"}}},
		}
	}
	optIn := map[string]string{"app": "orders", webhook.LabelInject: "true"}

	injected := newPod("orders-injected", optIn)
	if err := c.Create(ctx, injected); err != nil {
		t.Fatalf("creating an opted-in pod: %v", err)
	}
	t.Run("A pod with the opt-in label comes back with the sidecar as a native sidecar.", func(t *testing.T) {
		if n := len(injected.Spec.InitContainers); n != 1 {
			t.Fatalf("%d init containers, want the sidecar alone", n)
		}
		sc := injected.Spec.InitContainers[0]
		if sc.Name != webhook.SidecarName || sc.Image != image || sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("init container %s image %s restartPolicy %v, want %s image %s restartPolicy Always", sc.Name, sc.Image, sc.RestartPolicy, webhook.SidecarName, image)
		}
		vols := map[string]bool{}
		for _, v := range injected.Spec.Volumes {
			vols[v.Name] = true
		}
		if !vols[webhook.PodInfoVolume] || !vols[webhook.TokenVolume] || injected.Spec.ServiceAccountName != sidecarSA {
			t.Fatalf("volumes %v, ServiceAccount %q: want the sidecar's volumes and the ServiceAccount the chart binds", vols, injected.Spec.ServiceAccountName)
		}
		if len(injected.Spec.Containers) != 1 || injected.Spec.Containers[0].Name != "orders" {
			t.Fatalf("the app containers changed: %+v", injected.Spec.Containers)
		}
	})
	t.Run("A pod without the label is untouched.", func(t *testing.T) {
		plain := newPod("orders-plain", map[string]string{"app": "orders"})
		if err := c.Create(ctx, plain); err != nil {
			t.Fatal(err)
		}
		if len(plain.Spec.InitContainers) != 0 || len(plain.Spec.Volumes) != 0 || plain.Spec.ServiceAccountName != "" {
			t.Fatalf("the pod was changed: init containers %v, volumes %v, ServiceAccount %q", plain.Spec.InitContainers, plain.Spec.Volumes, plain.Spec.ServiceAccountName)
		}
	})
	t.Run("Creating a pod that already has the sidecar, or updating one, injects nothing more.", func(t *testing.T) {
		again := newPod("orders-again", optIn)
		again.Spec = *injected.Spec.DeepCopy()
		if err := c.Create(ctx, again); err != nil {
			t.Fatal(err)
		}
		dry := newPod("orders-dry-run", optIn)
		dry.Spec = *injected.Spec.DeepCopy()
		if err := c.Create(ctx, dry, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		updated := injected.DeepCopy()
		updated.Annotations = map[string]string{"example.com/touched": "true"}
		if err := c.Update(ctx, updated); err != nil {
			t.Fatal(err)
		}
		for _, p := range []*corev1.Pod{again, dry, updated} {
			if len(p.Spec.InitContainers) != 1 || len(p.Spec.Volumes) != len(injected.Spec.Volumes) {
				t.Errorf("pod %s: %d init containers and %d volumes, want 1 and %d", p.Name, len(p.Spec.InitContainers), len(p.Spec.Volumes), len(injected.Spec.Volumes))
			}
		}
	})
}
