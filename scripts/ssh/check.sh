#!/bin/sh
# Backend mpi's ssh path, inside the worker image as UID 1000 (scripts/image-check.sh worker runs it
# there): sshd as the MPI operator's worker pods run it (sshd_config, a key pair like the operator's
# own as host and authorized key, no root, a pid file in /tmp), the ssh client's defaults
# (ssh_config: port 2222, no known_hosts), the login shell, Open MPI's orted on the session's PATH,
# and two mpi4py ranks that mpirun starts over ssh and that allreduce.
# 127.0.0.2 is this machine, but not a name Open MPI knows as local: it goes through ssh.
# Environment (to try it outside the image): SSHD_CONFIG, SSH_CONFIG (an ssh -F file), PYTHON.
set -eu
SSHD_CONFIG=${SSHD_CONFIG:-/etc/ssh/kondense/sshd_config}
PYTHON=${PYTHON:-python}
keys=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$keys"' EXIT
ssh-keygen -q -t ecdsa -b 521 -m PEM -N '' -f "$keys/id_rsa"
cp "$keys/id_rsa.pub" "$keys/authorized_keys"
/usr/sbin/sshd -D -e -f "$SSHD_CONFIG" -h "$keys/id_rsa" -o "AuthorizedKeysFile=$keys/authorized_keys" 2>"$keys/sshd.log" &
pid=$!
rsh="-i $keys/id_rsa${SSH_CONFIG:+ -F $SSH_CONFIG}"
i=0
# shellcheck disable=SC2086  # $rsh holds options
until ssh $rsh 127.0.0.2 true 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 50 ]; then
        echo "mpi ssh check: sshd on 127.0.0.2 did not let us in:" >&2
        cat "$keys/sshd.log" >&2
        exit 1
    fi
    sleep 0.2
done
# shellcheck disable=SC2086
ssh $rsh 127.0.0.2 'command -v orted >/dev/null' || { echo "mpi ssh check: no orted on the ssh session's PATH" >&2; exit 1; }
exports=""
for name in PATH PYTHONPATH LD_LIBRARY_PATH; do
    if [ -n "$(printenv "$name" || true)" ]; then exports="$exports -x $name"; fi
done
# shellcheck disable=SC2086  # $exports holds options
OMPI_MCA_plm_rsh_args="$rsh" OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_hwloc_base_binding_policy=none \
    mpirun -np 2 --host 127.0.0.2:2 $exports "$PYTHON" -c '
import os
from mpi4py import MPI
c = MPI.COMM_WORLD
total = c.allreduce(c.rank + 1)
assert total == 3 and os.environ.get("SSH_CONNECTION"), (total, "not started over ssh")
print(f"mpi ssh check: rank {c.rank} of {c.size} (uid {os.getuid()}) started over ssh, allreduce {total}")
'
