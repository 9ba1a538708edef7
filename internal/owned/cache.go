package owned

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// ManagedSelector selects the objects Gatehouse wrote: Labels puts
// LabelManagedBy on every one of them.
func ManagedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue})
}

// CacheOptions make a manager cache only the Secrets and ConfigMaps that
// Gatehouse wrote. Without the selector it would hold every Secret and
// ConfigMap of the cluster, and the operator's memory would grow with other
// people's data. Anything else (a user's JWKS ConfigMap named by an
// AuthPolicy, a Secret in the way of one the operator wants to create) is
// not in the cache: a cached Get says NotFound, so read it through the
// manager's API reader.
func CacheOptions() cache.Options {
	managed := ManagedSelector()
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:    {Label: managed},
		&corev1.ConfigMap{}: {Label: managed},
	}}
}
