#!/usr/bin/env bash
# Builds Horovod 0.28.1 (PyTorch + Gloo, no MPI/TensorFlow/MXNet) against the venv's torch and
# installs it into that venv. The wheel is built once and cached; later runs only install it.
#
#   scripts/build-horovod.sh [VENV]        (default: .venv)
#
# Why a patch: Horovod 0.28.1's CMake files ask for C++14, torch 2.14's headers need C++20
# (the upstream fix is on Horovod's master, unreleased). With a CUDA build of torch, Horovod's CMake
# insists on a real CUDA toolkit and does not find one through an nvcc wrapper: hence CUDA_HOME below.
# docs/architecture.md (process model) says where Horovod fits.
# Environment:
#   KONDENSE_WHEEL_CACHE   where built wheels are kept (default ~/.cache/kondense/wheels)
#   CUDA_HOME              a CUDA toolkit to build against (default: /usr/local/cuda-13.0 if present)
#   HOROVOD_BUILD_CUDA_CC_LIST  GPU architectures when building with CUDA (default 90)
#   MAKEFLAGS              parallel build jobs (default -j2)
set -euo pipefail

HOROVOD_VERSION=0.28.1
VENV=${1:-.venv}
PY="$VENV/bin/python"
CACHE=${KONDENSE_WHEEL_CACHE:-$HOME/.cache/kondense/wheels}

say() { echo "build-horovod: $*"; }
die() { echo "build-horovod: ERROR: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no Python at $PY: create the venv first (make install) or pass its path as the first argument"
PY="$(cd "$(dirname "$PY")" && pwd)/python"   # absolute: the build runs in another directory

if "$PY" - <<EOF 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("horovod") == "$HOROVOD_VERSION" else 1)
EOF
then
    if "$PY" -c "import horovod.torch" 2>/dev/null; then
        say "horovod $HOROVOD_VERSION is already installed in $VENV and imports with its torch; nothing to do"
        exit 0
    fi
    say "horovod $HOROVOD_VERSION is installed in $VENV but horovod.torch does not import: reinstalling"
fi

# The wheel links against one torch build and one Python: key the cache by both.
key=$("$PY" -c 'import sys, torch; print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}")') \
    || die "torch does not import in $VENV: install the project first (make install)"
key=${key//+/_}

# CUDA: a CUDA build of torch makes Horovod's CMake insist on CUDA; it must be pointed at a real
# toolkit (a wrapper nvcc on PATH is not enough). Without a toolkit, build CPU-only.
cuda_env=()
cuda_home=${CUDA_HOME:-}
if [ -z "$cuda_home" ] && [ -d /usr/local/cuda-13.0 ]; then cuda_home=/usr/local/cuda-13.0; fi
if [ -n "$cuda_home" ]; then
    [ -d "$cuda_home" ] || die "CUDA_HOME=$cuda_home does not exist"
    cuda_env=(CUDA_HOME="$cuda_home" HOROVOD_CUDA_HOME="$cuda_home"
              HOROVOD_BUILD_CUDA_CC_LIST="${HOROVOD_BUILD_CUDA_CC_LIST:-90}")
    key="$key-cuda$(basename "$cuda_home" | sed 's/^cuda-\{0,1\}//')"
else
    key="$key-cpu"
fi

wheeldir="$CACHE/horovod-$HOROVOD_VERSION-$key"
wheel=$(ls "$wheeldir"/horovod-"$HOROVOD_VERSION"-*.whl 2>/dev/null | head -n1 || true)

if [ -n "$wheel" ]; then
    say "using cached wheel $wheel"
else
    command -v cmake >/dev/null || {
        say "cmake is not on PATH: installing it into $VENV with pip"
        "$PY" -m pip install --quiet cmake || die "could not install cmake (try: apt-get install cmake)"
        export PATH="$(cd "$VENV/bin" && pwd):$PATH"
    }
    command -v cmake >/dev/null || die "cmake still not found"
    command -v g++ >/dev/null || command -v c++ >/dev/null || die "no C++ compiler found (apt-get install g++)"
    "$PY" -c "import setuptools, wheel" 2>/dev/null || "$PY" -m pip install --quiet setuptools wheel \
        || die "could not install setuptools and wheel into $VENV"

    work=$(mktemp -d "${TMPDIR:-/tmp}/build-horovod.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    say "downloading the horovod==$HOROVOD_VERSION source distribution into $work"
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work" \
        || die "pip download of horovod==$HOROVOD_VERSION failed"
    sdist=$(ls "$work"/horovod-"$HOROVOD_VERSION".tar.gz 2>/dev/null) || die "no sdist downloaded"
    tar -xzf "$sdist" -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"

    say "patching CMAKE_CXX_STANDARD 14 -> 20 (torch's headers need C++20)"
    for f in "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"; do
        [ -f "$f" ] || die "$f not found in the sdist"
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 20)/g' "$f"
        grep -q 'set(CMAKE_CXX_STANDARD 20)' "$f" || die "patch did not apply to $f"
    done

    if [ -n "$cuda_home" ]; then say "building with CUDA from $cuda_home"; else say "building CPU-only (no CUDA toolkit)"; fi
    say "building the wheel (PyTorch + Gloo; takes about 4 minutes on 2 cores)"
    start=$(date +%s)
    mkdir -p "$work/wheel"
    (cd "$src" && env "${cuda_env[@]}" \
        HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
        HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS="${MAKEFLAGS:--j2}" \
        "$PY" -m pip wheel --no-build-isolation --no-deps -w "$work/wheel" .) \
        || die "the Horovod build failed (see the compiler output above)"
    built=$(ls "$work"/wheel/horovod-*.whl 2>/dev/null | head -n1) || true
    [ -n "$built" ] || die "pip wheel finished but left no wheel"
    mkdir -p "$wheeldir"
    cp "$built" "$wheeldir/.tmp-$(basename "$built")"
    mv "$wheeldir/.tmp-$(basename "$built")" "$wheeldir/$(basename "$built")"   # atomic: never a half-written cache entry
    wheel="$wheeldir/$(basename "$built")"
    say "built $wheel in $(( $(date +%s) - start )) s"
fi

# Runtime requirements from the wheel's METADATA (cloudpickle, psutil, pyyaml, packaging, cffi), with
# their environment markers (so pip skips the dataclasses backport on Python >= 3.7), installed by
# name so that --no-deps keeps pip away from torch.
mapfile -t deps < <("$PY" - "$wheel" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
for line in text.splitlines():
    if line.startswith("Requires-Dist:") and "extra ==" not in line:
        print(line.split(":", 1)[1].strip())
EOF
)
[ "${#deps[@]}" -gt 0 ] || die "could not read the requirements of $wheel"
say "installing horovod's runtime requirements: ${deps[*]}"
"$PY" -m pip install --quiet "${deps[@]}" || die "pip install of horovod's requirements failed"
say "installing $(basename "$wheel") into $VENV"
"$PY" -m pip install --quiet --no-deps --force-reinstall "$wheel" || die "pip install of $wheel failed"
"$PY" -c "import horovod.torch" || die "horovod.torch does not import after the install"
say "done: horovod $HOROVOD_VERSION (torch, gloo) in $VENV"
