"""The Helm chart, the plain manifests in deploy/, the examples and the Dockerfile, checked with
the real helm (v4) and kubectl binaries that `make helm` installs: `helm lint --strict`,
`helm template` for every watch scope, and schema checks of every rendered object."""

from __future__ import annotations

import functools
import sys

import jsonschema
import pytest
import yaml

from kondense.job import spec as spec_mod
from kondense_operator.config import WorkerConfig, load_worker_config, worker_config_schema

from .chart_util import (
    CHART,
    CHART_CRD,
    CRD,
    DEPLOY,
    EXAMPLES,
    NAMESPACE,
    RELEASE,
    ROOT,
    by_kind,
    default_values,
    load_all,
    name_of,
    one,
    render,
    rule_triples,
    run,
    template,
    tool,
    validate_any,
    validate_compressionjob,
    values_schema,
)

# name -> --set arguments ("str:" -> --set-string); every case is linted, rendered and checked
CASES = {
    "default": [],
    "namespace": ["watch.scope=namespace"],
    "list": ["watch.scope=list", "watch.namespaces={team-a,team-b}"],
    "all": ["watch.scope=all", "workers.zooCache.existingClaim=zoo-weights"],
    "monitoring+cache": [
        "watch.scope=namespace",
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        "workers.zooCache.create=true",
        "workers.zooCache.storageClass=fast",
        "str:workers.gpu.nodeSelector.nvidia\\.com/gpu\\.present=true",
        "workers.gpu.tolerations[0].key=nvidia.com/gpu",
        "workers.gpu.tolerations[0].operator=Exists",
        "workers.gpu.tolerations[0].effect=NoSchedule",
        "workers.resources.requests.cpu=2",
        "operator.image.tag=v9",
        "logLevel=debug",
    ],
    "list+cache+monitoring": [
        "watch.scope=list",
        "watch.namespaces={ml}",
        "workers.zooCache.create=true",
        "metrics.serviceMonitor.enabled=true",
        "workers.serviceAccount.name=ml-worker",
    ],
    "workers": [
        "watch.scope=namespace",
        "workers.image.repository=reg.example.com/ml/kondense",
        "workers.image.tag=1.2.3",
        "workers.image.pullPolicy=Always",
        "workers.serviceAccount.name=ml-worker",
        "workers.zooCache.existingClaim=zoo-weights",
        "str:workers.nodeSelector.pool=cpu",
        "workers.tolerations[0].key=dedicated",
        "workers.tolerations[0].operator=Equal",
        "workers.tolerations[0].value=ml",
        "workers.tolerations[0].effect=NoSchedule",
        "workers.resources.requests.cpu=500m",
        "workers.resources.limits.memory=8Gi",
        "workers.port=23456",
        "workers.backoffLimit=2",
    ],
    # backend mpi as Kubeflow MPIJobs: the switch, and the rights on mpijobs with it
    "mpi": [
        "workers.mpiJob.enabled=true",
        "workers.mpiJob.launcherResources.requests.cpu=500m",
        "workers.mpiJob.launcherResources.requests.memory=1Gi",
    ],
    # the platform settings (tests/test_chart_platform.py checks each in detail)
    "platform": [
        "networkPolicy.enabled=true",
        "networkPolicy.apiServer.cidrs={10.0.0.10/32}",
        "crds.keep=false",
        "rbac.aggregateToDefaultRoles=false",
        "operator.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
        "operator.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey=kubernetes.io/hostname",
    ],
    "mpi+list": [
        "watch.scope=list",
        "watch.namespaces={team-a,team-b}",
        "workers.mpiJob.enabled=true",
        "workers.mpiJob.sshAuthMountPath=/home/mpiuser/.ssh",
    ],
}
# what the "workers" case's worker config must load as
WORKERS_CASE = WorkerConfig(
    image="reg.example.com/ml/kondense:1.2.3",
    image_pull_policy="Always",
    service_account_name="ml-worker",
    zoo_cache_claim="zoo-weights",
    node_selector={"pool": "cpu"},
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    resources={"requests": {"cpu": "500m"}, "limits": {"memory": "8Gi"}},
    port=23456,
    backoff_limit=2,
)
# what the "mpi" case's worker config must load as
MPI_CASE = WorkerConfig(
    mpi_job={
        "enabled": True,
        "sshAuthMountPath": "/home/kondense/.ssh",
        "launcherResources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
    }
)
# the chart's `workers` value behind each worker config key but image (repository and tag, chart-only)
WORKER_VALUES = {
    "imagePullPolicy": "image.pullPolicy",
    "serviceAccountName": "serviceAccount.name",
    "zooCacheClaim": "zooCache.existingClaim",
    "nodeSelector": "nodeSelector",
    "tolerations": "tolerations",
    "gpuNodeSelector": "gpu.nodeSelector",
    "gpuTolerations": "gpu.tolerations",
    "resources": "resources",
    "port": "port",
    "backoffLimit": "backoffLimit",
    "mpiJob": "mpiJob",
    "imagePullSecrets": "imagePullSecrets",
    "podAnnotations": "podAnnotations",
    "podLabels": "podLabels",
    "priorityClassName": "priorityClassName",
    "schedulerName": "schedulerName",
    "env": "env",
    "podSecurityContext": "podSecurityContext",
    "shmSizeLimit": "shmSizeLimit",
}
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def sets(case: str) -> list[str]:
    out: list[str] = []
    for s in CASES[case]:
        out += ["--set-string", s[4:]] if s.startswith("str:") else ["--set", s]
    return out


