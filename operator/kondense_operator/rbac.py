"""The operator's API rights, as data: the single source for the Helm chart's Role/ClusterRole.

NAMESPACED_RULES are needed in every namespace the operator watches (a Role per namespace, or a
ClusterRole bound cluster-wide with --all-namespaces). CLUSTER_RULES are needed cluster-wide
whatever the scope. Exact verbs, no wildcards, no Secrets. Found by logging every request the
operator (kopf included) made against the kmock API emulator (tests/operator/test_operator.py::test_rbac_rules_cover_exactly_what_the_operator_calls keeps
this list complete and minimal):

- kopf lists and watches the CompressionJobs, patches them (its progress annotations) and posts
  core v1 Events; it runs standalone (no peering objects) with CRD/namespace scanning disabled,
  so it needs no rights on CRDs or namespaces. API discovery (/apis) is open to every
  authenticated user (system:discovery) and needs no rule.
- the reconcile loop reads CompressionJobs and patches their status; creates and reads the
  stage children (Services, ConfigMaps, Jobs) and patches Jobs (spec.suspend); lists and watches
  Jobs and Pods (read only) to follow the stages.
"""

from __future__ import annotations

NAMESPACED_RULES: list[dict] = [
    {"apiGroups": ["kondense.dev"], "resources": ["compressionjobs"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["kondense.dev"], "resources": ["compressionjobs/status"], "verbs": ["patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]

CLUSTER_RULES: list[dict] = []
