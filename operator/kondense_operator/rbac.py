"""The operator's API rights, as data: the single source for the Helm chart's Role/ClusterRole.

NAMESPACED_RULES are needed in every namespace the operator watches (a Role per namespace, or a
ClusterRole bound cluster-wide with --all-namespaces). CLUSTER_RULES are needed cluster-wide
whatever the scope. MPIJOB_RULES are namespaced rules too, needed only where the worker config's
mpiJob.enabled runs backend mpi as Kubeflow MPIJobs (the chart adds them with
workers.mpiJob.enabled, and only then). Exact verbs, no wildcards, no Secrets. Found by logging every request the
operator (kopf included) made against the kmock API emulator (tests/operator/test_operator.py::test_rbac_rules_cover_exactly_what_the_operator_calls keeps
this list complete and minimal):

- kopf lists and watches the CompressionJobs, patches them (its progress annotations and its
  finalizer, which the re-check timer and the on.delete handler need) and posts
  core v1 Events; it runs standalone (no peering objects) with CRD/namespace scanning disabled,
  so it needs no rights on CRDs or namespaces. API discovery (/apis) is open to every
  authenticated user (system:discovery) and needs no rule.
- the reconcile loop reads CompressionJobs and patches their status; creates and reads the
  stage children (Services, ConfigMaps, Jobs) and patches Jobs (spec.suspend); lists and watches
  Jobs and Pods (read only) to follow the stages; deletes the children of a deleted
  CompressionJob (its on.delete handler) before letting its finalizer go; reads the tail of a
  running stage's rank-0 pod log (pods/log) for status.progress (progress.py).
- backend mpi: the reconcile loop creates and reads a stage's MPIJob and patches it
  (spec.runPolicy.suspend), and deletes it with its CompressionJob; kopf lists and watches MPIJobs
  to follow the stages. The MPI operator
  makes the pods, the launcher Job, the Service and the ssh Secret itself, under its own account.
- `update` on compressionjobs/finalizers: never called (OWNER_REFERENCE_RULES says why).
- peering (--peering, the chart's operator.replicas above 1): kopf lists and watches its peering
  object and patches its status with its keep-alives; the operator creates it at start where
  missing (handlers.ensure_peering_objects; a 409 from another replica is fine). A
  KopfPeering in every watched namespace (PEERING_RULES, namespaced) or, with --all-namespaces, one
  ClusterKopfPeering (CLUSTER_PEERING_RULES, cluster-wide): peering_rules says which.
  tests/operator/test_peering.py checks these against the requests of two peering operators.
"""

from __future__ import annotations

NAMESPACED_RULES: list[dict] = [
    {"apiGroups": ["kondense.dev"], "resources": ["compressionjobs"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["kondense.dev"], "resources": ["compressionjobs/status"], "verbs": ["patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "delete"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["kondense.dev"], "resources": ["compressionjobs/finalizers"], "verbs": ["update"]},
]

# Rights the operator needs but never exercises as a request of its own: the API server checks
# them while admitting another write. Every child (Job, Service, ConfigMap, MPIJob) carries an
# owner reference to its CompressionJob with blockOwnerDeletion: true (children.owner_reference),
# and where the OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift enables
# it) setting that flag requires `update` on the owner's finalizers subresource: without it
# every child's create is refused with 403. A request log cannot show this right in use, so
# tests/operator/test_operator.py::test_rbac_rules_cover_exactly_what_the_operator_calls takes
# exactly these triples (apiGroup, resource, verb) as granted but unused, and checks the
# children still set the flag.
OWNER_REFERENCE_RULES: frozenset[tuple[str, str, str]] = frozenset(
    {("kondense.dev", "compressionjobs/finalizers", "update")}
)

CLUSTER_RULES: list[dict] = []

MPIJOB_RULES: list[dict] = [
    {
        "apiGroups": ["kubeflow.org"],
        "resources": ["mpijobs"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
]


def namespaced_rules(mpi_job: bool) -> list[dict]:
    """The rules of every watched namespace, with MPIJOB_RULES where backend mpi is enabled."""
    return NAMESPACED_RULES + (MPIJOB_RULES if mpi_job else [])


# kopf's peering (--peering): its observer lists and watches the peering objects, its keep-alive
# patches one (status: {identity: {priority, lifetime, lastseen}}); the operator creates it at
# start (kopf creates none). Granted only where the chart runs more than one replica.
PEERING_RULES: list[dict] = [
    {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["create", "list", "watch", "patch"]},
]
CLUSTER_PEERING_RULES: list[dict] = [
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["create", "list", "watch", "patch"]},
]


def peering_rules(clusterwide: bool) -> list[dict]:
    """The peering rights of an operator run with --peering: on the ClusterKopfPeering (a cluster
    rule) with --all-namespaces, else on the KopfPeering of every watched namespace (namespaced)."""
    return CLUSTER_PEERING_RULES if clusterwide else PEERING_RULES
