// Package rbac embeds the RBAC that controller-gen writes from the
// +kubebuilder:rbac markers (`make manifests`), so that tests bind exactly
// the generated rules and compare the chart's with them.
package rbac

import (
	_ "embed"
	"fmt"
	"regexp"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// sidecarRole is sidecar/role.yaml: the sidecar's ClusterRole, from the
// markers in sidecar/source.
//
//go:embed sidecar/role.yaml
var sidecarRole []byte

// SidecarRole returns the generated ClusterRole of the sidecar.
func SidecarRole() (*rbacv1.ClusterRole, error) {
	return clusterRole(sidecarRole)
}

var documentSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// clusterRole returns the one ClusterRole of a multi-document YAML file.
func clusterRole(raw []byte) (*rbacv1.ClusterRole, error) {
	var found *rbacv1.ClusterRole
	for _, doc := range documentSeparator.Split(string(raw), -1) {
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &cr); err != nil {
			return nil, fmt.Errorf("parsing generated RBAC: %w", err)
		}
		if cr.Kind != "ClusterRole" {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("generated RBAC holds more than one ClusterRole (%s, %s)", found.Name, cr.Name)
		}
		found = &cr
	}
	if found == nil {
		return nil, fmt.Errorf("generated RBAC holds no ClusterRole (run `make manifests`)")
	}
	return found, nil
}
