package testenv

import (
	"context"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gatehouse.dev/gatehouse/test/sidecarrbac"
)

// SidecarRules are the rules of the sidecar Role the chart installs in
// each namespace: read APIKeys, ConfigMaps (JWKS) and AuthPolicies,
// and nothing else; no Secrets.
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
