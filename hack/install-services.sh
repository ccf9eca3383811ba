#!/usr/bin/env bash
# Installs RabbitMQ, PostgreSQL and Redis from Debian's packages when missing, for the integration tests and the
# benchmarks. They start their own instances on free loopback ports (portico.testing.services); the
# system-wide services the packages start are stopped again and never used.
set -euo pipefail

have_rabbitmq() { [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || command -v rabbitmq-server >/dev/null 2>&1; }
have_postgres() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1; }
have_redis() { command -v redis-server >/dev/null 2>&1; }

need=()
have_rabbitmq || need+=(rabbitmq-server)
have_postgres || need+=(postgresql)
have_redis || need+=(redis-server)

if ((${#need[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-services: please install ${need[*]} with your package manager (no apt-get here)" >&2
    exit 1
  fi
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  echo "install-services: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The packages start system-wide services (and RabbitMQ an epmd daemon on the default port); the tests
  # run their own instances, so these are stopped again.
  $SUDO service rabbitmq-server stop >/dev/null 2>&1 || true
  $SUDO service postgresql stop >/dev/null 2>&1 || true
  $SUDO service redis-server stop >/dev/null 2>&1 || true
  if command -v epmd >/dev/null 2>&1; then epmd -kill >/dev/null 2>&1 || true; fi
fi

have_rabbitmq || { echo "install-services: rabbitmq-server is still missing" >&2; exit 1; }
have_postgres || { echo "install-services: postgresql is still missing" >&2; exit 1; }
have_redis || { echo "install-services: redis-server is still missing" >&2; exit 1; }
# PostgreSQL refuses to run as root: as root, the tests run it as the package's `postgres` user.
if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
  echo "install-services: running as root needs the 'postgres' user (created by the postgresql package)" >&2
  exit 1
fi
