// Package chart tests the Helm chart in charts/gatehouse: unit tests render
// it with the pinned helm (bin/helm, `make test-unit` installs it) and check
// what it produces; the integration test installs, upgrades and uninstalls it
// on a real API server.
package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"gatehouse.dev/gatehouse/config/rbac"
	"gatehouse.dev/gatehouse/operator/webhook"
	"gatehouse.dev/gatehouse/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var chartDir = filepath.Join(testenv.RepoRoot(), "charts", "gatehouse")

// helm returns the pinned helm binary, failing (never skipping) when it is
// missing.
func helm(t testing.TB) string {
	t.Helper()
	p := filepath.Join(testenv.RepoRoot(), "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("helm is missing at %s: run `make %s`", p, p)
	}
	return p
}

func runHelm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	// Keep helm's caches and configuration out of the user's home.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// rendered is the output of `helm template`.
type rendered []*unstructured.Unstructured

// render runs `helm template` with the given --set flags.
func render(t testing.TB, sets ...string) rendered {
	t.Helper()
	args := []string{"template", "gh", chartDir, "--namespace", "gatehouse-system"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", sets, err, out)
	}
	return decodeAll(t, out)
}

func decodeAll(t testing.TB, docs string) rendered {
	t.Helper()
	var objs rendered
	d := yaml.NewYAMLOrJSONDecoder(strings.NewReader(docs), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				return objs
			}
			t.Fatalf("decoding rendered chart: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// find returns the object of that kind and name, failing when absent.
func (r rendered) find(t testing.TB, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range r {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the chart rendered no %s %q; it rendered %v", kind, name, r.names())
	return nil
}

func (r rendered) has(kind, name string) bool {
	for _, o := range r {
		if o.GetKind() == kind && o.GetName() == name {
			return true
		}
	}
	return false
}

func (r rendered) names() []string {
	var n []string
	for _, o := range r {
		n = append(n, o.GetKind()+"/"+o.GetName())
	}
	return n
}

// into converts an unstructured object to a typed one.
func into[T any](t testing.TB, u *unstructured.Unstructured) *T {
	t.Helper()
	b, err := sigsyaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := sigsyaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatalf("%s %s does not decode strictly into %T: %v", u.GetKind(), u.GetName(), v, err)
	}
	return &v
}

func TestHelmLintIsClean(t *testing.T) {
	tests := []struct {
		name string
		sets []string
	}{
		{name: "The default values lint clean."},
		{name: "cert-manager certificates with sidecar namespaces lint clean.", sets: []string{
			"webhook.certManager.enabled=true",
			"sidecar.namespaces[0].name=shop",
			"metrics.serviceMonitor.enabled=true",
			"podDisruptionBudget.enabled=true",
		}},
		{name: "A chart without the webhook lints clean.", sets: []string{"webhook.enabled=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			for _, s := range tt.sets {
				args = append(args, "--set", s)
			}
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			if !strings.Contains(out, "0 chart(s) failed") || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Fatalf("helm lint is not clean:\n%s", out)
			}
		})
	}
}

func TestValuesSchemaRejectsMistakes(t *testing.T) {
	tests := []struct {
		name    string
		sets    []string
		wantErr string
	}{
		{name: "An unknown failurePolicy is rejected.", sets: []string{"webhook.failurePolicy=Sometimes"}, wantErr: "failurePolicy"},
		{name: "A misspelt top-level key is rejected.", sets: []string{"replicas=3"}, wantErr: "replicas"},
		{name: "A misspelt operator key is rejected.", sets: []string{"operator.replica=3"}, wantErr: "replica"},
		{name: "A sidecar namespace without a name is rejected.", sets: []string{"sidecar.namespaces[0].serviceAccounts={default}"}, wantErr: "name"},
		{name: "A digest that is not sha256 is rejected.", sets: []string{"image.digest=latest"}, wantErr: "digest"},
		{name: "A webhook timeout above the API server's 30 s maximum is rejected.", sets: []string{"webhook.timeoutSeconds=31"}, wantErr: "timeoutSeconds"},
		{name: "Several replicas without leader election are rejected.", sets: []string{"operator.leaderElection=false"}, wantErr: "leaderElection must be true"},
		{name: "A certificate validity that is not a Go duration is rejected.", sets: []string{"webhook.selfSigned.certValidity=1y"}, wantErr: "certValidity"},
		{name: "A sidecar metrics address without a port is rejected.", sets: []string{"sidecar.metricsBindAddress=0.0.0.0"}, wantErr: "metricsBindAddress"},
		{name: "A trusted proxy that is a host name, not an address or CIDR, is rejected.", sets: []string{"tokenEndpoint.trustedProxies={ingress.example.com}"}, wantErr: "trustedProxies"},
		{name: "An xDS token lifetime below the API server's 600 s minimum is rejected.", sets: []string{"xds.tokenExpirationSeconds=60"}, wantErr: "tokenExpirationSeconds"},
		{name: "xDS without the webhook, which hands out its CA, is rejected.", sets: []string{"xds.enabled=true", "webhook.enabled=false"}, wantErr: "xds.enabled needs webhook.enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"template", "gh", chartDir}
			for _, s := range tt.sets {
				args = append(args, "--set", s)
			}
			out, err := runHelm(t, args...)
			if err == nil {
				t.Fatalf("helm template accepted %v", tt.sets)
			}
			if !strings.Contains(out, tt.wantErr) {
				t.Fatalf("the error does not name %q:\n%s", tt.wantErr, out)
			}
		})
	}
}

