#!/usr/bin/env bash
# Installs promtool (Prometheus' rule checker and unit tester) and the prometheus binary into .cache/bin/
# of the repository, for the chart's alert and dashboard tests and hack/plot-dashboard.py. Both come from
# Debian's `prometheus` package, unpacked rather than installed, so no system service is set up or
# started. Idempotent. Prints the promtool path.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.cache/bin"

log() { echo "install-promtool: $*" >&2; }

if [[ -x "$bin/promtool" && -x "$bin/prometheus" ]] && "$bin/promtool" --version >/dev/null 2>&1; then
  echo "$bin/promtool"
  exit 0
fi
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  mkdir -p "$bin"
  ln -sf "$(command -v promtool)" "$bin/promtool"
  ln -sf "$(command -v prometheus)" "$bin/prometheus"
  echo "$bin/promtool"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "please install promtool (Prometheus' package) with your package manager: no apt-get here"
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  log "refreshing the package lists"
  $SUDO apt-get update -qq
  (cd "$work" && apt-get download prometheus >/dev/null)
fi
deb="$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n1)"
[[ -n "$deb" ]] || { log "apt-get download prometheus fetched nothing"; exit 1; }
dpkg-deb -x "$deb" "$work/root"
mkdir -p "$bin"
install -m 0755 "$work/root/usr/bin/promtool" "$bin/promtool"
install -m 0755 "$work/root/usr/bin/prometheus" "$bin/prometheus"
log "installed $("$bin/promtool" --version 2>&1 | head -n1)"
echo "$bin/promtool"