@functools.cache
def rendered(case: str) -> tuple[dict, ...]:
    return tuple(render(*sets(case)))


def objects(case: str) -> list[dict]:
    return [o for o in rendered(case) if o["kind"] != "CustomResourceDefinition"]


def mpi_enabled(case: str) -> bool:
    return "workers.mpiJob.enabled=true" in CASES[case]


def watched(case: str) -> list[str] | None:
    """The namespaces a case watches; None for all."""
    scope = dict(s.split("=", 1) for s in CASES[case] if s.startswith("watch.scope=")).get("watch.scope", "all")
    if scope == "all":
        return None
    if scope == "namespace":
        return [NAMESPACE]
    (ns,) = [s.split("=", 1)[1] for s in CASES[case] if s.startswith("watch.namespaces=")]
    return ns.strip("{}").split(",")


def worker_config_text(case: str) -> str:
    cm = [o for o in objects(case) if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-worker-config")]
    assert len(cm) == 1
    return cm[0]["data"]["worker.yaml"]


def worker_config(case: str) -> dict:
    return yaml.safe_load(worker_config_text(case))


def user_access(obj: dict) -> bool:
    """A ClusterRole aggregated into the default user roles (rbac.aggregateToDefaultRoles)."""
    return obj["metadata"]["labels"].get("app.kubernetes.io/component") == "user-access"


def deployment(case: str) -> dict:
    return one(objects(case), "Deployment")


# ---------------------------------------------------------------------------------------------
# the chart as helm sees it


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("kondense", "0.1.0", "0.1.0")
    version = run([tool("helm"), "version", "--short"]).stdout
    assert version.startswith("v4."), version


@pytest.mark.parametrize("case", CASES)
def test_lint_strict(case):
    result = run([tool("helm"), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *sets(case)], check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("case", CASES)
def test_rendered_objects_validate(case):
    objs = rendered(case)
    assert objs
    for obj in objs:
        validate_any(obj)
    names = [name_of(o) for o in objs]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


@pytest.mark.parametrize("case", CASES)
def test_standard_labels(case):
    for obj in objects(case):
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in LABELS if k not in labels]
        assert not missing, f"{name_of(obj)} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{name_of(obj)} has no namespace"


def test_chart_crd_is_the_repository_crd():
    assert CRD.is_file(), "crds/compressionjob.yaml is missing"
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), (
        "charts/kondense/files/crd.yaml differs from crds/compressionjob.yaml: run `make sync-crd`"
    )
    assert not (CHART / "crds").exists(), "Helm never upgrades crds/: the CRD is a template"
    (crd,) = by_kind(list(rendered("default")), "CustomResourceDefinition")
    source = yaml.safe_load(CRD.read_text())
    # the chart adds labels and the keep annotation, nothing else (tests/test_chart_platform.py)
    assert {k: v for k, v in crd.items() if k != "metadata"} == {k: v for k, v in source.items() if k != "metadata"}
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()


