package apikeys

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/test/framework"
	"gatehouse.dev/gatehouse/test/testenv"
)

// TestIntegrationTheGeneratedRoleIsEnoughToRunTheController runs the
// controller as a user holding only config/rbac/role.yaml (generated from
// the +kubebuilder:rbac markers), through issuance, a rotation and a rename
// that deletes the old delivery Secret: a missing verb fails it.
func TestIntegrationTheGeneratedRoleIsEnoughToRunTheController(t *testing.T) {
	f := newFixture(t)
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		t.Fatal(err)
	}
	role.Name = "gatehouse-operator-" + f.ns
	user := "gatehouse-operator-" + f.ns
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := f.env.Client.Create(f.ctx, obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.env.Client.Delete(f.ctx, obj) })
	}

	restricted := *f.env
	cfg := *f.env.Config
	cfg.Impersonate.UserName = user
	restricted.Config = &cfg
	startManager(t, &restricted, f.ns, &Reconciler{Clock: f.clk}, f.log.logger(), 1)

	f.create(t, "least")
	waitReady := func(keyNot string) string {
		t.Helper()
		var id string
		framework.Eventually(t, "a new key, Ready", 30*time.Second, func() (bool, string) {
			ak := f.apiKey(t, "least")
			s, r := condStatus(ak, gatehousev1.ConditionReady)
			id = ak.Status.KeyID
			return s == metav1.ConditionTrue && id != "" && id != keyNot, fmt.Sprintf("Ready=%s/%s key %q; operator log:\n%s", s, r, id, f.log.String())
		})
		return id
	}
	first := waitReady("")
	f.clk.Step(time.Minute)
	f.update(t, "least", func(ak *gatehousev1.APIKey) {
		ak.Annotations = map[string]string{gatehousev1.AnnotationRotateRequestedAt: f.clk.Now().Format(time.RFC3339)}
	})
	waitReady(first)
	f.update(t, "least", func(ak *gatehousev1.APIKey) { ak.Spec.SecretName = "least-key-2" })
	framework.Eventually(t, "the old delivery Secret to go", 30*time.Second, func() (bool, string) {
		err := f.env.Client.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "least-key"}, &corev1.Secret{})
		return err != nil, fmt.Sprintf("old delivery secret still there (%v); operator log:\n%s", err, f.log.String())
	})
	f.delivered(t, "least-key-2")
	f.waitForEvent(t, gatehousev1.ReasonRotated)
}
