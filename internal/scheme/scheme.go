// Package scheme builds the runtime.Scheme every Gatehouse component uses:
// the Kubernetes built-in types plus the auth.gatehouse.dev types.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// New returns a scheme with the built-in and Gatehouse types.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(gatehousev1.AddToScheme(s))
	return s
}
