#!/usr/bin/env bash
# Builds the local control plane from the Go module proxy into $VGS_CACHE/bin, keyed by version:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm.
# A binary already in the cache is never rebuilt. A cold build takes tens of minutes on 2 cores.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/lib.sh"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
WORK="$VGS_CACHE/build"
mkdir -p "$VGS_BIN" "$WORK"

have() { [[ -x "$(bin_path "$1" "$2")" ]]; }

# Install finished binaries atomically so that an interrupted build never leaves a half-written file.
install_bin() { # name version built-file
  install -m 0755 "$3" "$(bin_path "$1" "$2").tmp" && mv -f "$(bin_path "$1" "$2").tmp" "$(bin_path "$1" "$2")"
}

build_kubernetes() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=() n
  for n in "${names[@]}"; do have "$n" "$KUBE_VERSION" || missing+=("$n"); done
  ((${#missing[@]})) || return 0
  log "building ${missing[*]} $KUBE_VERSION (cold: ~20-40 min on 2 cores)"
  local dir="$WORK/kubernetes-$KUBE_VERSION" staging="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$dir"
  local upstream_mod
  upstream_mod="$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  # kubernetes points its staging modules at ./staging with replace directives, which `go install`
  # refuses; a wrapper module replaces each one with its published v0.x.y instead.
  {
    echo "module vgs.local/kubernetes-build"
    echo
    echo "go 1.26.0"
    echo
    grep '^godebug' "$upstream_mod" || true
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging"'#p' "$upstream_mod"
    echo ")"
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo "package tools"
    echo "import ("
    for n in "${missing[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$n\""; done
    echo ")"
  } >"$dir/tools.go"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$dir" && go mod tidy && mkdir -p out &&
    go build -trimpath -ldflags "$ldflags" -o out/ "${missing[@]/#/k8s.io/kubernetes/cmd/}")
  for n in "${missing[@]}"; do install_bin "$n" "$KUBE_VERSION" "$dir/out/$n"; done
}

build_etcd() {
  have etcd "$ETCD_VERSION" && return 0
  log "building etcd $ETCD_VERSION"
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  printf 'module vgs.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$dir/go.mod"
  printf '//go:build tools\npackage tools\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3)
  install_bin etcd "$ETCD_VERSION" "$dir/out/etcd"
}

# Modules without replace directives install directly.
build_go_install() { # name version package
  have "$1" "$2" && return 0
  log "building $1 $2"
  local gobin="$WORK/gobin-$1-$2"
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "$3@$2"
  install_bin "$1" "$2" "$gobin/$1"
}

# kwok has no built-in stages since v0.8: node initialise/heartbeat, pod ready/complete/delete and volume
# provisioning ship as Stage YAMLs in its module, gathered here into one file for `kwok --config`, with the
# StorageClass (kwok-volume, the default class) that its volume stages provision for.
fetch_kwok_stages() {
  local dest="$VGS_BIN/kwok-stages-$KWOK_VERSION.yaml"
  [[ -f "$dest" ]] && return 0
  local src f
  src="$(cd "$WORK" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete \
    volume/fast/pvc-provision volume/fast/pv-bind volume/fast/pvc-delete volume/fast/pv-delete; do
    cat "$src/kustomize/stage/$f.yaml"
    echo "---"
  done >"$dest.tmp"
  cp "$src/kustomize/stage/volume/fast/storage-class.yaml" "$VGS_BIN/kwok-storageclass-$KWOK_VERSION.yaml"
  mv "$dest.tmp" "$dest"
}

want="${1:-all}"
case "$want" in
  all)
    build_etcd
    build_go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
    fetch_kwok_stages
    build_kubernetes
    build_go_install helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm
    ;;
  helm) build_go_install helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm ;;
  *) die "usage: $0 [all|helm]" ;;
esac
log "control plane binaries ready in $VGS_BIN"
