#!/usr/bin/env bash
# Runs every test: lint, unit and golden tests, the vfep process tests and the end-to-end tests against the
# local control plane (started here if it is not running, and stopped again afterwards if this script
# started it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/lib.sh"
cd "$ROOT"

"$HERE/deps.sh"

if "$HERE/cluster.sh" status 2>/dev/null; then
  log "reusing the running control plane"
else
  "$HERE/cluster.sh" up
  trap '"$HERE/cluster.sh" down' EXIT
fi
eval "$("$HERE/cluster.sh" env)"

log "lint: cargo fmt, clippy, shellcheck"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
shellcheck -x hack/*.sh kind/*.sh

log "build"
cargo build --workspace --all-targets --locked
export VGS_OPERATOR_BIN="$ROOT/target/debug/vgs-operator"

log "cargo test (unit, golden, vfep processes, end-to-end against $KUBECONFIG)"
cargo test --workspace --locked --no-fail-fast

log "images: operator and vfep (static release binaries, FROM scratch), built and checked"
hack/image.sh test
