#!/usr/bin/env bash
# Builds kube-apiserver and etcd from source through the Go module proxy and
# caches them outside the source tree. The second run is instant.
#
# Why: integration tests need a real API server, and setup-envtest downloads do
# not work on the machines this project is built on. The module in
# hack/apiserver pins k8s.io/kubernetes and maps every k8s.io staging module to
# the matching v0.X.Y release, which is what `go build` needs to compile
# kube-apiserver outside the kubernetes repository.
#
# Prints the directory holding the binaries (use it as KUBEBUILDER_ASSETS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod="${here}/apiserver"
k8s_version=$(awk '$1=="k8s.io/kubernetes"{print $2}' "${mod}/go.mod" | head -n1)
cache_root="${GATEHOUSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse}"
out="${cache_root}/k8s-${k8s_version}/bin"

if [[ -x "${out}/kube-apiserver" && -x "${out}/etcd" ]]; then
  echo "${out}"
  exit 0
fi

mkdir -p "${out}"
major=$(echo "${k8s_version#v}" | cut -d. -f1)
minor=$(echo "${k8s_version#v}" | cut -d. -f2)
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${k8s_version}"
  ldflags+=" -X ${pkg}.gitMajor=${major}"
  ldflags+=" -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean"
done

echo ">> building kube-apiserver ${k8s_version} and etcd from source (first time: about 5-10 minutes on 2 cores)" >&2
tmp=$(mktemp -d "${out}/.build.XXXXXX")
trap 'rm -rf "${tmp}"' EXIT
(
  cd "${mod}"
  CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${tmp}/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  CGO_ENABLED=0 go build -trimpath -o "${tmp}/etcd" go.etcd.io/etcd/server/v3
) >&2
# Move into place only once both built, so a half-finished build is never cached.
mv "${tmp}/kube-apiserver" "${tmp}/etcd" "${out}/"
echo ">> built ${out}" >&2
echo "${out}"
