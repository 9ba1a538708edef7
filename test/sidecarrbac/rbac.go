// Package sidecarrbac holds what a sidecar may do on the API server: read
// the APIKeys (their status holds the key hashes), the ConfigMaps (JWKS)
// and AuthPolicies of its own namespace, and nothing else. The chart's sidecar ClusterRole
// (charts/gatehouse/templates/rbac-sidecar.yaml) grants exactly Rules; the
// demo and the tests bind them to run a sidecar with least privilege.
package sidecarrbac

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// Name is the Role and RoleBinding Bind creates.
const Name = "gatehouse-sidecar"

// Rules are the sidecar's permissions: no Secrets (private signing keys
// and delivered API keys live there), no writes.
func Rules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{gatehousev1.GroupVersion.Group}, Resources: []string{"apikeys", "authpolicies"}, Verbs: []string{"get", "list", "watch"}},
	}
}

// Bind creates a Role with Rules in ns and binds it to the ServiceAccount
// ns/serviceAccount (which need not exist: RBAC names subjects). Existing
// objects of that name are left as they are.
func Bind(ctx context.Context, c client.Client, ns, serviceAccount string) error {
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: ns}, Rules: Rules()}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: ns}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s/%s: %w", o, ns, Name, err)
		}
	}
	return nil
}

// Impersonating returns a copy of an administrator's cfg that acts as the
// ServiceAccount ns/name.
func Impersonating(cfg *rest.Config, ns, name string) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	return out
}
