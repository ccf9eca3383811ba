#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from their Go modules at pinned versions, once per machine.
# The binaries land in $PORTICO_CONTROL_PLANE_DIR (default: the user cache dir) under a folder named for
# the pinned versions, so changing a pin rebuilds and an unchanged pin is a no-op.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.4}"
cache_root="${PORTICO_CONTROL_PLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/control-plane}"
dest="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
bin="$dest/bin"

if [[ -x "$bin/kube-apiserver" && -x "$bin/etcd" && -x "$bin/kubectl" ]]; then
  echo "$bin"
  exit 0
fi

log() { echo "build-control-plane: $*" >&2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/k8s-build.sh
source "$root/hack/k8s-build.sh"

GO=$(go_bin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local

log "building kube-apiserver and kubectl $K8S_VERSION (first build takes several minutes)"
BUILD_PREFIX=()
build_k8s_commands "$GO" "$work/k8s" "$bin" kube-apiserver kubectl

log "building etcd $ETCD_VERSION"
mkdir -p "$work/etcd"
(
  cd "$work/etcd"
  "$GO" mod init portico.dev/control-plane/etcd >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  "$GO" mod tidy >&2
  "$GO" build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=portico" -o "$bin/etcd" .
)

echo "$bin"
