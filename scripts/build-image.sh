#!/usr/bin/env bash
# Builds the release's images from the Dockerfile's targets (docs/images.md):
#   operator -> $KONDENSE_REGISTRY/kondense-operator:$KONDENSE_VERSION
#   worker   -> $KONDENSE_REGISTRY/kondense-worker:$KONDENSE_VERSION
# with docker where a Docker engine answers, otherwise with buildah (chroot isolation: no daemon,
# no cgroups needed). Where no registry serves the base image, a Debian bookworm base is made
# locally with mmdebstrap first (once; it stays in the image store).
#
#   scripts/build-image.sh [operator|worker|all]      (make image-operator, image-worker, image; default all)
#
# Environment:
#   KONDENSE_REGISTRY  the images' registry and owner (default ghcr.io/kondense)
#   KONDENSE_VERSION   their tag (default: the chart's appVersion)
#   KONDENSE_BUILDER   docker or buildah (default: docker if its engine answers, else buildah)
#   PYTHON_IMAGE       the base image (default python:3.11-slim-bookworm where its registry answers,
#                      else localhost/kondense-base:bookworm, made here)
#   CUDA_VERSION       the CUDA toolkit the worker's Horovod is built with, e.g. 13-0 (releases:
#                      the Dockerfile's default); unset here: Horovod without CUDA, smaller and faster
#   BUILD_JOBS         parallel compile jobs for Horovod (default: the number of CPUs)
#   KONDENSE_PIP_LOCAL buildah only: local package mirrors for the build's pip, space-separated
#                      directories of wheels or index roots holding simple/ (default $PIP_FIND_LINKS)
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=build-image
. scripts/image-env.sh
command -v "$KONDENSE_BUILDER" >/dev/null || die "$KONDENSE_BUILDER is not installed"
B=$KONDENSE_BUILDER
REGISTRY=$KONDENSE_REGISTRY
VERSION=$KONDENSE_VERSION
REMOTE_BASE=python:3.11-slim-bookworm
LOCAL_BASE=localhost/kondense-base:bookworm

work=$(mktemp -d "${TMPDIR:-/tmp}/build-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

has_image() { if [ "$B" = docker ]; then docker image inspect "$1" >/dev/null 2>&1; else buildah inspect --type image "$1" >/dev/null 2>&1; fi; }

# A bookworm root file system with python3 and venv, from Debian's mirror: no image registry needed.
make_local_base() {
    command -v mmdebstrap >/dev/null || die "no registry serves $REMOTE_BASE and mmdebstrap is missing (apt-get install mmdebstrap)"
    say "no registry serves $REMOTE_BASE: making $LOCAL_BASE with mmdebstrap (about 2 minutes)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv bookworm "$work/rootfs.tar"
    local path=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    if [ "$B" = docker ]; then
        docker import --change "ENV $path" "$work/rootfs.tar" "$LOCAL_BASE" >/dev/null
    else
        local c mnt
        c=$(buildah from scratch)
        mnt=$(buildah mount "$c")
        tar -xf "$work/rootfs.tar" -C "$mnt"
        buildah umount "$c" >/dev/null
        buildah config --env "$path" "$c"
        buildah commit --quiet --rm "$c" "$LOCAL_BASE" >/dev/null
    fi
    rm -f "$work/rootfs.tar"
}

if [ -z "${PYTHON_IMAGE:-}" ]; then
    if has_image "$REMOTE_BASE" || timeout 120 "$B" pull -q "$REMOTE_BASE" >/dev/null 2>&1; then
        PYTHON_IMAGE=$REMOTE_BASE
    else
        has_image "$LOCAL_BASE" || make_local_base
        PYTHON_IMAGE=$LOCAL_BASE
    fi
fi
say "base image $PYTHON_IMAGE, builder $B"

args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "VERSION=$VERSION"
      --build-arg "CUDA_VERSION=${CUDA_VERSION:-}" --build-arg "BUILD_JOBS=${BUILD_JOBS:-$(nproc)}")

# buildah mounts what the build's pip needs from this host, through a pip config: the CA bundle
# pip trusts here (a TLS-inspecting proxy's, say) and local mirrors (torch is gigabytes).
if [ "$B" = buildah ]; then
    ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    echo "[global]" > "$work/pip.conf"
    if [ -f "$ca" ]; then
        args+=(-v "$ca:/run/kondense-ca.crt:ro")
        echo "cert = /run/kondense-ca.crt" >> "$work/pip.conf"
    fi
    links="" index="" i=0
    for dir in ${KONDENSE_PIP_LOCAL-${PIP_FIND_LINKS:-}}; do
        [ -d "$dir" ] || continue   # a URL or a missing folder: pip inside reaches PyPI anyway
        args+=(-v "$dir:/run/kondense-pip-$i:ro")
        if [ -d "$dir/simple" ]; then index+=" file:///run/kondense-pip-$i/simple"; else links+=" /run/kondense-pip-$i"; fi
        i=$((i + 1))
    done
    [ -z "$links" ] || echo "find-links =$links" >> "$work/pip.conf"
    [ -z "$index" ] || echo "extra-index-url =$index" >> "$work/pip.conf"
    args+=(-v "$work/pip.conf:/run/kondense-pip.conf:ro" --build-arg PIP_CONFIG_FILE=/run/kondense-pip.conf)
fi

for target in $TARGETS; do
    name="$REGISTRY/kondense-$target:$VERSION"
    say "building $name (target $target)"
    start=$(date +%s)
    if [ "$B" = docker ]; then
        docker build --target "$target" "${args[@]}" -t "$name" .
    else
        buildah bud --isolation chroot --layers --force-rm --target "$target" "${args[@]}" -t "$name" -f Dockerfile .
    fi
    say "built $name in $(( $(date +%s) - start )) s"
done