func TestOperatorDeploymentIsHardened(t *testing.T) {
	objs := render(t)
	d := into[appsv1.Deployment](t, objs.find(t, "Deployment", "gh-gatehouse"))
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]

	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want 2 so that the webhook survives a node drain", *d.Spec.Replicas)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext is not hardened: %+v", psc)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("the operator container has no securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Error("runAsNonRoot is not true")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities = %+v, want drop [ALL] and nothing added", sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("seccompProfile is not RuntimeDefault")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe = %+v, want GET /healthz", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe = %+v, want GET /readyz", c.ReadinessProbe)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want CPU and memory requests and a memory limit", c.Resources)
	}
	if c.Image != "ghcr.io/gatehouse-dev/gatehouse:0.1.0" {
		t.Errorf("image = %q, want the appVersion tag", c.Image)
	}
	for _, want := range []string{
		"operator",
		"--metrics-bind-address=:8080",
		"--health-probe-bind-address=:8081",
		"--leader-elect=true",
		"--leader-election-namespace=gatehouse-system",
		"--webhook-bind-address=:9443",
		"--webhook-configuration-name=gh-gatehouse-sidecar-injector",
		"--webhook-service-name=gh-gatehouse-webhook",
		"--webhook-cert-secret=gh-gatehouse-webhook-tls",
		"--sidecar-injection-config=/etc/gatehouse/injection/config.yaml",
	} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %q lack %q", c.Args, want)
		}
	}
	if pod.ServiceAccountName != "gh-gatehouse" {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	if d.Spec.Template.Annotations["checksum/sidecar-injection"] == "" {
		t.Error("no checksum annotation: a changed injection template would not roll the operator")
	}
}

func TestImageDigestWinsOverTheTag(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	objs := render(t, "image.digest="+digest, "image.tag=9.9.9")
	d := into[appsv1.Deployment](t, objs.find(t, "Deployment", "gh-gatehouse"))
	if got, want := d.Spec.Template.Spec.Containers[0].Image, "ghcr.io/gatehouse-dev/gatehouse@"+digest; got != want {
		t.Fatalf("image = %q, want %q", got, want)
	}
	cm := into[corev1.ConfigMap](t, objs.find(t, "ConfigMap", "gh-gatehouse-sidecar-injection"))
	if !strings.Contains(cm.Data["config.yaml"], digest) {
		t.Fatalf("the injected sidecar does not use the digest:\n%s", cm.Data["config.yaml"])
	}
}

// TestOperatorClusterRoleIsTheGeneratedOne guards against drift: the chart's
// cluster-wide rules must be exactly controller-gen's.
func TestOperatorClusterRoleIsTheGeneratedOne(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatalf("reading controller-gen's role (run `make manifests`): %v", err)
	}
	var generated *rbacv1.ClusterRole
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		var cr rbacv1.ClusterRole
		if err := sigsyaml.Unmarshal([]byte(doc), &cr); err == nil && cr.Kind == "ClusterRole" {
			generated = &cr
		}
	}
	if generated == nil {
		t.Fatal("config/rbac/role.yaml holds no ClusterRole")
	}
	objs := render(t)
	chart := into[rbacv1.ClusterRole](t, objs.find(t, "ClusterRole", "gh-gatehouse-operator"))
	if !reflect.DeepEqual(chart.Rules, generated.Rules) {
		t.Fatalf("the chart's operator rules differ from config/rbac/role.yaml (run `make manifests`):\nchart: %+v\ngenerated: %+v", chart.Rules, generated.Rules)
	}
	crb := into[rbacv1.ClusterRoleBinding](t, objs.find(t, "ClusterRoleBinding", "gh-gatehouse-operator"))
	wantSubject := rbacv1.Subject{Kind: "ServiceAccount", Name: "gh-gatehouse", Namespace: "gatehouse-system"}
	if crb.RoleRef.Name != "gh-gatehouse-operator" || len(crb.Subjects) != 1 || crb.Subjects[0] != wantSubject {
		t.Fatalf("binding = %+v", crb)
	}
}

