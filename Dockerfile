# syntax=docker/dockerfile:1
# One image for everything kondense runs on Kubernetes: the operator (kondense-operator) and the
# worker pods it creates (kondense worker ...), i.e. the engine, torch, and Horovod 0.28.1
# patched for torch 2.14 (scripts/build-horovod.sh).
#
#   make image                      # docker build -t $(IMAGE) .
#   docker build --build-arg CUDA_VERSION= -t kondense:cpu .    # Horovod without CUDA (untested)
#
# Python 3.11 on Debian 12 (bookworm), as the project is developed and tested; bookworm also
# packages Fashion-MNIST (dataset-fashion-mnist), the zoo's data set.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# The CUDA toolkit Horovod is compiled against: torch 2.14.1's wheels are CUDA 13.0 builds, and
# with those Horovod's CMake insists on a real toolkit (scripts/build-horovod.sh says why).
# Only the build stage has it; at run time torch's own nvidia-* wheels provide the libraries.
ARG CUDA_VERSION=13-0
ARG HOROVOD_BUILD_CUDA_CC_LIST=80,90
ARG BUILD_JOBS=4

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN if [ -n "$CUDA_VERSION" ]; then \
        curl -fsSL -o /tmp/cuda-keyring.deb \
            https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
     && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
     && apt-get update \
     && apt-get install -y --no-install-recommends \
            cuda-nvcc-${CUDA_VERSION} cuda-cudart-dev-${CUDA_VERSION} cuda-nvtx-${CUDA_VERSION} libnccl-dev \
     && rm -rf /var/lib/apt/lists/*; \
    fi

RUN python -m venv /opt/kondense
ENV PATH=/opt/kondense/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, in a layer of its own (gigabytes; the versions pyproject.toml pins)
RUN pip install torch==2.14.1 torchvision==0.29.1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY operator ./operator
COPY scripts/build-horovod.sh ./scripts/
RUN pip install '.[operator]'

# Horovod with Gloo (CPU collectives, the rendezvous) and, with CUDA, NCCL for GPU tensors,
# linked against the libnccl.so.2 that torch's nvidia-nccl wheel brings.
RUN if [ -n "$CUDA_VERSION" ]; then \
        export CUDA_HOME=/usr/local/cuda-$(echo "$CUDA_VERSION" | tr - .) \
               HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED \
               HOROVOD_BUILD_CUDA_CC_LIST="$HOROVOD_BUILD_CUDA_CC_LIST"; \
    fi \
 && KONDENSE_WHEEL_CACHE=/tmp/wheels MAKEFLAGS=-j"$BUILD_JOBS" scripts/build-horovod.sh /opt/kondense \
 && rm -rf /tmp/wheels \
 && python -c "import kondense, kondense_operator, horovod.torch"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="kondense" \
      org.opencontainers.image.description="Compress trained PyTorch networks within an accuracy budget; the kondense operator and its workers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# Fashion-MNIST from Debian (/usr/share/datasets/fashion-mnist): nothing is downloaded at run time.
# libgomp1: OpenMP for torch's CPU kernels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist libgomp1 \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/kondense /opt/kondense

# UID 1000, as the chart and the operator's pods run it (runAsNonRoot, read-only root file
# system). KONDENSE_HOME (the zoo's weight cache) is where the operator mounts the cache claim.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/kondense --shell /usr/sbin/nologin kondense \
 && mkdir -p /var/cache/kondense \
 && chown 1000:1000 /var/cache/kondense

ENV PATH=/opt/kondense/bin:$PATH \
    VIRTUAL_ENV=/opt/kondense \
    KONDENSE_HOME=/var/cache/kondense \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LD_LIBRARY_PATH=/opt/kondense/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/kondense/lib/python3.11/site-packages/nvidia/nccl/lib

USER 1000:1000
WORKDIR /home/kondense
# No entrypoint: the operator's Deployment runs kondense-operator, the worker pods kondense worker.
CMD ["kondense", "--help"]