# ---------------------------------------------------------------------------------------------
# RBAC


@pytest.mark.parametrize("case", CASES)
def test_rbac_least_privilege(case):
    roles = by_kind(objects(case), "Role") + by_kind(objects(case), "ClusterRole")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            where = f"{name_of(role)} rule {rule}"
            assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"{where}: only apiGroups/resources/verbs"
            assert rule["apiGroups"] and rule["resources"] and rule["verbs"], where
            for key in ("apiGroups", "resources", "verbs"):
                assert not any("*" in x for x in rule[key]), f"{where}: wildcard in {key}"
            assert not {"secrets", "secrets/status"} & set(rule["resources"]), f"{where}: Secrets"
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), where
            assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "update", "patch", "delete"}, where
            if "pods" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, f"{where}: pods are read-only"


def test_chart_rbac_file_is_the_operators():
    from kondense_operator import rbac

    chart = yaml.safe_load((CHART / "files" / "rbac.yaml").read_text())
    assert chart == {
        "namespaced": rbac.NAMESPACED_RULES,
        "cluster": rbac.CLUSTER_RULES,
        "mpijob": rbac.MPIJOB_RULES,
        "peering": rbac.PEERING_RULES,
        "clusterPeering": rbac.CLUSTER_PEERING_RULES,
    }, "charts/kondense/files/rbac.yaml differs from operator/kondense_operator/rbac.py: run `make deploy-manifests`"


@pytest.mark.parametrize("case", CASES)
def test_rbac_matches_operator(case):
    """The chart grants exactly what operator/kondense_operator/rbac.py says the operator needs: the
    rights on mpijobs with workers.mpiJob.enabled, and only then."""
    from kondense_operator import rbac

    namespaced = rule_triples(rbac.namespaced_rules(mpi_enabled(case)))
    cluster = rule_triples(rbac.CLUSTER_RULES)
    assert any(g == "kubeflow.org" for g, _, _ in namespaced) == mpi_enabled(case)
    objs = objects(case)
    roles = {r["metadata"]["namespace"]: rule_triples(r["rules"]) for r in by_kind(objs, "Role")}
    # the users' roles aggregated into admin/edit/view are bound by nothing of the chart's
    # (tests/test_chart_platform.py checks them)
    cluster_roles = [rule_triples(r["rules"]) for r in by_kind(objs, "ClusterRole") if not user_access(r)]
    ns = watched(case)
    if ns is None:
        assert roles == {}
        assert cluster_roles == [namespaced | cluster]
    else:
        assert roles == {n: namespaced for n in ns}
        assert cluster_roles == ([cluster] if cluster else [])
    # every Role is bound to the operator's ServiceAccount, and nothing else is bound
    sa = one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    bindings = by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding")
    assert len(bindings) == len(roles) + len(cluster_roles)
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}], name_of(b)
        target = b["roleRef"]
        assert target["kind"] == ("Role" if b["kind"] == "RoleBinding" else "ClusterRole")
        assert any(
            r["metadata"]["name"] == target["name"]
            and r["kind"] == target["kind"]
            and r["metadata"].get("namespace") == b["metadata"].get("namespace")
            for r in objs
        )


@pytest.mark.parametrize("case", CASES)
def test_worker_service_account(case):
    objs = objects(case)
    cfg = worker_config(case)
    workers = [
        o
        for o in by_kind(objs, "ServiceAccount")
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]
    ns = watched(case)
    if ns is None:
        # the chart cannot create it in every namespace: the namespace default, token not mounted
        assert workers == []
        assert cfg["serviceAccountName"] == ""
        return
    assert sorted(o["metadata"]["namespace"] for o in workers) == sorted(ns)
    names = {o["metadata"]["name"] for o in workers}
    assert names == {cfg["serviceAccountName"]}
    for sa in workers:
        assert sa["automountServiceAccountToken"] is False
    for b in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding"):
        assert not any(s.get("name") in names and s["kind"] == "ServiceAccount" for s in b["subjects"]), (
            f"{name_of(b)} gives the workers' ServiceAccount API rights"
        )


