# shellcheck shell=bash disable=SC2034 # variables used by the scripts that source this file
# Shared settings for the local control plane scripts. Sourced, not run.
# Versions are pinned to match the k8s-openapi feature (v1_37) used by the Rust crates.
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.0}"  # the etcd that kubernetes v1.37 itself requires
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v4.3.2}"

VGS_CACHE="${VGS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vgs}"
VGS_BIN="$VGS_CACHE/bin"
# Runtime state (certs, etcd data, logs, pids). Outside the repo so a clean clone stays clean.
VGS_STATE="${VGS_STATE:-$VGS_CACHE/cluster}"
VGS_KUBECONFIG="$VGS_STATE/admin.kubeconfig"

ETCD_PORT="${ETCD_PORT:-23790}"
APISERVER_PORT="${APISERVER_PORT:-26443}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Path of a cached binary, keyed by the version it was built from.
bin_path() { echo "$VGS_BIN/$1-$2"; }
