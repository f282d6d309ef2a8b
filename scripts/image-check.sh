#!/usr/bin/env bash
# Builds the images (scripts/build-image.sh; cached layers make a rebuild quick) and smoke-runs
# them (docs/images.md):
#   operator: kondense-operator inside the image against the kmock API emulator on this host,
#             through one CompressionJob to its stage-1 Job (scripts/image_check_operator.py)
#   worker:   kondense --help, import horovod.torch, kondense profile of LeNet-5, and backend mpi's
#             ssh path as UID 1000: sshd as the MPIJob's workers run it, two ranks started over
#             ssh by mpirun (scripts/ssh/check.sh)
#
#   scripts/image-check.sh [operator|worker|all]    (make image-check-operator, image-check-worker, image-check)
#
# Without a Docker engine it installs what a daemonless build needs when it is missing (buildah,
# mmdebstrap; apt-get, as root), so a fresh Debian machine runs it after `make install`.
# Environment: as scripts/build-image.sh; PYTHON, the Python with the test extra (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=image-check
. scripts/image-env.sh
PY=${PYTHON:-.venv/bin/python}
REGISTRY=$KONDENSE_REGISTRY
VERSION=$KONDENSE_VERSION

if [ "$KONDENSE_BUILDER" = buildah ] && ! { command -v buildah && command -v mmdebstrap; } >/dev/null; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || die "buildah and mmdebstrap are missing: install them (Debian: apt-get install buildah mmdebstrap)"
    say "installing buildah and mmdebstrap with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap >/dev/null
fi

# Runs a command inside an image as UID 1000, as the chart's pods do.
in_image() {
    local image=$1; shift
    if [ "$KONDENSE_BUILDER" = docker ]; then
        docker run --rm --user 1000:1000 "$image" "$@"
    else
        local c status=0
        c=$(buildah from --pull-never "$image")
        buildah run --isolation chroot --user 1000:1000 "$c" -- "$@" || status=$?
        buildah rm "$c" >/dev/null
        return "$status"
    fi
}

for target in $TARGETS; do
    image="$REGISTRY/kondense-$target:$VERSION"
    start=$(date +%s)
    scripts/build-image.sh "$target"
    built=$(date +%s)
    say "checking $image"
    case "$target" in
        operator)
            [ -x "$PY" ] || die "no $PY: run make install (the check drives the image with kmock from the test extra)"
            "$PY" scripts/image_check_operator.py --builder "$KONDENSE_BUILDER" "$image" "$REGISTRY/kondense-worker:$VERSION"
            ;;
        worker)
            in_image "$image" kondense --help >/dev/null
            in_image "$image" python -c "import horovod.torch"
            in_image "$image" kondense profile --arch lenet5 --num-classes 10 --input-shape 1,28,28
            in_image "$image" sh -c "$(cat scripts/ssh/check.sh)"
            ;;
    esac
    say "$image: OK (build $(( built - start )) s, check $(( $(date +%s) - built )) s)"
done
