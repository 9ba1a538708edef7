#!/usr/bin/env bash
# Fails when generated code, CRDs, RBAC, the chart's CRDs, RBAC copy and
# values table, or go.mod/go.sum are out of date. It regenerates everything
# in a temporary copy of the tree and compares, so it never changes the
# working tree.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT

cd "${root}"
# Tracked files plus new files not ignored by git, as they are in the tree.
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [[ -e "$f" ]] && cp --parents -P "$f" "${tmp}/"
done

(
  cd "${tmp}"
  make -s generate manifests chart-docs LOCALBIN="${root}/bin" >/dev/null
  go mod tidy
)

status=0
for p in api config charts/gatehouse/crds charts/gatehouse/files charts/gatehouse/README.md go.mod go.sum; do
  [[ -e "${root}/${p}" || -e "${tmp}/${p}" ]] || continue
  if ! diff -ruN "${root}/${p}" "${tmp}/${p}"; then
    status=1
  fi
done
if [[ ${status} -ne 0 ]]; then
  echo >&2 "Project is out of date. Please run 'make generate manifests chart-docs' and 'go mod tidy'."
  exit 1
fi
echo "verify: generated files, CRDs and go.mod are up to date"
