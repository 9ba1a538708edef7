package testenv

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gatehouse.dev/gatehouse/test/kubeidentity"
	"gatehouse.dev/gatehouse/test/sidecarrbac"
)

// SidecarRules are the rules of the sidecar Role the chart installs in
// each namespace: read APIKeys, SigningKeys, ConfigMaps (JWKS) and
// AuthPolicies, and nothing else; no Secrets.
var SidecarRules = sidecarrbac.Rules()

// ServiceAccountConfig binds a Role with rules to the ServiceAccount
// ns/name and returns a client configuration that acts as it (through
// impersonation by the test's admin identity).
func (e *Env) ServiceAccountConfig(t testing.TB, ns, name string, rules []rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := e.Client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s/%s: %v", o, ns, name, err)
		}
	}
	return sidecarrbac.Impersonating(e.Config, ns, name)
}

// ServiceAccountToken creates the ServiceAccount ns/name if it does not
// exist and returns an hour-long token of it for audiences (the API
// server's own when none), bound to no object: what TokenRequest (kubectl
// create token) gives without a boundObjectRef. The xDS server refuses
// such a token; sidecars hold PodToken's.
func (e *Env) ServiceAccountToken(t testing.TB, ns, name string, audiences ...string) string {
	t.Helper()
	e.ensureServiceAccount(t, ns, name)
	return e.requestToken(t, ns, name, nil, audiences)
}

// Pod creates a Pod object ns/name running as ServiceAccount sa (created
// if it does not exist). Nothing runs it: envtest has no kubelet; it is
// what a token can be bound to.
func (e *Env) Pod(t testing.TB, ns, name, sa string) *corev1.Pod {
	t.Helper()
	e.ensureServiceAccount(t, ns, sa)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pod := kubeidentity.NewPod(ns, name, sa)
	if err := e.Client.Create(ctx, pod); err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// PodToken returns an hour-long token of pod's ServiceAccount for
// audiences, bound to pod, as the kubelet projects one into it. pod must
// exist on the API server (Pod, or a pod the test created).
func (e *Env) PodToken(t testing.TB, pod *corev1.Pod, audiences ...string) string {
	t.Helper()
	return e.requestToken(t, pod.Namespace, pod.Spec.ServiceAccountName, pod, audiences)
}

// SidecarToken creates a pod of ServiceAccount ns/sa (Pod, with a
// generated name) and returns a token bound to it for audiences: what the
// sidecar of a new pod holds.
func (e *Env) SidecarToken(t testing.TB, ns, sa string, audiences ...string) string {
	t.Helper()
	return e.PodToken(t, e.Pod(t, ns, "sidecar-"+rand.String(8), sa), audiences...)
}

func (e *Env) ensureServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := e.Client.Create(ctx, sa); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
}

func (e *Env) requestToken(t testing.TB, ns, name string, pod *corev1.Pod, audiences []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	token, err := kubeidentity.Token(ctx, cs, ns, name, pod, audiences...)
	if err != nil {
		t.Fatal(err)
	}
	return token
}
