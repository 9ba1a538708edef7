//go:build tools

// Package apiserver pins the commands that hack/build-apiserver.sh builds.
package apiserver

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
