#!/usr/bin/env bash
# Builds the node components (kubelet, kube-proxy, kube-controller-manager, kube-scheduler and CoreDNS)
# from their Go modules at pinned versions, once per machine, the way hack/build-control-plane.sh builds
# kube-apiserver: the same Kubernetes pin, the same wrapper module with the staging replaces, the same
# build flags (so the Go build cache of the API server build is reused). The binaries land in
# $PORTICO_CONTROL_PLANE_DIR (default: the user cache dir) under a folder named for the pinned versions;
# the folder's path is printed on stdout. Progress on stderr; a failure ends with a one-line reason.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.3}"
cache_root="${PORTICO_CONTROL_PLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/control-plane}"
dest="$cache_root/node-k8s-$K8S_VERSION-coredns-$COREDNS_VERSION"
bin="$dest/bin"
components=(kubelet kube-proxy kube-controller-manager kube-scheduler)

complete() {
  local c
  for c in "${components[@]}" coredns; do [[ -x "$bin/$c" ]] || return 1; done
}
if complete; then
  echo "$bin"
  exit 0
fi

log() { echo "build-node: $*" >&2; }
die() { echo "build-node: $*" >&2; exit 1; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/k8s-build.sh
source "$root/hack/k8s-build.sh"
GO=$(go_bin) || die "no Go toolchain"
[[ -x "$GO" ]] || die "no Go toolchain"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
# The machine is shared: the build yields to interactive work.
BUILD_PREFIX=(nice -n 10)

log "building ${components[*]} $K8S_VERSION (first build takes several minutes)"
build_k8s_commands "$GO" "$work/k8s" "$bin" "${components[@]}" \
  || die "building the Kubernetes node components failed (see above)"

log "building coredns $COREDNS_VERSION (the plugins a cluster's DNS needs)"
mkdir -p "$work/coredns"
(
  cd "$work/coredns"
  "$GO" mod init portico.dev/control-plane/coredns >/dev/null 2>&1
  cp "$root/hack/node/coredns-main.go" main.go
  "$GO" get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
  "$GO" mod tidy >&2
  "${BUILD_PREFIX[@]}" "$GO" build -trimpath -ldflags "-s -w" -o "$bin/coredns.tmp" .
  mv "$bin/coredns.tmp" "$bin/coredns"
) || die "building coredns failed (see above)"

echo "$bin"
