#!/usr/bin/env bash
# Builds the project image from the unchanged Dockerfile and prints its reference (one line on stdout).
#
#   IMAGE=$(bash hack/build-image.sh)            # e.g. portico/portico-triggers:local-3f2a9c01d4e5
#   DOCKER_HOST=$(bash hack/docker-daemon.sh) docker run --rm "$IMAGE" --version
#
# The Python base comes from a registry where one is reachable (PORTICO_PYTHON_IMAGE=python:3.11-slim…).
# Otherwise (the default) it is made here from Debian packages: mmdebstrap of the host's Debian suite with
# python3, venv, CA certificates and tzdata, imported with `docker import`. pip inside the build must reach
# the package index the host uses, so the host's pip settings (index URLs, trusted hosts, CA bundle), read
# from `pip config` and PIP_* variables at run time, are written into that base as /etc/pip.conf.
#
# Both images are cached like the control-plane binaries: the base is tagged by the suite, the package
# list and a hash of the host settings it holds; the project image by a hash of the Dockerfile,
# requirements.lock, pyproject.toml, README.md, .dockerignore, this script, the source tree and the base. An unchanged
# tree prints the cached reference at once (the base it was built on is in its `dev.portico.base` label).
# Progress goes to stderr; any failure ends with a one-line reason on stderr and a non-zero exit status.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repository="${PORTICO_IMAGE_REPOSITORY:-portico/portico-triggers}"
packages="python3,python3-venv,python-is-python3,ca-certificates,tzdata"

log() { echo "build-image: $*" >&2; }
die() { echo "build-image: $*" >&2; exit 1; }

DOCKER_HOST="$(bash "$root/hack/docker-daemon.sh")" || die "no Docker daemon (see the line above)"
export DOCKER_HOST
# The classic builder: BuildKit would fetch the `# syntax=` frontend image from a registry.
export DOCKER_BUILDKIT=0

exists() { docker image inspect "$1" >/dev/null 2>&1; }
sha() { sha256sum | cut -c1-12; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

host_pip_conf() {
  # The host's pip settings that decide where packages come from, as a pip.conf; the CA bundle is copied
  # next to it. Settings that only make sense on the host (find-links directories, caches) are left out.
  python3 - "$work" <<'PY'
import os, re, shutil, subprocess, sys
work = sys.argv[1]
keys = {"index-url", "extra-index-url", "trusted-host", "cert", "timeout", "default-timeout", "retries"}
found = {}
try:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
except OSError:
    out = ""
for line in out.splitlines():
    m = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line)
    if m and m.group(1) in keys:
        found.setdefault(m.group(1), m.group(2))
for key in keys:
    value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
    if value:
        found[key] = value
for key in ("index-url", "extra-index-url"):
    for url in found.get(key, "").split():
        if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
            sys.exit(
                f"build-image: the host's pip {key} carries credentials, which would be baked into the base "
                "(and so the image); use a URL without them, or set PORTICO_PYTHON_IMAGE"
            )
cert = found.pop("cert", None)
if cert and os.path.isfile(cert):
    shutil.copyfile(cert, os.path.join(work, "pip-ca.crt"))
    found["cert"] = "/etc/pip/ca.crt"
with open(os.path.join(work, "pip.conf"), "w") as f:
    f.write("[global]\n")
    for key in sorted(found):
        f.write(f"{key} = {found[key]}\n")
PY
}

host_apt_sources() {
  local f
  for f in ${PORTICO_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources /etc/apt/sources.list}; do
    if [[ -s "$f" ]] && grep -qE '^(deb |URIs:)' "$f"; then
      echo "$f"
      return
    fi
  done
  return 1
}

make_base() {
  local suite sources key ref
  suite="${PORTICO_BASE_SUITE:-$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")}"
  [[ -n "$suite" ]] || die "cannot tell the Debian suite of this host; set PORTICO_BASE_SUITE"
  sources=$(host_apt_sources) || die "no Debian apt sources found; set PORTICO_APT_SOURCES to a .sources or .list file"
  host_pip_conf || exit 1
  key=$({ echo "$suite $packages"; cat "$sources" "$work/pip.conf"; cat "$work/pip-ca.crt" 2>/dev/null || true; } | sha)
  ref="portico/python-base:$suite-$key"
  if exists "$ref"; then
    echo "$ref"
    return
  fi
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "mmdebstrap is not installed and installing it needs root"
    log "installing mmdebstrap (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends mmdebstrap >"$work/apt.log" 2>&1; then
      apt-get update -q >>"$work/apt.log" 2>&1 || true
      apt-get install -y -q --no-install-recommends mmdebstrap >>"$work/apt.log" 2>&1 \
        || die "apt-get install mmdebstrap failed: $(tail -n1 "$work/apt.log")"
    fi
  fi
  log "making the Python base $ref with mmdebstrap ($suite: $packages)"
  mkdir -p "$work/etc-pip"
  cp "$work/pip.conf" "$work/etc-pip/pip.conf"
  [[ -f "$work/pip-ca.crt" ]] && cp "$work/pip-ca.crt" "$work/etc-pip/ca.crt"
  if ! mmdebstrap --variant=minbase --include="$packages" --format=tar \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --customize-hook="mkdir -p \"\$1/etc/pip\" && cp $work/etc-pip/* \"\$1/etc/pip/\" && mv \"\$1/etc/pip/pip.conf\" \"\$1/etc/pip.conf\"" \
      "$suite" "$work/base.tar" "$sources" >"$work/mmdebstrap.log" 2>&1; then
    die "mmdebstrap failed: $(grep -E '^E:|error' "$work/mmdebstrap.log" | tail -n1)"
  fi
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$work/base.tar" "$ref" >/dev/null \
    || die "docker import of the base failed"
  rm -f "$work/base.tar"
  echo "$ref"
}

if [[ -n "${PORTICO_PYTHON_IMAGE:-}" ]]; then
  base="$PORTICO_PYTHON_IMAGE"
  exists "$base" || docker pull -q "$base" >/dev/null || die "cannot pull $base"
else
  base=$(make_base)
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

cd "$root"
tree_hash=$(
  {
    echo "$base_id"
    for f in Dockerfile .dockerignore requirements.lock pyproject.toml README.md hack/build-image.sh; do
      echo "== $f"; cat "$f"
    done
    find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha
)
image="$repository:local-$tree_hash"
if exists "$image"; then
  echo "$image"
  exit 0
fi

log "building $image from the Dockerfile on $base"
proxies=()
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [[ -n "${!var:-}" ]] && proxies+=(--build-arg "$var")
done
if ! docker build --network host --build-arg PYTHON_IMAGE="$base" "${proxies[@]}" \
    --label "dev.portico.base=$base" -t "$image" . >"$work/build.log" 2>&1; then
  tail -n 30 "$work/build.log" >&2
  die "docker build failed: $(grep -vE '^\s*$' "$work/build.log" | tail -n1)"
fi
echo "$image"
