#!/usr/bin/env bash
# The local control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kwok (simulated nodes whose pods become Running and Ready, and simulated volume provisioning).
#
#   hack/cluster.sh up      build what is missing (cached), start, wait until a node is Ready; reuses a
#                           healthy running plane, restarts an unhealthy one cleanly
#   hack/cluster.sh down    stop everything and delete the cluster state (etcd data, logs)
#   hack/cluster.sh status  exit 0 when the plane is up and healthy
#   hack/cluster.sh env     print the exports for KUBECONFIG and PATH (eval "$(hack/cluster.sh env)")
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/lib.sh"

PKI="$VGS_STATE/pki"
RUN="$VGS_STATE/run"
LOGS="$VGS_STATE/logs"
CM_PORT=20257
SCHED_PORT=20259
KWOK_PORT=20247
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
NODE_NAME=kwok-node-0

kubectl() { "$(bin_path kubectl "$KUBE_VERSION")" --kubeconfig "$VGS_KUBECONFIG" "$@"; }

# The recorded pid of a component, if that process is still the component (after a reboot or a long
# pause the number may belong to an unrelated process, which must never be signalled).
pid_of() {
  local pid
  pid="$(cat "$RUN/$1.pid" 2>/dev/null || true)"
  [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "$VGS_BIN/$1-" && echo "$pid"
  return 0
}
alive() { local pid; pid="$(pid_of "$1")"; [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }

healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  kubectl get --raw /readyz >/dev/null 2>&1
}

# Waits for a command to succeed, failing with the component's log tail after the deadline.
wait_for() { # what seconds component command...
  local what="$1" secs="$2" comp="$3"; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$comp"; then
      tail -n 30 "$LOGS/$comp.log" >&2 || true
      die "$comp exited while waiting for $what (log: $LOGS/$comp.log)"
    fi
    ((SECONDS < deadline)) || { tail -n 30 "$LOGS/$comp.log" >&2 || true; die "timed out waiting for $what"; }
    sleep 0.5
  done
}

# Starts a component in a session of its own, so that Ctrl-C in the shell that started it (hack/run.sh)
# does not reach it. setsid may fork, so the component writes its own pid before it execs.
start() { # name command...
  local name="$1"; shift
  rm -f "$RUN/$name.pid"
  # shellcheck disable=SC2016 # $$ and $0 are for the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  local _
  for _ in $(seq 1 50); do [[ -s "$RUN/$name.pid" ]] && return 0; sleep 0.1; done
  die "$name did not start"
}

stop_all() {
  local c pid _
  for c in "${COMPONENTS[@]}"; do
    pid="$(pid_of "$c")"
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
  done
  for c in "${COMPONENTS[@]}"; do
    pid="$(pid_of "$c")"
    [[ -n "$pid" ]] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/$c.pid"
  done
}

# --- certificates and kubeconfigs -------------------------------------------------------------------
cert() { # name subject [extfile-contents]
  local name="$1" subj="$2" ext="${3:-}"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

kubeconfig() { # name file
  cat >"$2" <<KC
apiVersion: v1
kind: Config
clusters:
- name: vgs-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: vgs-local
  context: {cluster: vgs-local, user: $1}
current-context: vgs-local
KC
}

make_pki() {
  [[ -f "$PKI/done" ]] && return 0
  rm -rf "$PKI" && mkdir -p "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=vgs-local-ca" -days 3650 -sha256 -out "$PKI/ca.crt" 2>/dev/null
  cert apiserver "/CN=kube-apiserver" \
    "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1
extendedKeyUsage=serverAuth"
  cert admin "/O=system:masters/CN=vgs-admin" "extendedKeyUsage=clientAuth"
  cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  cert kwok "/O=system:masters/CN=kwok" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig admin "$VGS_KUBECONFIG"
  kubeconfig controller-manager "$PKI/controller-manager.kubeconfig"
  kubeconfig scheduler "$PKI/scheduler.kubeconfig"
  kubeconfig kwok "$PKI/kwok.kubeconfig"
  touch "$PKI/done"
}

# --- components --------------------------------------------------------------------------------------
up() {
  "$HERE/build-control-plane.sh"
  mkdir -p "$RUN" "$LOGS"
  if healthy; then
    log "control plane already running: KUBECONFIG=$VGS_KUBECONFIG"
    return 0
  fi
  log "starting the control plane (state in $VGS_STATE)"
  stop_all
  rm -rf "$VGS_STATE/etcd"
  make_pki

  start etcd "$(bin_path etcd "$ETCD_VERSION")" --name vgs --data-dir "$VGS_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "vgs=http://127.0.0.1:$((ETCD_PORT + 10))" --unsafe-no-fsync --quota-backend-bytes 2147483648
  wait_for etcd 60 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  # Loopback addresses are not valid endpoints for the kubernetes Service, so its reconciler is off.
  start kube-apiserver "$(bin_path kube-apiserver "$KUBE_VERSION")" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --authorization-mode RBAC \
    --service-cluster-ip-range 10.96.0.0/16 \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --allow-privileged=true --profiling=false
  wait_for "kube-apiserver /readyz" 120 kube-apiserver kubectl get --raw /readyz

  start kube-controller-manager "$(bin_path kube-controller-manager "$KUBE_VERSION")" \
    --kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --controllers '*,-nodeipam'
  start kube-scheduler "$(bin_path kube-scheduler "$KUBE_VERSION")" \
    --kubeconfig "$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false
  start kwok "$(bin_path kwok "$KWOK_VERSION")" --kubeconfig "$PKI/kwok.kubeconfig" \
    --config "$VGS_BIN/kwok-stages-$KWOK_VERSION.yaml" --manage-all-nodes \
    --cidr 10.244.0.0/16 --node-ip 127.0.0.1 --server-address "127.0.0.1:$KWOK_PORT"
  wait_for kube-controller-manager 60 kube-controller-manager curl -fsSk "https://127.0.0.1:$CM_PORT/healthz"
  wait_for kube-scheduler 60 kube-scheduler curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"

  kubectl apply --server-side -f "$VGS_BIN/kwok-storageclass-$KWOK_VERSION.yaml" >/dev/null
  kubectl apply --server-side -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
NODE
  wait_for "node $NODE_NAME Ready" 60 kwok kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  # Pods need the default ServiceAccount, which the controller manager creates per namespace.
  wait_for "default ServiceAccount" 60 kube-controller-manager kubectl get serviceaccount default -n default
  log "control plane ready: KUBECONFIG=$VGS_KUBECONFIG ($(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1))"
}

print_env() {
  local path="$VGS_CACHE/path"
  mkdir -p "$path"
  ln -sf "$(bin_path kubectl "$KUBE_VERSION")" "$path/kubectl"
  [[ -x "$(bin_path helm "$HELM_VERSION")" ]] && ln -sf "$(bin_path helm "$HELM_VERSION")" "$path/helm"
  echo "export KUBECONFIG='$VGS_KUBECONFIG'"
  echo "export PATH='$path':\"\$PATH\""
}

case "${1:-}" in
  up) up ;;
  down) mkdir -p "$RUN"; stop_all; rm -rf "$VGS_STATE/etcd" "$LOGS"; log "control plane stopped" ;;
  status) healthy ;;
  env) print_env ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
