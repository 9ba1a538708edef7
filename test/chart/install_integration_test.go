package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"gatehouse.dev/gatehouse/operator/webhook"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

// can asks the API server's RBAC authorizer whether a ServiceAccount may
// do something.
func can(t *testing.T, env *testenv.Env, saNS, sa string, attrs authorizationv1.ResourceAttributes) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               fmt.Sprintf("system:serviceaccount:%s:%s", saNS, sa),
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + saNS, "system:authenticated"},
		ResourceAttributes: &attrs,
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.Client.Create(ctx, sar); err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return sar.Status.Allowed
}

func helmOn(t *testing.T, env *testenv.Env, args ...string) string {
	t.Helper()
	out, err := runHelm(t, append(args, "--kubeconfig", env.KubeconfigPath)...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestIntegrationHelmInstallUpgradeUninstall(t *testing.T) {
	env, ns := testenv.Start(t)
	shop := env.Namespace(t)
	billing := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	install := []string{"install", "gh", chartDir, "--namespace", ns,
		"--set", "image.repository=example.com/gatehouse", "--set", "image.tag=test",
		"--set", "sidecar.namespaces[0].name=" + shop,
		// The release names are cluster-wide (ClusterRoles, the webhook
		// configuration): a per-test prefix keeps tests independent.
		"--set", "fullnameOverride=gh-" + ns,
	}
	notes := helmOn(t, env, install...)
	prefix := "gh-" + ns
	t.Run("The install notes say how to opt in, which namespaces sidecars may read, and what uninstall leaves.", func(t *testing.T) {
		for _, want := range []string{`auth.gatehouse.dev/inject: "true"`, shop + " (ServiceAccounts: default)", "not removed by `helm uninstall`", "failurePolicy is Fail"} {
			if !strings.Contains(notes, want) {
				t.Errorf("the notes lack %q:\n%s", want, notes)
			}
		}
	})

	manifest := decodeAll(t, helmOn(t, env, "get", "manifest", "gh", "--namespace", ns))
	t.Run("Every object of the release exists on the API server.", func(t *testing.T) {
		if len(manifest) < 15 {
			t.Fatalf("the release holds only %v", manifest.names())
		}
		for _, o := range manifest {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(o.GroupVersionKind())
			key := client.ObjectKey{Namespace: o.GetNamespace(), Name: o.GetName()}
			if err := env.Client.Get(ctx, key, got); err != nil {
				t.Errorf("%s %s: %v", o.GetKind(), key, err)
			}
		}
	})

	sa := prefix
	rules := []struct {
		name     string
		ns, sa   string
		attrs    authorizationv1.ResourceAttributes
		expected bool
	}{
		{"The operator may renew its leader-election Lease.", ns, sa, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Name: "gatehouse-operator.auth.gatehouse.dev"}, true},
		{"The operator may not update another Lease.", ns, sa, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Name: "kube-scheduler"}, false},
		{"The operator may patch its own webhook configuration.", ns, sa, authorizationv1.ResourceAttributes{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: prefix + "-sidecar-injector"}, true},
		{"The operator may not patch other webhook configurations.", ns, sa, authorizationv1.ResourceAttributes{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "istio-sidecar-injector"}, false},
		{"The operator may watch its webhook certificate Secret.", ns, sa, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "watch", Resource: "secrets", Name: prefix + "-webhook-tls"}, true},
		{"The operator may read APIKeys everywhere (generated rules).", ns, sa, authorizationv1.ResourceAttributes{Namespace: shop, Verb: "list", Group: "auth.gatehouse.dev", Resource: "apikeys"}, true},
		{"A listed sidecar may list ConfigMaps in its namespace.", shop, "default", authorizationv1.ResourceAttributes{Namespace: shop, Verb: "list", Resource: "configmaps"}, true},
		{"A listed sidecar may watch APIKeys in its namespace.", shop, "default", authorizationv1.ResourceAttributes{Namespace: shop, Verb: "watch", Group: "auth.gatehouse.dev", Resource: "apikeys"}, true},
		{"A sidecar may not write APIKey status.", shop, "default", authorizationv1.ResourceAttributes{Namespace: shop, Verb: "update", Group: "auth.gatehouse.dev", Resource: "apikeys", Subresource: "status"}, false},
		{"A listed sidecar may watch AuthPolicies in its namespace.", shop, "default", authorizationv1.ResourceAttributes{Namespace: shop, Verb: "watch", Group: "auth.gatehouse.dev", Resource: "authpolicies"}, true},
		{"A sidecar may not read Secrets, where private keys live.", shop, "default", authorizationv1.ResourceAttributes{Namespace: shop, Verb: "get", Resource: "secrets", Name: "signing-key"}, false},
		{"A sidecar may not write ConfigMaps.", shop, "default", authorizationv1.ResourceAttributes{Namespace: shop, Verb: "update", Resource: "configmaps", Name: "record"}, false},
		{"A sidecar may not read ConfigMaps of another namespace.", shop, "default", authorizationv1.ResourceAttributes{Namespace: billing, Verb: "list", Resource: "configmaps"}, false},
		{"A ServiceAccount that is not listed gets nothing.", shop, "unlisted", authorizationv1.ResourceAttributes{Namespace: shop, Verb: "list", Resource: "configmaps"}, false},
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			if got := can(t, env, r.ns, r.sa, r.attrs); got != r.expected {
				t.Fatalf("allowed = %v, want %v", got, r.expected)
			}
		})
	}

	// The operator's webhook certificate management, run with the chart's
	// ServiceAccount's permissions only, writes its Secret and the caBundle
	// of the chart's webhook configuration; the upgrade below must keep it.
	mwcKey := client.ObjectKey{Name: prefix + "-sidecar-injector"}
	caBundle := runWebhookAsOperator(t, env, ns, prefix)

	helmOn(t, env, "upgrade", "gh", chartDir, "--namespace", ns, "--reuse-values",
		"--set", "webhook.failurePolicy=Ignore",
		// --set on a list index replaces the whole list: restate entry 0.
		"--set", "sidecar.namespaces[0].name="+shop,
		"--set", "sidecar.namespaces[1].name="+billing,
		"--set", "sidecar.namespaces[1].serviceAccounts={api}",
	)
	t.Run("An upgrade applies new values and keeps the caBundle the operator wrote.", func(t *testing.T) {
		got := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, mwcKey, got); err != nil {
			t.Fatal(err)
		}
		if fp := got.Webhooks[0].FailurePolicy; fp == nil || *fp != admissionregistrationv1.Ignore {
			t.Errorf("failurePolicy = %v after the upgrade", fp)
		}
		if string(got.Webhooks[0].ClientConfig.CABundle) != string(caBundle) {
			t.Errorf("the upgrade erased the operator's caBundle")
		}
		if !can(t, env, billing, "api", authorizationv1.ResourceAttributes{Namespace: billing, Verb: "list", Resource: "configmaps"}) {
			t.Error("the sidecar namespace added by the upgrade is not bound")
		}
	})

	manifest = decodeAll(t, helmOn(t, env, "get", "manifest", "gh", "--namespace", ns))
	helmOn(t, env, "uninstall", "gh", "--namespace", ns, "--wait", "--timeout", "2m")
	t.Run("Uninstall removes every object of the release.", func(t *testing.T) {
		for _, o := range manifest {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(o.GroupVersionKind())
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: o.GetNamespace(), Name: o.GetName()}, got)
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s %s/%s is still there (%v)", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
		releases := &unstructured.UnstructuredList{}
		releases.SetAPIVersion("v1")
		releases.SetKind("SecretList")
		if err := env.Client.List(ctx, releases, client.InNamespace(ns), client.MatchingLabels{"owner": "helm"}); err != nil {
			t.Fatal(err)
		}
		if len(releases.Items) != 0 {
			t.Errorf("helm left %d release records", len(releases.Items))
		}
	})
	t.Run("Uninstall leaves the CRDs, as documented.", func(t *testing.T) {
		for _, name := range []string{"apikeys.auth.gatehouse.dev", "signingkeys.auth.gatehouse.dev", "authpolicies.auth.gatehouse.dev"} {
			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				t.Errorf("CRD %s: %v", name, err)
			}
		}
	})
}

