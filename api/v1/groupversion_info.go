package v1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every Gatehouse resource.
	GroupVersion = schema.GroupVersion{Group: "auth.gatehouse.dev", Version: "v1"}

	// SchemeBuilder registers the Gatehouse types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the Gatehouse types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