# ---------------------------------------------------------------------------------------------
# the operator's pod


@pytest.mark.parametrize("case", CASES)
def test_pod_security(case):
    dep = deployment(case)
    pod = dep["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1000) != 0
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc.get("privileged") is not True
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


@pytest.mark.parametrize("case", CASES)
def test_operator_deployment(case):
    dep = deployment(case)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # kopf standalone: never two at once
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["kondense-operator"]
    args = c["args"]
    ns = watched(case)
    if ns is None:
        assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)
    else:
        assert "--all-namespaces" not in args
        assert [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")] == ns
    assert "--metrics-port=9090" in args and "--health-port=8080" in args
    assert "--forbidden-retry-seconds=300" in args  # what the operator's own default is
    assert "--recheck-seconds=30" in args  # the operator's own default too
    assert "--worker-config=/etc/kondense-operator/worker.yaml" in args
    assert ("--verbose" in args) == ("logLevel=debug" in CASES[case])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/kondense-operator")
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    cm = [o for o in objects(case) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]]
    assert len(cm) == 1 and "worker.yaml" in cm[0]["data"]
    # the metrics Service reaches this pod's metrics port
    svc = one(objects(case), "Service")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]


@pytest.mark.parametrize("case", CASES)
def test_operator_accepts_its_command_line(case, tmp_path):
    """kondense-operator's own parser takes the Deployment's arguments and the mounted worker config."""
    from kondense_operator.cli import parse_config

    (c,) = deployment(case)["spec"]["template"]["spec"]["containers"]
    worker_yaml = tmp_path / "worker.yaml"
    worker_yaml.write_text(yaml.safe_dump(worker_config(case)))
    args = [f"--worker-config={worker_yaml}" if a.startswith("--worker-config=") else a for a in c["args"]]
    config, _ = parse_config(args)
    assert config.namespaces == tuple(watched(case) or ())
    assert config.clusterwide == (watched(case) is None)
    assert (config.metrics_port, config.health_port) == (9090, 8080)
    assert config.worker.image == worker_config(case)["image"]


@pytest.mark.parametrize("case", CASES)
def test_worker_config(case, tmp_path):
    """The rendered worker config sets every key of the operator's worker-config schema, meets that
    schema, and loads through the operator's own loader as the values say."""
    cfg = worker_config(case)
    schema = worker_config_schema()
    assert set(cfg) == set(schema["properties"])
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(cfg)
    ]
    assert not errors, errors
    path = tmp_path / "worker.yaml"
    path.write_text(worker_config_text(case))
    parsed = load_worker_config(path)
    values = dict(s.split("=", 1) for s in CASES[case])
    if case == "default":  # the chart's defaults are the operator's, image included
        assert parsed == WorkerConfig()
    elif case == "workers":
        assert parsed == WORKERS_CASE
    elif case == "mpi":
        assert parsed == MPI_CASE and parsed.mpi_enabled
    else:
        assert parsed.image == f"ghcr.io/kondense/kondense-worker:{values.get('operator.image.tag', '0.1.0')}"
        assert parsed.port == WorkerConfig().port
        assert parsed.mpi_enabled == mpi_enabled(case)
    if case == "mpi+list":
        assert parsed.mpi_job == {"enabled": True, "sshAuthMountPath": "/home/mpiuser/.ssh", "launcherResources": {}}
    claims = {
        o["metadata"]["namespace"]: o["metadata"]["name"] for o in by_kind(objects(case), "PersistentVolumeClaim")
    }
    if values.get("workers.zooCache.create") == "true":
        assert claims == {n: parsed.zoo_cache_claim for n in watched(case)}
        assert parsed.zoo_cache_claim == f"{RELEASE}-zoo-cache"
    else:
        assert claims == {}
        assert parsed.zoo_cache_claim == values.get("workers.zooCache.existingClaim", "")
    if case == "monitoring+cache":
        assert parsed.gpu_node_selector == {"nvidia.com/gpu.present": "true"}
        assert parsed.gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert parsed.resources == {"requests": {"cpu": 2}}


