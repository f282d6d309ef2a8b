#!/usr/bin/env bash
# Puts Fashion-MNIST where kondense looks for it: Debian's dataset-fashion-mnist package.
# Elsewhere, point KONDENSE_FASHION_MNIST at a directory holding the four IDX .gz files.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -n "${KONDENSE_FASHION_MNIST:-}" ]; then dir=$KONDENSE_FASHION_MNIST; fi
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
    exit 0
fi
if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Fashion-MNIST: apt-get install dataset-fashion-mnist"
    $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
else
    echo "Fashion-MNIST is not in $dir and there is no apt-get here." >&2
    echo "Download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and" >&2
    echo "t10k-labels-idx1-ubyte.gz into a directory and set KONDENSE_FASHION_MNIST to it." >&2
    exit 1
fi
