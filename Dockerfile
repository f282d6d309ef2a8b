# syntax=docker/dockerfile:1
# The two images of a kondense release, from one file (docs/images.md):
#
#   --target operator   kondense-operator: kopf, the Kubernetes client, prometheus-client and the
#                       torch-free job layer (kondense.job); no torch, a few hundred MB
#   --target worker     the worker pods (kondense worker ...): the engine, torch, Horovod 0.28.1
#                       patched for torch 2.14 (scripts/build-horovod.sh), Open MPI, mpi4py and ssh
#                       (backend mpi), Fashion-MNIST; the default
#
#   make image          # scripts/build-image.sh: docker where an engine answers, else buildah
#   docker build --target operator -t ghcr.io/kondense/kondense-operator:0.1.0 .
#   docker build --target worker --build-arg CUDA_VERSION= -t kondense-worker:cpu .   # Horovod without CUDA
#
# Python 3.11 on Debian 12 (bookworm), as the project is developed and tested; bookworm also
# packages Fashion-MNIST (dataset-fashion-mnist), the zoo's data set. The base is any bookworm
# image with python3 and its venv module: python:3.11-slim-bookworm, or one made without a
# registry (scripts/build-image.sh makes it with mmdebstrap).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# What both images share: the user, the venv's place on PATH, the zoo's cache directory.
FROM ${PYTHON_IMAGE} AS base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/kondense/kondense" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

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
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /home/kondense

# ---------------------------------------------------------------------------------------------
FROM base AS operator-build
# A pip config for the build's pip calls, mounted by the builder: a build host's CA bundle, local
# wheel mirrors (scripts/build-image.sh writes one for buildah). /dev/null: pip reads no config.
ARG PIP_CONFIG_FILE=/dev/null
RUN python3 -m venv /opt/kondense
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY operator ./operator
COPY scripts/operator-requirements.py ./scripts/
# The operator's requirements and the job layer's, as pyproject.toml pins them
# (scripts/operator-requirements.py), then the package without its dependencies: no torch.
RUN python scripts/operator-requirements.py > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && pip install --no-deps .

# ---------------------------------------------------------------------------------------------
FROM base AS operator
COPY --from=operator-build /opt/kondense /opt/kondense
# The operator image must never carry torch (its size, its start-up time).
RUN python -c "import kondense_operator.cli" && ! python -c "import torch" 2>/dev/null
USER 1000:1000
CMD ["kondense-operator", "--help"]

# ---------------------------------------------------------------------------------------------
FROM base AS worker-build
# The CUDA toolkit Horovod is compiled against: torch 2.14.1's wheels are CUDA 13.0 builds, and
# with those Horovod's CMake insists on a real toolkit (scripts/build-horovod.sh says why).
# Only the build stage has it; at run time torch's own nvidia-* wheels provide the libraries.
# Empty: Horovod without CUDA (Gloo only), a smaller and faster build for checks.
ARG CUDA_VERSION=13-0
ARG HOROVOD_BUILD_CUDA_CC_LIST=80,90
ARG BUILD_JOBS=4
# as in operator-build
ARG PIP_CONFIG_FILE=/dev/null

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

RUN python3 -m venv /opt/kondense
# torch first, in a layer of its own (gigabytes; the versions pyproject.toml pins)
RUN pip install torch==2.14.1 torchvision==0.29.1

# Horovod next: it depends on torch alone, so a change to the engine does not rebuild it.
WORKDIR /src
COPY scripts/build-horovod.sh ./scripts/
# Horovod's C++ build includes Python.h: python:3.11-slim has it, a Debian base needs python3-dev.
RUN if ! python -c "import os, sysconfig, sys; sys.exit(not os.path.exists(sysconfig.get_path('include') + '/Python.h'))"; then \
        apt-get update && apt-get install -y --no-install-recommends python3-dev && rm -rf /var/lib/apt/lists/*; \
    fi
# Horovod with Gloo (CPU collectives, the rendezvous) and, with CUDA, NCCL for GPU tensors,
# linked against the libnccl.so.2 that torch's nvidia-nccl wheel brings.
RUN if [ -n "$CUDA_VERSION" ]; then \
        export CUDA_HOME=/usr/local/cuda-$(echo "$CUDA_VERSION" | tr - .) \
               HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED \
               HOROVOD_BUILD_CUDA_CC_LIST="$HOROVOD_BUILD_CUDA_CC_LIST"; \
    fi \
 && KONDENSE_WHEEL_CACHE=/tmp/wheels MAKEFLAGS=-j"$BUILD_JOBS" scripts/build-horovod.sh /opt/kondense \
 && rm -rf /tmp/wheels

# The package last (it changes most often); its pins leave torch and Horovod as they are. The mpi
# extra is mpi4py (backend mpi), whose wheel loads the libmpi the worker stage installs.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY operator ./operator
RUN pip install ".[mpi]" \
 && python -c "import kondense, kondense_operator, horovod.torch, mpi4py"

# ---------------------------------------------------------------------------------------------
FROM base AS worker
# Fashion-MNIST from Debian (/usr/share/datasets/fashion-mnist): nothing is downloaded at run time.
# libgomp1: OpenMP for torch's CPU kernels.
# Backend mpi (one Kubeflow MPIJob per stage, docs/operator.md): Open MPI (mpirun, orted, the
# libmpi mpi4py loads) and ssh, by which mpirun in the launcher pod starts the ranks in the worker
# pods. The packaged host keys go: every image would share them, and sshd uses the job's own key.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist libgomp1 \
        openmpi-bin openssh-client openssh-server \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/ssh/ssh_host_*
# sshd as UID 1000 on port 2222 (the operator starts it with -f /etc/ssh/kondense/sshd_config and the
# MPI operator's key pair, mounted at /home/kondense/.ssh); the client's defaults for that port.
COPY scripts/ssh/sshd_config /etc/ssh/kondense/sshd_config
COPY scripts/ssh/ssh_config /etc/ssh/ssh_config.d/kondense.conf
# sshd runs the commands it is given through the user's login shell, and refuses a locked
# account: UID 1000 gets /bin/sh and no password ("*": keys only) here; the operator image keeps nologin.
RUN usermod --shell /bin/sh --password '*' kondense \
 && install -d -o 1000 -g 1000 -m 0700 /home/kondense/.ssh

COPY --from=worker-build /opt/kondense /opt/kondense
ENV LD_LIBRARY_PATH=/opt/kondense/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/kondense/lib/python3.11/site-packages/nvidia/nccl/lib
# mpi4py finds Open MPI's libmpi (loaded, not initialised: a build runs as root, without mpirun)
RUN python -c "import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])" \
 && mpirun --version | head -n 1 && /usr/sbin/sshd -V 2>&1 | head -n 1

USER 1000:1000
# No entrypoint: the operator creates worker pods that run kondense worker.
CMD ["kondense", "--help"]
