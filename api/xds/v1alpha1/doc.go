// Package xdsv1alpha1 holds the Go types of the resources the operator
// serves to sidecars over delta xDS, generated from the .proto files beside
// them by `make generate` (buf and protoc-gen-go). The .proto files are the
// contract; edit them, never the .pb.go files.
package xdsv1alpha1