func TestOperatorExtraRulesAreScopedToItsOwnObjects(t *testing.T) {
	tests := []struct {
		name            string
		sets            []string
		wantSecretRules bool
		wantWebhookRole bool
	}{
		{name: "With its own certificates the operator may write only its Secret and its webhook configuration.", wantSecretRules: true, wantWebhookRole: true},
		{name: "With cert-manager the operator gets no Secret or webhook configuration rule.", sets: []string{"webhook.certManager.enabled=true"}},
		{name: "Without the webhook the operator gets no Secret or webhook configuration rule.", sets: []string{"webhook.enabled=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := render(t, tt.sets...)
			role := into[rbacv1.Role](t, objs.find(t, "Role", "gh-gatehouse-operator"))
			if role.Namespace != "gatehouse-system" {
				t.Errorf("the operator Role is in %q, want the release namespace", role.Namespace)
			}
			var sawSecrets bool
			for _, r := range role.Rules {
				if slices.Contains(r.Resources, "leases") && slices.Contains(r.Verbs, "update") && !reflect.DeepEqual(r.ResourceNames, []string{"gatehouse-operator.auth.gatehouse.dev"}) {
					t.Errorf("lease update is not limited to the operator's Lease: %+v", r)
				}
				if !slices.Contains(r.Resources, "secrets") {
					continue
				}
				sawSecrets = true
				if slices.Contains(r.Verbs, "delete") || slices.Contains(r.Verbs, "*") {
					t.Errorf("the operator may delete Secrets through its Role: %+v", r)
				}
				if !reflect.DeepEqual(r.Verbs, []string{"create"}) && !reflect.DeepEqual(r.ResourceNames, []string{"gh-gatehouse-webhook-tls"}) {
					t.Errorf("a Secret rule beyond create is not limited to the webhook Secret: %+v", r)
				}
			}
			if sawSecrets != tt.wantSecretRules {
				t.Errorf("Secret rules present = %v, want %v", sawSecrets, tt.wantSecretRules)
			}
			if got := objs.has("ClusterRole", "gh-gatehouse-operator-webhook"); got != tt.wantWebhookRole {
				t.Fatalf("webhook ClusterRole present = %v, want %v", got, tt.wantWebhookRole)
			}
			if !tt.wantWebhookRole {
				return
			}
			cr := into[rbacv1.ClusterRole](t, objs.find(t, "ClusterRole", "gh-gatehouse-operator-webhook"))
			want := []rbacv1.PolicyRule{{
				APIGroups:     []string{"admissionregistration.k8s.io"},
				Resources:     []string{"mutatingwebhookconfigurations"},
				ResourceNames: []string{"gh-gatehouse-sidecar-injector"},
				Verbs:         []string{"get", "update", "patch"},
			}}
			if !reflect.DeepEqual(cr.Rules, want) {
				t.Fatalf("webhook rules = %+v, want %+v", cr.Rules, want)
			}
		})
	}
}

