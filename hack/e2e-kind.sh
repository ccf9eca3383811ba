#!/usr/bin/env bash
# End to end on a real cluster: a kind cluster, the image (hack/build-image.sh) loaded into it, the chart
# installed with the bundled queue service, an example trigger applied, and checks that the operator pod
# is ready and the trigger reports Running.
#
# Needs kind and a kind node image it can get; the Docker daemon comes from hack/docker-daemon.sh. What
# is missing ends the run with a non-zero status and the reason (it never reports success without
# running). Environment: KIND_CLUSTER (default portico-e2e), KEEP_CLUSTER=1 keeps it afterwards.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cluster="${KIND_CLUSTER:-portico-e2e}"
release="portico"
release_ns="portico-system"
apps_ns="portico-e2e"

log() { echo "e2e-kind: $*" >&2; }
die() { echo "e2e-kind: $*" >&2; exit 1; }

command -v kind >/dev/null 2>&1 || die "kind is not installed (https://kind.sigs.k8s.io)"
DOCKER_HOST="$(bash "$root/hack/docker-daemon.sh")" || die "no Docker daemon (see the line above)"
export DOCKER_HOST

helm="$(bash "$root/hack/install-helm.sh")"
kubectl="$(command -v kubectl || echo "$root/.cache/bin/kubectl")"
[[ -x "$kubectl" ]] || { log "kubectl not found"; exit 1; }

created=0
cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    log "failed; operator logs:"
    "$kubectl" -n "$release_ns" logs deployment/portico-portico-triggers-operator --tail=200 2>/dev/null || true
    "$kubectl" -n "$apps_ns" describe jobtrigger 2>/dev/null || true
  fi
  if [[ $created -eq 1 && "${KEEP_CLUSTER:-0}" != 1 ]]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit $status
}
trap cleanup EXIT

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 120s
  created=1
fi
"$kubectl" config use-context "kind-$cluster" >/dev/null

image="$(bash "$root/hack/build-image.sh")" || die "the image build failed (see the line above)"
log "loading $image"
kind load docker-image "$image" --name "$cluster"

log "installing the chart"
"$helm" upgrade --install "$release" "$root/helm/portico-triggers" \
  --namespace "$release_ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
  --set queueService.enabled=true --set queueService.token.create=true \
  --set queueService.persistence.enabled=false \
  --wait --timeout 5m

"$kubectl" -n "$release_ns" rollout status deployment/portico-portico-triggers-operator --timeout=120s
"$kubectl" wait --for=condition=Established --timeout=60s crd/jobtriggers.triggers.portico.dev

log "applying examples/schedule-daily-report.yaml in $apps_ns"
"$kubectl" create namespace "$apps_ns" --dry-run=client -o yaml | "$kubectl" apply -f -
"$kubectl" -n "$apps_ns" apply -f "$root/examples/schedule-daily-report.yaml"

log "waiting for the trigger to run"
for _ in $(seq 1 60); do
  phase="$("$kubectl" -n "$apps_ns" get jt daily-report -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  [[ "$phase" == Running ]] && break
  sleep 2
done
[[ "$phase" == Running ]] || { log "trigger phase is '$phase', expected Running"; exit 1; }
"$kubectl" -n "$apps_ns" get jt

log "smoke test: the image's own commands"
"$kubectl" -n "$release_ns" run portico-validate --rm -i --restart=Never --image="$image" \
  --image-pull-policy=Never --command -- portico --version

log "deleting the trigger (the finalizer must be released)"
"$kubectl" -n "$apps_ns" delete jt daily-report --wait=true --timeout=60s
echo "e2e-kind: passed"
