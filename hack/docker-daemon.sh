#!/usr/bin/env bash
# Prints a DOCKER_HOST for a running Docker daemon, starting a private one when needed.
#
# PORTICO_DOCKER_HOST (or DOCKER_HOST) names a daemon to use as is. Otherwise a daemon of the project's
# own is used: Debian's docker.io (installed with apt-get when missing, which needs root), with its data
# root, socket and log under the user cache dir, no bridge and no iptables rules (containers and builds
# use the host network). Once started it keeps running for later runs; `hack/docker-daemon.sh stop`
# stops it. Any failure ends with one line on stderr saying why, and a non-zero exit status.
set -euo pipefail

state="${PORTICO_DOCKER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/docker}"
socket="$state/docker.sock"
pidfile="$state/dockerd.pid"
logfile="$state/dockerd.log"
host="unix://$socket"

log() { echo "docker-daemon: $*" >&2; }
die() { echo "docker-daemon: $*" >&2; exit 1; }

if [[ "${1:-}" == stop ]]; then
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped dockerd ($pid)"
  fi
  exit 0
fi

explicit="${PORTICO_DOCKER_HOST:-${DOCKER_HOST:-}}"
if [[ -n "$explicit" ]]; then
  command -v docker >/dev/null 2>&1 || die "no docker client on PATH"
  DOCKER_HOST="$explicit" docker version >/dev/null 2>&1 \
    || die "the Docker daemon at $explicit does not answer (docker version failed)"
  echo "$explicit"
  exit 0
fi

answers() { DOCKER_HOST="$host" docker version >/dev/null 2>&1; }

if [[ -S "$socket" ]] && command -v docker >/dev/null 2>&1 && answers; then
  echo "$host"
  exit 0
fi

mkdir -p "$state"
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  [[ $(id -u) -eq 0 ]] || die "dockerd is not installed and installing docker.io needs root"
  command -v apt-get >/dev/null 2>&1 || die "dockerd is not installed and there is no apt-get to install docker.io"
  log "installing docker.io (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends docker.io >"$state/apt.log" 2>&1; then
    apt-get update -q >>"$state/apt.log" 2>&1 || true
    apt-get install -y -q --no-install-recommends docker.io >>"$state/apt.log" 2>&1 \
      || die "apt-get install docker.io failed (log: $state/apt.log)"
  fi
fi
[[ $(id -u) -eq 0 ]] || die "no Docker daemon answers and starting one (dockerd) needs root"

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  log "dockerd ($(cat "$pidfile")) runs but does not answer yet; waiting"
else
  rm -f "$pidfile" "$socket"
  driver=()
  [[ -n "${PORTICO_DOCKER_STORAGE_DRIVER:-}" ]] && driver=(--storage-driver "$PORTICO_DOCKER_STORAGE_DRIVER")
  log "starting dockerd (data root $state/data, log $logfile)"
  # setsid: the daemon outlives this script and the test run that started it.
  setsid dockerd \
    --host "$host" \
    --data-root "$state/data" \
    --exec-root "$state/exec" \
    --pidfile "$pidfile" \
    --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
    "${driver[@]}" \
    >>"$logfile" 2>&1 </dev/null &
fi

for _ in $(seq 1 300); do
  if answers; then
    echo "$host"
    exit 0
  fi
  if ! { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; } && ! jobs -r | grep -q .; then
    break
  fi
  sleep 0.2
done
reason=$(grep -iE 'level=(fatal|error)|failed to start' "$logfile" 2>/dev/null | tail -n1 | sed -E 's/.*msg="([^"]*)".*/\1/')
die "dockerd did not start: ${reason:-no answer on $socket within 60 s} (log: $logfile)"