func TestSidecarRBACIsTheGeneratedReadOnlyRole(t *testing.T) {
	objs := render(t,
		"sidecar.namespaces[0].name=shop",
		"sidecar.namespaces[0].serviceAccounts={default,checkout}",
		"sidecar.namespaces[1].name=billing",
	)
	cr := into[rbacv1.ClusterRole](t, objs.find(t, "ClusterRole", "gh-gatehouse-sidecar"))
	generated, err := rbac.SidecarRole()
	if err != nil {
		t.Fatal(err)
	}
	if len(generated.Rules) == 0 {
		t.Fatal("config/rbac/sidecar/role.yaml grants nothing; the comparison would be empty")
	}
	if !reflect.DeepEqual(cr.Rules, generated.Rules) {
		t.Fatalf("the chart's sidecar rules differ from config/rbac/sidecar/role.yaml (run `make manifests`):\nchart: %+v\ngenerated: %+v", cr.Rules, generated.Rules)
	}
	for _, r := range cr.Rules {
		for _, v := range r.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Errorf("the sidecar may %s %v; it only reads", v, r.Resources)
			}
		}
		if slices.Contains(r.Resources, "secrets") || slices.Contains(r.Resources, "*") {
			t.Errorf("the sidecar may read %v; Secrets hold private signing keys and delivered API keys", r.Resources)
		}
	}

	tests := []struct {
		name      string
		namespace string
		want      []rbacv1.Subject
	}{
		{name: "The listed ServiceAccounts of shop are bound in shop.", namespace: "shop", want: []rbacv1.Subject{
			{Kind: "ServiceAccount", Name: "default", Namespace: "shop"},
			{Kind: "ServiceAccount", Name: "checkout", Namespace: "shop"},
		}},
		{name: "A namespace without ServiceAccounts binds its default ServiceAccount.", namespace: "billing", want: []rbacv1.Subject{
			{Kind: "ServiceAccount", Name: "default", Namespace: "billing"},
		}},
	}
	var bindings int
	for _, o := range objs {
		if o.GetKind() == "RoleBinding" && o.GetName() == "gh-gatehouse-sidecar" {
			bindings++
		}
		if o.GetKind() == "ClusterRoleBinding" && strings.Contains(o.GetName(), "sidecar") {
			t.Errorf("the sidecar role is bound cluster-wide by %s", o.GetName())
		}
	}
	if bindings != len(tests) {
		t.Errorf("got %d sidecar RoleBindings, want one per namespace (%d)", bindings, len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rb *rbacv1.RoleBinding
			for _, o := range objs {
				if o.GetKind() == "RoleBinding" && o.GetName() == "gh-gatehouse-sidecar" && o.GetNamespace() == tt.namespace {
					rb = into[rbacv1.RoleBinding](t, o)
				}
			}
			if rb == nil {
				t.Fatalf("no sidecar RoleBinding in %s", tt.namespace)
			}
			if rb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "gh-gatehouse-sidecar"}) {
				t.Errorf("roleRef = %+v", rb.RoleRef)
			}
			if !reflect.DeepEqual(rb.Subjects, tt.want) {
				t.Errorf("subjects = %+v, want %+v", rb.Subjects, tt.want)
			}
		})
	}
}

func TestWebhookConfiguration(t *testing.T) {
	tests := []struct {
		name              string
		sets              []string
		wantFailurePolicy string
		wantCertManager   bool
	}{
		{name: "By default opted-in pods fail closed and the operator manages the certificate.", wantFailurePolicy: "Fail"},
		{name: "failurePolicy Ignore is passed through.", sets: []string{"webhook.failurePolicy=Ignore"}, wantFailurePolicy: "Ignore"},
		{name: "With cert-manager a Certificate is mounted and its CA injected.", sets: []string{"webhook.certManager.enabled=true"}, wantFailurePolicy: "Fail", wantCertManager: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := render(t, tt.sets...)
			mwc := objs.find(t, "MutatingWebhookConfiguration", "gh-gatehouse-sidecar-injector")
			hooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
			if len(hooks) != 1 {
				t.Fatalf("want one webhook, got %d", len(hooks))
			}
			h := hooks[0].(map[string]any)
			if h["failurePolicy"] != tt.wantFailurePolicy {
				t.Errorf("failurePolicy = %v, want %s", h["failurePolicy"], tt.wantFailurePolicy)
			}
			sel, _, _ := unstructured.NestedStringMap(h, "objectSelector", "matchLabels")
			if !reflect.DeepEqual(sel, map[string]string{"auth.gatehouse.dev/inject": "true"}) {
				t.Errorf("objectSelector = %v, want only the opt-in label", sel)
			}
			if _, found, _ := unstructured.NestedFieldNoCopy(h, "clientConfig", "caBundle"); found {
				t.Error("the chart sets caBundle: an upgrade would erase the operator's")
			}
			if h["sideEffects"] != "None" {
				t.Errorf("sideEffects = %v", h["sideEffects"])
			}
			svc, _, _ := unstructured.NestedString(h, "clientConfig", "service", "name")
			if !objs.has("Service", svc) {
				t.Errorf("the webhook points at Service %q, which the chart does not create", svc)
			}
			d := into[appsv1.Deployment](t, objs.find(t, "Deployment", "gh-gatehouse"))
			args := d.Spec.Template.Spec.Containers[0].Args
			inject := mwc.GetAnnotations()["cert-manager.io/inject-ca-from"]
			if tt.wantCertManager {
				if inject != "gatehouse-system/gh-gatehouse-webhook-tls" {
					t.Errorf("inject-ca-from = %q", inject)
				}
				objs.find(t, "Certificate", "gh-gatehouse-webhook-tls")
				objs.find(t, "Issuer", "gh-gatehouse-selfsigned")
				if !slices.Contains(args, "--webhook-cert-dir=/etc/gatehouse/webhook-tls") || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--webhook-cert-secret") }) {
					t.Errorf("args %q: want certificates from the mounted directory only", args)
				}
			} else {
				if inject != "" {
					t.Errorf("inject-ca-from = %q without cert-manager", inject)
				}
				if objs.has("Certificate", "gh-gatehouse-webhook-tls") {
					t.Error("a Certificate is rendered without cert-manager")
				}
			}
		})
	}
}

