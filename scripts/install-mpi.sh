#!/usr/bin/env bash
# An MPI runtime for backend mpi (mpirun and libmpi): Debian's Open MPI. mpi4py itself comes with
# the package's `mpi` extra; its wheels load whichever libmpi is installed (Open MPI or MPICH).
# The ssh client and server too: the tests start ranks over ssh from a host file, as the launcher
# of a Kubeflow MPIJob does (tests/test_mpi.py).
set -euo pipefail
if command -v mpirun >/dev/null && ldconfig -p 2>/dev/null | grep -Eq 'libmpi\.so\.(40|12)' \
    && command -v ssh >/dev/null && [ -x /usr/sbin/sshd ]; then
    exit 0
fi
if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    packages="openmpi-bin openssh-client openssh-server"
    echo "installing Open MPI and ssh: apt-get install $packages"
    # shellcheck disable=SC2086
    $sudo apt-get install -y -q $packages >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q $packages >/dev/null; }
else
    echo "backend mpi needs an MPI runtime (mpirun and libmpi) and there is no apt-get here:" >&2
    echo "install Open MPI or MPICH with this system's package manager (or load its module on a cluster)." >&2
    exit 1
fi