// runWebhookAsOperator runs the webhook's certificate manager and server in
// this process, impersonating the chart's operator ServiceAccount, until the
// caBundle of the chart's webhook configuration is written and the served
// certificate verifies against it; it returns that caBundle.
func runWebhookAsOperator(t *testing.T, env *testenv.Env, ns, prefix string) []byte {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + prefix,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	if err := webhook.Setup(mgr, webhook.Options{
		BindAddress:       addr,
		Namespace:         ns,
		SecretName:        prefix + "-webhook-tls",
		ServiceName:       prefix + "-webhook",
		ClusterDomain:     "cluster.local",
		IPAddresses:       []net.IP{net.IPv4(127, 0, 0, 1)},
		ConfigurationName: prefix + "-sidecar-injector",
		CAValidity:        365 * 24 * time.Hour,
		CertValidity:      90 * 24 * time.Hour,
		Injection:         &webhook.InjectionConfig{Image: "example.com/gatehouse:test"},
	}); err != nil {
		t.Fatal(err)
	}
	framework.StartManager(t, mgr)
	ctx := t.Context()

	var caBundle []byte
	framework.Eventually(t, "the webhook to serve, with the operator's RBAC, a certificate trusted by the caBundle", 30*time.Second, framework.NoError(func() error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: prefix + "-sidecar-injector"}, mwc); err != nil {
			return err
		}
		caBundle = mwc.Webhooks[0].ClientConfig.CABundle
		return verifyServed(addr, caBundle)
	}))
	secret := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: prefix + "-webhook-tls"}, secret); err != nil {
		t.Fatal(err)
	}
	if len(secret.OwnerReferences) != 1 || secret.OwnerReferences[0].Name != prefix+"-sidecar-injector" {
		t.Fatalf("the certificate Secret is not owned by the webhook configuration: %+v", secret.OwnerReferences)
	}
	return caBundle
}

func verifyServed(addr string, caBundle []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		return fmt.Errorf("caBundle holds no certificate")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		return err
	}
	return conn.Close()
}