func TestOptionalObjects(t *testing.T) {
	tests := []struct {
		name string
		sets []string
		kind string
		want bool
	}{
		{name: "No ServiceMonitor by default.", kind: "ServiceMonitor"},
		{name: "A ServiceMonitor when enabled.", sets: []string{"metrics.serviceMonitor.enabled=true"}, kind: "ServiceMonitor", want: true},
		{name: "No PodDisruptionBudget by default.", kind: "PodDisruptionBudget"},
		{name: "A PodDisruptionBudget when enabled.", sets: []string{"podDisruptionBudget.enabled=true"}, kind: "PodDisruptionBudget", want: true},
		{name: "No webhook configuration when the webhook is disabled.", sets: []string{"webhook.enabled=false"}, kind: "MutatingWebhookConfiguration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := render(t, tt.sets...)
			var got bool
			for _, o := range objs {
				got = got || o.GetKind() == tt.kind
			}
			if got != tt.want {
				t.Fatalf("%s present = %v, want %v", tt.kind, got, tt.want)
			}
		})
	}
}

func TestPodDisruptionBudgetMaxUnavailableWinsOverMinAvailable(t *testing.T) {
	objs := render(t, "podDisruptionBudget.enabled=true", "podDisruptionBudget.maxUnavailable=1")
	pdb := objs.find(t, "PodDisruptionBudget", "gh-gatehouse")
	spec, _, _ := unstructured.NestedMap(pdb.Object, "spec")
	if _, ok := spec["minAvailable"]; ok {
		t.Errorf("both minAvailable and maxUnavailable are set: %v", spec)
	}
	if fmt.Sprint(spec["maxUnavailable"]) != "1" {
		t.Errorf("maxUnavailable = %v", spec["maxUnavailable"])
	}
}

func TestEveryServiceSelectsTheOperatorPods(t *testing.T) {
	objs := render(t)
	d := into[appsv1.Deployment](t, objs.find(t, "Deployment", "gh-gatehouse"))
	ports := map[string]bool{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = true
	}
	for _, name := range []string{"gh-gatehouse", "gh-gatehouse-webhook", "gh-gatehouse-metrics"} {
		svc := into[corev1.Service](t, objs.find(t, "Service", name))
		if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) {
			t.Errorf("Service %s selects %v, the Deployment's pods are %v", name, svc.Spec.Selector, d.Spec.Selector.MatchLabels)
		}
		for _, p := range svc.Spec.Ports {
			if !ports[p.TargetPort.StrVal] {
				t.Errorf("Service %s targets port %q, which the container does not name", name, p.TargetPort.StrVal)
			}
		}
	}
}

// TestOperatorAndSidecarAcceptTheChartsFlags builds both binaries and
// checks that every flag the chart passes to the operator, and every flag
// the webhook passes to an injected sidecar, is one the binary defines: a
// misspelt flag would crash the pod at start, which no render shows.
func TestInjectedSidecarListensOnlyWhereItMust(t *testing.T) {
	cases := []struct {
		name        string
		sets        []string
		wantMetrics string
	}{
		{"By default metrics stay on loopback and probes on the pod IP.", nil, "--metrics-bind-address=127.0.0.1:9003"},
		{"Metrics are on the pod IP only when the chart asks for it.", []string{"sidecar.metricsBindAddress=:9003"}, "--metrics-bind-address=:9003"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cm := into[corev1.ConfigMap](t, render(t, tc.sets...).find(t, "ConfigMap", "gh-gatehouse-sidecar-injection"))
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := webhook.LoadInjectionConfig(p)
			if err != nil {
				t.Fatalf("the operator cannot load the chart's injection config: %v", err)
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{webhook.LabelInject: "true"}}}
			if out, err := cfg.Mutate(pod, nil); out != webhook.Injected || err != nil {
				t.Fatalf("injection: %v %v", out, err)
			}
			args := pod.Spec.InitContainers[0].Args
			if !slices.Contains(args, tc.wantMetrics) {
				t.Errorf("args %q lack %s", args, tc.wantMetrics)
			}
			if !slices.Contains(args, "--health-probe-bind-address=:9004") {
				t.Errorf("args %q do not put the probes on the pod IP, where the kubelet probes", args)
			}
			for _, a := range args {
				if strings.HasPrefix(a, "--grpc-bind-address") || strings.HasPrefix(a, "--http-bind-address") {
					t.Errorf("the injected sidecar moves an ext_authz listener off its loopback default: %s", a)
				}
			}
		})
	}
}

