package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every Gatehouse resource.
	GroupVersion = schema.GroupVersion{Group: "auth.gatehouse.dev", Version: "v1"}

	// SchemeBuilder registers the Gatehouse types with a runtime.Scheme.
	// It depends on apimachinery only, so that the API package stays cheap
	// to import.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the Gatehouse types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&APIKey{}, &APIKeyList{},
		&SigningKey{}, &SigningKeyList{},
		&AuthPolicy{}, &AuthPolicyList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
