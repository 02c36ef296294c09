#!/usr/bin/env bash
# Container images of the project, one script for all of them:
#   operator  ghcr.io/vgs-io/vgs-operator   operator/Containerfile   binary vgs-operator
#   vfep      ghcr.io/vgs-io/vfep           vfep/Containerfile       binary vfep
#
#   hack/image.sh build IMAGE        build the static release binary and the image (FROM scratch);
#                                    prints the image reference
#   hack/image.sh test IMAGE         build, then check the image: OCI labels, non-root user, and that the
#                                    binary runs inside it (podman; vfep: `--version` prints the version)
#   hack/image.sh build|test         the same for every image
#   hack/image.sh save IMAGE FILE    build, then write a docker-archive tarball (for `kind load image-archive`)
#   hack/image.sh ref IMAGE          print the image reference without building
#
# Environment:
#   VGS_IMAGE_TAG     tag of the built image (default: the crate version, which is the chart's appVersion)
#   VGS_IMAGE_TOOL    buildah (default here: vfs storage, chroot isolation, no daemon) or docker (default
#                     when a Docker engine answers, as on CI runners)
# The binaries are static glibc builds (-C target-feature=+crt-static, x86_64-unknown-linux-gnu), so the
# images need no libc of their own.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

TARGET=x86_64-unknown-linux-gnu
SOURCE_URL="https://github.com/vgs-io/vgs-operator"

# --- the images ---------------------------------------------------------------------------------------
# image_NAME sets: PACKAGE (cargo package), BINARY (its binary), CONTAINERFILE, REPOSITORY.
image_operator() {
  PACKAGE=vgs-operator BINARY=vgs-operator CONTAINERFILE=operator/Containerfile
  REPOSITORY=ghcr.io/vgs-io/vgs-operator
}
image_vfep() {
  PACKAGE=vfep BINARY=vfep CONTAINERFILE=vfep/Containerfile
  REPOSITORY=ghcr.io/vgs-io/vfep
}
select_image() {
  case "${1:-}" in
    operator) image_operator ;;
    vfep) image_vfep ;;
    *) die "unknown image '${1:-}': expected operator or vfep" ;;
  esac
  NAME="$1"
  VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
  [[ -n "$VERSION" ]] || die "no workspace version in Cargo.toml"
  REF="$REPOSITORY:${VGS_IMAGE_TAG:-$VERSION}"
}

# A smoke test per image, run inside the image (no network, non-root as built).
smoke_operator() { # The CRD the binary prints must be the one in the repository.
  local out
  out="$(run_image crd)" || die "the operator image does not run: $out"
  [[ "$out" == "$(cat "$ROOT/crds/groundsystem.yaml")" ]] ||
    die "\`vgs-operator crd\` in the image differs from crds/groundsystem.yaml"
}
smoke_vfep() { # `vfep --version` must print this version; --help must list the three roles.
  local out role
  out="$(run_image --version)" || die "the vfep image does not run: $out"
  [[ "$out" == "vfep $VERSION" ]] || die "vfep --version in the image printed '$out', expected 'vfep $VERSION'"
  out="$(run_image --help)" || die "vfep --help fails in the image: $out"
  for role in frontend ground simulator; do
    grep -q "^  $role " <<<"$out" || die "vfep --help in the image does not list the $role role: $out"
  done
}

# Extra build context per image, next to the binary.
context_operator() { :; }
context_vfep() { # empty mount points, chowned to the runtime user by the Containerfile
  mkdir -p "$1/data" "$1/config"
}

# --- tools --------------------------------------------------------------------------------------------
tool() {
  if [[ -n "${VGS_IMAGE_TOOL:-}" ]]; then
    echo "$VGS_IMAGE_TOOL"
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo docker
  else
    echo buildah
  fi
}
buildah() { command buildah --storage-driver vfs "$@"; }
podman() { command podman --storage-driver vfs --runtime runc "$@"; }

run_image() { # args...
  case "$(tool)" in
    docker) docker run --rm --network none "$REF" "$@" 2>&1 ;;
    *) podman run --rm --network none --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 "$REF" "$@" 2>&1 ;;
  esac
}

# shellcheck disable=SC2016 # Go templates, not shell expansions
inspect_labels() { # prints KEY=VALUE lines of the image's labels and its user
  case "$(tool)" in
    docker) docker image inspect --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}user={{.Config.User}}' "$REF" ;;
    *) buildah inspect --type image --format '{{range $k, $v := .OCIv1.Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}user={{.OCIv1.Config.User}}' "$REF" ;;
  esac
}

# --- commands -----------------------------------------------------------------------------------------
build_binary() {
  log "building the static $BINARY binary (release, $TARGET, +crt-static)"
  # Stripped: symbols only make the image bigger.
  (cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_STRIP="${CARGO_PROFILE_RELEASE_STRIP:-symbols}" \
    cargo build --release --locked --target "$TARGET" -p "$PACKAGE" --bin "$BINARY")
}

build() {
  [[ -f "$ROOT/$CONTAINERFILE" ]] || die "$CONTAINERFILE not found"
  build_binary
  # The build context holds the binary (and empty directories): nothing of the work tree reaches
  # the image.
  local context="$ROOT/target/image-context/$NAME"
  rm -rf "$context" && mkdir -p "$context"
  install -m 0555 "${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release/$BINARY" "$context/$BINARY"
  "context_$NAME" "$context"
  local revision created
  revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || revision+="-dirty"
  created="$(date -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"} +%Y-%m-%dT%H:%M:%SZ)"
  local args=(--file "$ROOT/$CONTAINERFILE" --tag "$REF"
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$revision"
    --build-arg "CREATED=$created" --build-arg "SOURCE=$SOURCE_URL")
  log "building image $REF with $(tool)"
  case "$(tool)" in
    docker) docker build "${args[@]}" "$context" >&2 ;;
    buildah) buildah build --isolation chroot --layers=false "${args[@]}" "$context" >&2 ;;
    *) die "VGS_IMAGE_TOOL must be buildah or docker" ;;
  esac
  echo "$REF"
}

check() {
  local labels key
  labels="$(inspect_labels)"
  for key in title version revision source created; do
    grep -q "^org.opencontainers.image.$key=." <<<"$labels" || die "$REF has no org.opencontainers.image.$key label"
  done
  grep -qx "org.opencontainers.image.version=$VERSION" <<<"$labels" || die "$REF: version label is not $VERSION"
  local user
  user="$(sed -n 's/^user=//p' <<<"$labels")"
  [[ "$user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || die "$REF must run as a numeric non-root user, not '$user'"
  "smoke_$NAME"
  log "$REF: labels, non-root user ($user) and smoke test ok"
}

save() { # file
  mkdir -p "$(dirname "$1")"
  rm -f "$1"
  case "$(tool)" in
    docker) docker save --output "$1" "$REF" ;;
    *) buildah push "$REF" "docker-archive:$1:$REF" >&2 ;;
  esac
  log "saved $REF to $1"
}

cmd="${1:-}"
if [[ -z "${2:-}" && ("$cmd" == build || "$cmd" == test) ]]; then
  for image in operator vfep; do "$0" "$cmd" "$image"; done
  exit 0
fi
select_image "${2:-}"
case "$cmd" in
  build) build ;;
  test) build >/dev/null && check ;;
  save) [[ -n "${3:-}" ]] || die "usage: $0 save IMAGE FILE"; build >/dev/null && save "$3" ;;
  ref) echo "$REF" ;;
  *) die "usage: $0 build|test|ref IMAGE, or $0 save IMAGE FILE (IMAGE: operator or vfep)" ;;
esac
