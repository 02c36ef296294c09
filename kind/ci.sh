#!/usr/bin/env bash
# What a user's CI runs on a standard runner (Docker, kind, kubectl, helm and a Rust toolchain on PATH):
# a kind cluster, the operator and vFEP images built and loaded into it, the chart installed with them,
# a sample GroundSystem applied, and a wait until it is Ready, with the real images running.
#
#   kind/ci.sh           create (or reuse) the cluster, build and load the images, install, test
#   kind/ci.sh delete    delete the cluster
#
# Environment (defaults in brackets):
#   KIND_CLUSTER [vgs]  KIND_NODE_IMAGE [kind's default]  NAMESPACE [vgs-system]
#   VGS_IMAGE_TAG [ci-<commit>]  SAMPLE [examples/groundsystem-minimal.yaml]  TIMEOUT [300s]
#   DIAGNOSTICS [target/kind-diagnostics]: where cluster state and logs are written when a step fails
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CLUSTER="${KIND_CLUSTER:-vgs}"
NAMESPACE="${NAMESPACE:-vgs-system}"
RELEASE=vgs-operator
SAMPLE="${SAMPLE:-examples/groundsystem-minimal.yaml}"
TIMEOUT="${TIMEOUT:-300s}"
DIAGNOSTICS="${DIAGNOSTICS:-$ROOT/target/kind-diagnostics}"
WORK="$ROOT/target/kind"
export VGS_IMAGE_TAG="${VGS_IMAGE_TAG:-ci-$(git rev-parse --short=12 HEAD 2>/dev/null || echo local)}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is not on PATH (see .github/workflows/kind.yaml for a setup)"
  done
}

case "${1:-}" in
  delete) need kind; kind delete cluster --name "$CLUSTER"; exit 0 ;;
  "") ;;
  *) die "usage: $0 [delete]" ;;
esac
need kind kubectl helm cargo
[[ "$(helm version --template '{{.Version}}')" == v[34].* ]] || die "helm v3 or v4 is needed"
[[ -f "$SAMPLE" ]] || die "no such GroundSystem manifest: $SAMPLE"

mkdir -p "$WORK"
export KUBECONFIG="$WORK/kubeconfig"

# On failure: what a user needs to see in the CI log and artifacts.
diagnostics() {
  local rc=$?
  ((rc)) || return 0
  log "failed (exit $rc); cluster state and logs in $DIAGNOSTICS"
  mkdir -p "$DIAGNOSTICS"
  kubectl get groundsystems,deployments,pods,services,persistentvolumeclaims,configmaps,events -A -o wide \
    >"$DIAGNOSTICS/objects.txt" 2>&1 || true
  kubectl get groundsystems -A -o yaml >"$DIAGNOSTICS/groundsystems.yaml" 2>&1 || true
  kubectl describe pods -A >"$DIAGNOSTICS/pods.txt" 2>&1 || true
  kubectl logs -n "$NAMESPACE" -l app.kubernetes.io/instance="$RELEASE" --all-containers --prefix --tail=-1 \
    >"$DIAGNOSTICS/operator.log" 2>&1 || true
  kind export logs "$DIAGNOSTICS/kind" --name "$CLUSTER" >/dev/null 2>&1 || true
  tail -n 50 "$DIAGNOSTICS/operator.log" >&2 || true
  exit "$rc"
}
trap diagnostics EXIT

# --- cluster -------------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config kind/cluster.yaml ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} \
    --wait 180s
fi
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

# --- images: built by hack/image.sh (docker when it answers, else buildah), loaded from archives --------
for image in operator vfep; do
  hack/image.sh save "$image" "$WORK/$image.tar"
  kind load image-archive "$WORK/$image.tar" --name "$CLUSTER"
done
operator_ref="$(hack/image.sh ref operator)"
vfep_ref="$(hack/image.sh ref vfep)"

# --- the chart -----------------------------------------------------------------------------------------
# pullPolicy Never: the operator must come from the loaded archive, never from a registry.
log "installing the chart (operator $operator_ref, vFEP $vfep_ref)"
helm upgrade --install "$RELEASE" charts/vgs-operator --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${operator_ref%:*}" --set image.tag="${operator_ref##*:}" --set image.pullPolicy=Never \
  --set vfepImage.repository="${vfep_ref%:*}" --set vfepImage.tag="${vfep_ref##*:}" \
  --set-string 'logLevel=info\,vgs_operator=debug' \
  --wait --timeout "$TIMEOUT"
kubectl wait --for=condition=Established crd/groundsystems.vgs.io --timeout=60s
kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE" --timeout="$TIMEOUT"

# The operator serves its metrics through its Service (read through the API server's service proxy).
metrics="$(kubectl get --raw "/api/v1/namespaces/$NAMESPACE/services/http:$RELEASE-metrics:http/proxy/metrics")"
grep -q '^# TYPE vgs_operator_' <<<"$metrics" || die "no vgs_operator_ metrics on the metrics Service"

# --- a sample GroundSystem ------------------------------------------------------------------------------
name="$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$SAMPLE")"
sample_ns="$(kubectl create --dry-run=client -o jsonpath='{.metadata.namespace}' -f "$SAMPLE")"
sample_ns="${sample_ns:-default}"
log "applying $SAMPLE ($sample_ns/$name) and waiting until it is Ready"
kubectl apply --server-side --field-manager vgs-ci -f "$SAMPLE" -n "$sample_ns"
kubectl wait -n "$sample_ns" --for=condition=Ready "groundsystem/$name" --timeout="$TIMEOUT"
# Ready means the real vFEP, ground and simulator pods run the loaded image.
kubectl get -n "$sample_ns" groundsystem "$name"
kubectl get -n "$sample_ns" deployments,pods,services,persistentvolumeclaims -l "vgs.io/groundsystem=$name" -o wide
log "GroundSystem $sample_ns/$name is Ready on kind cluster $CLUSTER"
