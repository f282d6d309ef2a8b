#!/usr/bin/env python3
"""Writes charts/kondense/files/rbac.yaml, the operator's API rights as the Helm chart reads them,
from operator/kondense_operator/rbac.py (NAMESPACED_RULES, CLUSTER_RULES, MPIJOB_RULES, PEERING_RULES,
CLUSTER_PEERING_RULES), the single source.

    python scripts/sync-rbac.py        (make sync-rbac; make deploy-manifests runs it)

tests/test_chart.py fails while the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))  # the source tree's rbac.py, whatever is installed

from kondense_operator import rbac  # noqa: E402

HEADER = (
    "# Generated from operator/kondense_operator/rbac.py by `make sync-rbac`; do not edit.\n"
    "# namespaced: the rules the operator needs in every watched namespace (Role, or ClusterRole with\n"
    "# watch.scope all); cluster: the rules it needs cluster-wide whatever the scope (ClusterRole);\n"
    "# mpijob: namespaced rules added only with workers.mpiJob.enabled (backend mpi as Kubeflow MPIJobs);\n"
    "# peering / clusterPeering: added only with operator.replicas above 1 (kopf peering), namespaced\n"
    "# rules in every watched namespace / cluster rules with watch.scope all.\n"
)


def render() -> str:
    data = {
        "namespaced": rbac.NAMESPACED_RULES,
        "cluster": rbac.CLUSTER_RULES,
        "mpijob": rbac.MPIJOB_RULES,
        "peering": rbac.PEERING_RULES,
        "clusterPeering": rbac.CLUSTER_PEERING_RULES,
    }
    return HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def main() -> None:
    target = ROOT / "charts" / "kondense" / "files" / "rbac.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render())
    print(f"sync-rbac: wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