def test_forbidden_retry_reaches_the_operators_own_parser():
    from kondense_operator.cli import build_parser

    dep = one(render("--set-json", "operator.forbiddenRetrySeconds=45.5"), "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert build_parser().parse_args(c["args"]).forbidden_retry_seconds == 45.5


def test_recheck_reaches_the_operators_own_parser():
    from kondense_operator.cli import build_parser

    dep = one(render("--set-json", "operator.recheckSeconds=7.5"), "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert build_parser().parse_args(c["args"]).recheck_seconds == 7.5


def test_service_monitor():
    objs = objects("monitoring+cache")
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert by_kind(objects("default"), "ServiceMonitor") == []


# ---------------------------------------------------------------------------------------------
# values.schema.json


@pytest.mark.parametrize(
    "bad,field",
    [
        (["watch.scope=bogus"], "/watch/scope"),
        (["watch.scope=list"], "/watch/namespaces"),
        (["watch.scope=list", "watch.namespaces={Bad_Name}"], "/watch/namespaces/0"),
        (["metrics.port=-1"], "/metrics/port"),
        (["metrics.port=70000"], "/metrics/port"),
        (["operator.healthPort=abc"], "/operator/healthPort"),
        (["operator.forbiddenRetrySeconds=0"], "/operator/forbiddenRetrySeconds"),
        (["operator.forbiddenRetrySeconds=soon"], "/operator/forbiddenRetrySeconds"),
        (["operator.recheckSeconds=0"], "/operator/recheckSeconds"),
        (["operator.recheckSeconds=often"], "/operator/recheckSeconds"),
        (["workers.port=0"], "/workers/port"),
        (["logLevel=loud"], "/logLevel"),
        (["logLevel=warning"], "/logLevel"),
        (["operator.image.pullPolicy=Sometimes"], "/operator/image/pullPolicy"),
        (["operator.image.repository="], "/operator/image/repository"),
        (["workers.zooCache.size=lots"], "/workers/zooCache/size"),
        (["workers.zooCache.create=true"], "/workers/zooCache/create"),  # scope all: no claim in every namespace
        (["metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"], "/metrics/service/enabled"),
        (["workers.gpu.tolerations[0].operator=Maybe"], "/workers/gpu/tolerations/0/operator"),
        (["workers.image.pullPolicy=always"], "/workers/image/pullPolicy"),
        (["workers.backoffLimit=-1"], "/workers/backoffLimit"),
        (["workers.mpiJob.enabled=yes"], "/workers/mpiJob/enabled"),
        (["workers.mpiJob.sshAuthMountPath=.ssh"], "/workers/mpiJob/sshAuthMountPath"),
        (["workers.mpiJob.launcherResources.limits.cpu=lots"], "/workers/mpiJob/launcherResources/limits/cpu"),
        (["workers.mpiJob.mpiImplementation=Intel"], "mpiImplementation"),
        (["workers.resources.limits.memory=lots"], "/workers/resources/limits/memory"),
        (["workers.zooCache.size=10"], "/workers/zooCache/size"),  # a quantity, but a PVC size is a string
        (["workers.zooCache.existingClaim=Zoo_Cache"], "/workers/zooCache/existingClaim"),
        (["operator.resources.requests.cpu=lots"], "/operator/resources/requests/cpu"),
        (["workers.nodeSelecter.a=b"], "nodeSelecter"),
        (["watch.scopes=all"], "scopes"),
    ],
)
def test_bad_values_fail_install(bad, field):
    args = []
    for s in bad:
        args += ["--set", s]
    result = template(*args, check=False)
    assert result.returncode != 0, f"helm accepted {bad}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


def test_values_schema_directly():
    schema = values_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = default_values()
    assert not list(validator.iter_errors(defaults))

    def errors(**patch) -> list[str]:
        values = yaml.safe_load(yaml.safe_dump(defaults))
        for dotted, value in patch.items():
            *path, last = dotted.split("__")
            node = values
            for p in path:
                node = node.setdefault(p, {})
            node[last] = value
        return ["/".join(map(str, e.absolute_path)) + ": " + e.message for e in validator.iter_errors(values)]

    assert errors(watch__scope="list", watch__namespaces=["a", "b"]) == []
    assert any(e.startswith("watch/scope") for e in errors(watch__scope="cluster"))
    assert errors(watch__scope="list")  # no namespaces
    assert any(e.startswith("metrics/port") for e in errors(metrics__port=-5))
    assert any(e.startswith("metrics/port") for e in errors(metrics__port="9090"))  # a string is not a port
    # standby replicas (kopf peering) are allowed; fewer than one pod, or a string, is not
    assert errors(operator__replicas=2) == []
    assert any(e.startswith("operator/replicas") for e in errors(operator__replicas=0))
    assert any(e.startswith("operator/replicas") for e in errors(operator__replicas="2"))
    assert any(e.startswith("workers/serviceAccount/create") for e in errors(workers__serviceAccount__create="yes"))
    assert errors(workers__zooCache__create=True)  # scope all
    assert errors(watch__scope="namespace", workers__zooCache__create=True) == []


def test_values_schema_is_synced(tmp_path):
    out = tmp_path / "values.schema.json"
    run([sys.executable, str(ROOT / "scripts" / "sync-values-schema.py"), str(out)])
    assert out.read_text() == (CHART / "values.schema.json").read_text(), (
        "charts/kondense/values.schema.json differs from the worker config schema: run `make sync-values-schema`"
    )


def test_worker_values_share_the_worker_config_definitions():
    """Each `workers` value the chart copies into the worker config is declared by the same
    definition as its worker config key, so the chart refuses at install what the operator would."""
    worker = worker_config_schema()
    assert set(WORKER_VALUES) | {"image"} == set(worker["properties"]), "a worker config key the chart does not set"
    values = values_schema()
    for key, dotted in WORKER_VALUES.items():
        node = values["properties"]["workers"]
        for part in dotted.split("."):
            node = node["properties"][part]
        assert [node] == worker["properties"][key]["allOf"], f"workers.{dotted} is not declared like {key}"
        name = node["$ref"].rsplit("/", 1)[1]
        assert values["definitions"][name] == {
            "$comment": values["definitions"][name]["$comment"],
            **worker["definitions"][name],
        }


# ---------------------------------------------------------------------------------------------
# deploy/ (kubectl apply -k deploy/)


def test_deploy_is_the_rendered_chart(tmp_path):
    out = tmp_path / "deploy"
    run(["bash", str(ROOT / "scripts" / "render-deploy.sh"), str(out)])
    fresh = {p.name: p.read_text() for p in out.glob("*.yaml")}
    committed = {p.name: p.read_text() for p in DEPLOY.glob("*.yaml")}
    assert sorted(committed) == sorted(fresh), (
        "deploy/ has other files than the chart renders: run `make deploy-manifests`"
    )
    stale = [n for n in fresh if fresh[n] != committed[n]]
    assert not stale, f"deploy/{stale} differ from the rendered chart: run `make deploy-manifests`"


def test_deploy_kustomization():
    result = run([tool("kubectl"), "kustomize", str(DEPLOY)])
    objs = load_all(result.stdout)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRole",  # users' access, aggregated into edit (and admin)
            "ClusterRole",  # and into view
            "ClusterRoleBinding",
            "Service",
            "Deployment",
        ]
    ), kinds
    ns = one(objs, "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        validate_any(obj)
        if obj["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, name_of(obj)
        if obj["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubectl"

    # the same objects as helm's, labels aside
    def strip(o):
        o = yaml.safe_load(yaml.safe_dump(o))
        o["metadata"].get("labels", {}).pop("app.kubernetes.io/managed-by", None)
        tpl = o.get("spec", {}).get("template", {}).get("metadata", {})
        tpl.get("labels", {}).pop("app.kubernetes.io/managed-by", None)
        tpl.get("annotations", {}).pop("checksum/worker-config", None)
        return o

    helm_objs = sorted((strip(o) for o in rendered("default")), key=name_of)
    assert helm_objs == sorted((strip(o) for o in objs if o["kind"] != "Namespace"), key=name_of)


# ---------------------------------------------------------------------------------------------
# examples


EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example(name):
    docs = load_all((EXAMPLES / name).read_text())
    assert docs
    for doc in docs:
        if doc["kind"] == "CompressionJob":
            validate_compressionjob(doc)
            job = spec_mod.parse(doc)
            if name != "local-stage2.yaml":  # the one for `kondense run`, on one machine
                assert job.spec.output_uri.startswith("pvc://"), "the operator writes outputs to a claim"
                assert "namespace" not in doc["metadata"], "examples run in the namespace kubectl picks"
        elif doc["kind"] == "Application":
            assert doc["apiVersion"] == "argoproj.io/v1alpha1"
            src = doc["spec"]["source"]
            assert src["path"] == "charts/kondense" and src["repoURL"].endswith(".git")
            assert {"CreateNamespace=true", "ServerSideApply=true"} <= set(doc["spec"]["syncPolicy"]["syncOptions"])
            assert doc["spec"]["destination"]["namespace"] == NAMESPACE
            # its values are valid chart values
            merged = default_values()
            for key, value in src["helm"]["valuesObject"].items():
                merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
            assert not list(jsonschema.Draft7Validator(values_schema()).iter_errors(merged))
        elif doc["apiVersion"].split("/")[0].endswith(".toolkit.fluxcd.io"):
            # no schema here for Flux's kinds: tests/test_chart_platform.py checks them field by field
            assert name == "flux-helmrelease.yaml", f"{name}: a Flux object the tests do not check"
        else:
            validate_any(doc)


def test_examples_cover_the_documented_cases():
    jobs = {}
    for name in EXAMPLE_FILES:
        for doc in load_all((EXAMPLES / name).read_text()):
            if doc["kind"] == "CompressionJob":
                jobs[name] = spec_mod.parse(doc).spec
    assert jobs["resnet18-stage1.yaml"].stage == 1 and jobs["resnet18-stage1.yaml"].model.zoo == "resnet18"
    assert jobs["vgg19-stage2.yaml"].stage == 2 and jobs["vgg19-stage2.yaml"].model.zoo == "vgg19"
    gpu = jobs["resnet50-gpu-horovod.yaml"]
    assert (gpu.workers, gpu.slots_per_worker, gpu.device, gpu.backend) == (2, 4, "cuda", "horovod")
    mine = jobs["user-model-pvc.yaml"]
    assert mine.model.uri.startswith("pvc://models/") and mine.model.arch and mine.data.uri.startswith("pvc://")
    tv = jobs["torchvision-pvc.yaml"]
    assert tv.model.torchvision and tv.model.uri.startswith("pvc://") and tv.data.input_size == (224, 224)
    mpi = jobs["resnet18-mpi.yaml"]
    assert (mpi.backend, mpi.workers, mpi.slots_per_worker) == ("mpi", 2, 2) and mpi.output_uri.startswith("pvc://")
    factory = jobs["factory-pvc.yaml"]
    assert factory.model.factory and factory.model.code_uri.startswith("pvc://code/") and factory.model.uri
    claims = {
        o["metadata"]["name"]
        for name in EXAMPLE_FILES
        for o in load_all((EXAMPLES / name).read_text())
        if o["kind"] == "PersistentVolumeClaim"
    }
    assert "models" in claims


def test_crd_schema_check_catches_mistakes():
    """The CRD check used on the examples is not vacuous."""
    good = load_all((EXAMPLES / "resnet18-stage1.yaml").read_text())[0]
    validate_compressionjob(good)
    for spec_patch in (
        {"delta": -1},
        {"delat": 1},
        {"backend": "nccl"},
        {"model": {"torchvision": "resnet1", "uri": "b"}},
    ):
        bad = yaml.safe_load(yaml.safe_dump(good))
        bad["spec"].update(spec_patch)
        with pytest.raises(AssertionError):
            validate_compressionjob(bad)


# ---------------------------------------------------------------------------------------------
# the image, by reading


def test_makefile_targets():
    makefile = (ROOT / "Makefile").read_text()
    install = next(line for line in makefile.splitlines() if line.startswith("install:"))
    assert "helm" in install.split()
    for target in ("helm:", "image:", "sync-crd:", "sync-values-schema:", "deploy-manifests:", "lint:", "test-fast:"):
        assert any(line.startswith(target) for line in makefile.splitlines()), target
