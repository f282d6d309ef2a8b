# Sourced by scripts/build-image.sh and scripts/image-check.sh (after `cd` to the repository, with
# NAME set to the caller's name and the caller's arguments): the targets asked for (operator,
# worker or all), the images' registry and tag, and the builder, exported for the scripts they run.
say() { echo "$NAME: $*"; }
die() { echo "$NAME: ERROR: $*" >&2; exit 1; }

TARGETS=${1:-all}
case "$TARGETS" in
    all) TARGETS="operator worker" ;;
    operator|worker) ;;
    *) die "unknown target '$TARGETS': use operator, worker or all" ;;
esac

KONDENSE_REGISTRY=${KONDENSE_REGISTRY:-ghcr.io/kondense}
KONDENSE_VERSION=${KONDENSE_VERSION:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/kondense/Chart.yaml)}
[ -n "$KONDENSE_VERSION" ] || die "no appVersion in charts/kondense/Chart.yaml: set KONDENSE_VERSION"
if [ -z "${KONDENSE_BUILDER:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then KONDENSE_BUILDER=docker; else KONDENSE_BUILDER=buildah; fi
fi
case "$KONDENSE_BUILDER" in
    docker|buildah) ;;
    *) die "KONDENSE_BUILDER must be docker or buildah, not '$KONDENSE_BUILDER'" ;;
esac
export KONDENSE_REGISTRY KONDENSE_VERSION KONDENSE_BUILDER
