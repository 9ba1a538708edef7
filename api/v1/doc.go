// Package v1 contains the Gatehouse API: the APIKey, SigningKey and AuthPolicy
// custom resources of the auth.gatehouse.dev group, and the label, annotation
// and data-key names that form the contract between the operator, which writes
// key material, and the sidecar, which reads it.
//
// +kubebuilder:object:generate=true
// +groupName=auth.gatehouse.dev
package v1
