#!/usr/bin/env bash
# The main job: a local control plane, the CRD, the operator and a sample GroundSystem, waiting until it is
# Ready. The operator then keeps running in the foreground until Ctrl-C.
#   hack/run.sh [groundsystem.yaml]     (default: examples/groundsystem-full.yaml)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/lib.sh"

SAMPLE="${1:-$ROOT/examples/groundsystem-full.yaml}"
[[ -f "$SAMPLE" ]] || die "no such GroundSystem manifest: $SAMPLE"
OPERATOR_PID_FILE="$VGS_STATE/run/operator.pid"
OPERATOR_HTTP="${OPERATOR_HTTP:-127.0.0.1:18080}"

"$HERE/cluster.sh" up
eval "$("$HERE/cluster.sh" env)"

log "building the operator"
(cd "$ROOT" && cargo build -p vgs-operator)

log "installing the CRD"
kubectl apply --server-side --field-manager vgs-install -f "$ROOT/crds/groundsystem.yaml"
kubectl wait --for=condition=Established crd/groundsystems.vgs.io --timeout=60s

# One operator at a time: a previous run's operator, if still alive, is stopped first.
if [[ -f "$OPERATOR_PID_FILE" ]] && kill -0 "$(cat "$OPERATOR_PID_FILE")" 2>/dev/null; then
  log "stopping the operator of a previous run"
  kill "$(cat "$OPERATOR_PID_FILE")" || true
  sleep 1
fi
log "starting the operator (metrics and health on http://$OPERATOR_HTTP)"
"$ROOT/target/debug/vgs-operator" run --http-addr "$OPERATOR_HTTP" &
operator=$!
echo "$operator" >"$OPERATOR_PID_FILE"
trap 'kill -TERM $operator 2>/dev/null; wait $operator 2>/dev/null; rm -f "$OPERATOR_PID_FILE"' EXIT

# Fail here, not after a wait for Ready, when the operator cannot start (e.g. its port is taken).
deadline=$((SECONDS + 60))
until curl -fsS "http://$OPERATOR_HTTP/readyz" >/dev/null 2>&1; do
  kill -0 "$operator" 2>/dev/null || die "the operator exited; see its log above"
  ((SECONDS < deadline)) || die "the operator did not become ready on http://$OPERATOR_HTTP/readyz"
  sleep 0.5
done

log "applying $SAMPLE"
kubectl apply --server-side --field-manager vgs-user -f "$SAMPLE"
name="$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$SAMPLE")"
namespace="$(kubectl create --dry-run=client -o jsonpath='{.metadata.namespace}' -f "$SAMPLE")"
namespace="${namespace:-default}"
# Ready for the applied generation; a spec the operator refuses (Degraded) ends the wait with its reason.
deadline=$((SECONDS + 180))
while :; do
  generation="$(kubectl get -n "$namespace" groundsystem "$name" -o jsonpath='{.metadata.generation}')"
  conditions="$(kubectl get -n "$namespace" groundsystem "$name" -o jsonpath='{range .status.conditions[*]}{.type}={.status}|{.observedGeneration}|{.message}{"\n"}{end}')"
  if grep -q "^Ready=True|$generation|" <<<"$conditions"; then break; fi
  if degraded="$(grep "^Degraded=True|$generation|" <<<"$conditions")"; then
    die "GroundSystem $namespace/$name is Degraded: ${degraded#*|*|}"
  fi
  kill -0 "$operator" 2>/dev/null || die "the operator exited; see its log above"
  ((SECONDS < deadline)) || die "GroundSystem $namespace/$name is not Ready after 180s: $conditions"
  sleep 1
done
kubectl wait -n "$namespace" --for=condition=Ready "groundsystem/$name" --timeout=10s

echo
kubectl get -n "$namespace" groundsystem "$name"
echo
kubectl get -n "$namespace" deployments,services,persistentvolumeclaims,configmaps -l "vgs.io/groundsystem=$name"
echo
log "GroundSystem $namespace/$name is Ready. The operator keeps running; Ctrl-C stops it."
log "In another shell: eval \"\$(hack/cluster.sh env)\"; kubectl get vgs -A"
wait "$operator"