func TestOperatorAndSidecarAcceptTheChartsFlags(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/gatehouse", "./cmd/gatehouse-sidecar")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	flagsOf := func(cmdline ...string) map[string]bool {
		out, err := exec.CommandContext(ctx, filepath.Join(dir, cmdline[0]), append(cmdline[1:], "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v --help: %v\n%s", cmdline, err, out)
		}
		known := map[string]bool{}
		for _, m := range regexp.MustCompile(`--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
			known[m[1]] = true
		}
		return known
	}
	check := func(t *testing.T, known map[string]bool, args []string) {
		for _, a := range args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.HasPrefix(a, "--") || !known[name] {
				t.Errorf("no flag %q", a)
			}
		}
	}

	for _, sets := range [][]string{nil, {"webhook.certManager.enabled=true"}, {"webhook.enabled=false", "operator.leaderElection=false", "operator.replicas=1"}, {"tokenEndpoint.trustedProxies={10.0.0.0/8,192.0.2.1}"}, {"xds.enabled=true"}, {"xds.enabled=true", "webhook.certManager.enabled=true"}} {
		t.Run(fmt.Sprintf("The operator accepts the chart's arguments with %v.", sets), func(t *testing.T) {
			d := into[appsv1.Deployment](t, render(t, sets...).find(t, "Deployment", "gh-gatehouse"))
			args := d.Spec.Template.Spec.Containers[0].Args
			if len(args) == 0 || args[0] != "operator" {
				t.Fatalf("args %q do not start with the operator subcommand", args)
			}
			check(t, flagsOf("gatehouse", "operator"), args[1:])
		})
	}
	for _, sets := range [][]string{{"sidecar.logLevel=debug"}, {"sidecar.logLevel=debug", "xds.enabled=true"}} {
		t.Run(fmt.Sprintf("The sidecar accepts the arguments the webhook injects from the chart's configuration with %v.", sets), func(t *testing.T) {
			c := injectedSidecar(t, render(t, sets...))
			if !slices.Equal(c.Command, []string{"/gatehouse-sidecar"}) {
				t.Fatalf("the injected sidecar runs %q, not the sidecar binary", c.Command)
			}
			if !slices.Contains(c.Args, "--zap-log-level=debug") {
				t.Errorf("sidecar.logLevel did not reach the sidecar: %q", c.Args)
			}
			check(t, flagsOf("gatehouse-sidecar"), c.Args)
		})
	}
}

func TestIssuerPrefixReachesTheOperatorAndEditorsCannotWriteSigningKeyStatus(t *testing.T) {
	objs := render(t, "tokenEndpoint.issuerPrefix=https://auth.example.com/{namespace}/")
	d := into[appsv1.Deployment](t, objs.find(t, "Deployment", "gh-gatehouse"))
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--issuer-prefix=https://auth.example.com/{namespace}/") {
		t.Fatalf("operator args %v lack the issuer prefix", d.Spec.Template.Spec.Containers[0].Args)
	}
	d = into[appsv1.Deployment](t, render(t).find(t, "Deployment", "gh-gatehouse"))
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--issuer-prefix") {
			t.Fatalf("an empty issuerPrefix still sets %s", a)
		}
	}
	// The status holds what validators trust: the roles aggregated to
	// view, edit and admin must not reach it.
	for _, name := range []string{"gh-gatehouse-view", "gh-gatehouse-edit"} {
		cr := into[rbacv1.ClusterRole](t, objs.find(t, "ClusterRole", name))
		for _, r := range cr.Rules {
			for _, res := range r.Resources {
				if strings.Contains(res, "/status") || res == "*" {
					t.Fatalf("%s grants %s", name, res)
				}
			}
		}
	}
}
