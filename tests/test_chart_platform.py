"""The chart's settings for platform teams (issue #13), checked by rendering with the real helm:
the CRD across upgrades and uninstalls, users' access to CompressionJobs through the default
admin/edit/view roles, values the API server would refuse, the NetworkPolicy, the zoo cache's
name. tests/test_chart.py covers the chart's everyday cases; chart_util.py the helpers."""

from __future__ import annotations

import functools
import re

import pytest
import yaml

from .chart_util import (
    CHART,
    CRD,
    EXAMPLES,
    NAMESPACE,
    RELEASE,
    ROOT,
    by_kind,
    load_all,
    render,
    rule_triples,
    run,
    template,
    tool,
    validate_any,
)

CRD_NAME = "compressionjobs.kondense.dev"
KEEP = "helm.sh/resource-policy"


@functools.cache
def rendered(*sets: str) -> tuple[dict, ...]:
    args: list[str] = []
    for s in sets:
        args += ["--set", s]
    return tuple(render(*args))


def crds(*sets: str) -> list[dict]:
    return by_kind(list(rendered(*sets)), "CustomResourceDefinition")


# ---------------------------------------------------------------------------------------------
# the CRD across upgrades: a template (Helm upgrades templates, never a chart's crds/)


@pytest.mark.parametrize(
    "sets,installed,kept",
    [
        ((), True, True),  # the defaults: installed, upgraded, kept on uninstall
        (("crds.keep=false",), True, False),
        (("crds.install=false",), False, None),
        (("crds.install=false", "crds.keep=true"), False, None),
    ],
)
def test_crd_install_and_keep(sets, installed, kept):
    found = crds(*sets)
    if not installed:
        assert found == [], "crds.install=false renders no CRD"
        return
    (crd,) = found
    validate_any(crd)
    source = yaml.safe_load(CRD.read_text())
    assert crd["metadata"]["name"] == CRD_NAME
    assert crd["spec"] == source["spec"], "the chart's CRD is the repository's (make sync-crd)"
    labels = crd["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/instance"] == "kondense"
    annotations = crd["metadata"].get("annotations", {})
    assert (annotations.get(KEEP) == "keep") is kept
    assert set(crd["metadata"]) == {"name", "labels"} | ({"annotations"} if kept else set())


def test_crd_is_rendered_from_templates_not_crds_dir():
    """Without --include-crds helm still renders it: it is a template, so `helm upgrade` applies it."""
    out = template("--show-only", "templates/compressionjob-crd.yaml").stdout
    (crd,) = [d for d in yaml.safe_load_all(out) if d]
    assert crd["kind"] == "CustomResourceDefinition" and crd["metadata"]["name"] == CRD_NAME


# ---------------------------------------------------------------------------------------------
# users' access: ClusterRoles aggregated into Kubernetes' default admin, edit and view

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
WRITE = {"create", "update", "patch", "delete"}
READ = {"get", "list", "watch"}


def aggregated(objs) -> dict[str, set[tuple[str, str, str]]]:
    """default role (admin, edit, view) -> the rights the chart's ClusterRoles add to it."""
    out: dict[str, set[tuple[str, str, str]]] = {"admin": set(), "edit": set(), "view": set()}
    for role in by_kind(list(objs), "ClusterRole"):
        for label, value in role["metadata"]["labels"].items():
            if label.startswith(AGGREGATE) and value == "true":
                out[label[len(AGGREGATE) :]] |= rule_triples(role["rules"])
    return out


def test_users_get_compressionjobs_through_the_default_roles():
    objs = rendered()
    got = aggregated(objs)
    cpj = {("kondense.dev", "compressionjobs", v) for v in READ | WRITE}
    status = {("kondense.dev", "compressionjobs/status", v) for v in READ}
    assert got["edit"] == cpj | status
    assert got["admin"] == cpj | status
    assert got["view"] == {t for t in cpj | status if t[2] in READ}, "view reads, never writes"
    users = [
        r for r in by_kind(list(objs), "ClusterRole") if any(k.startswith(AGGREGATE) for k in r["metadata"]["labels"])
    ]
    for role in users:
        validate_any(role)
    # nothing binds them: Kubernetes copies their rules into admin/edit/view, bound by the cluster's admins
    names = {r["metadata"]["name"] for r in users}
    bindings = by_kind(list(objs), "ClusterRoleBinding") + by_kind(list(objs), "RoleBinding")
    assert not [b for b in bindings if b["roleRef"]["name"] in names]
    # and the operator's own roles aggregate into nothing
    for role in by_kind(list(objs), "ClusterRole"):
        if role not in users:
            assert not any(k.startswith(AGGREGATE) for k in role["metadata"]["labels"])


def test_user_roles_off():
    assert aggregated(rendered("rbac.aggregateToDefaultRoles=false")) == {"admin": set(), "edit": set(), "view": set()}


# ---------------------------------------------------------------------------------------------
# values the API server would refuse are refused at install, naming the value


@pytest.mark.parametrize(
    "bad,field",
    [
        # values.schema.json
        (["fullnameOverride=Kondense"], "/fullnameOverride"),
        (["fullnameOverride=1kondense"], "/fullnameOverride"),  # the Service is a DNS-1035 label
        (["fullnameOverride=" + "k" * 56], "/fullnameOverride"),  # + "-metrics" > 63
        (["nameOverride=kon_dense"], "/nameOverride"),
        (["nameOverride=" + "k" * 56], "/nameOverride"),
        (["operator.serviceAccount.name=Operator_SA"], "/operator/serviceAccount/name"),
        (["operator.affinity.nodeAfinity.x=1"], "nodeAfinity"),
        (["operator.affinity.podAntiAffinity=1"], "/operator/affinity/podAntiAffinity"),
        (["metrics.port=0", "metrics.serviceMonitor.enabled=true"], "/metrics/port"),  # nothing to scrape
        (["networkPolicy.apiServer.cidrs={10.0.0.1}"], "/networkPolicy/apiServer/cidrs/0"),  # no prefix length
        (["networkPolicy.metricsFrom.podSelector.matchLabel.a=b"], "matchLabel"),
        (["crds.keep=yes"], "/crds/keep"),
        (["rbac.aggregateToDefaultRoles=no"], "/rbac/aggregateToDefaultRoles"),
        # the chart's templates (templates/_validate.tpl): what one field's schema cannot see
        (["operator.healthPort=9090"], "operator.healthPort and metrics.port"),
        (["metrics.port=8080"], "operator.healthPort and metrics.port"),
        (["operator.resources.limits.memory=100Mi"], "operator.resources.limits.memory (100Mi) is below"),
        (["operator.resources.limits.cpu=0.04"], "operator.resources.limits.cpu (0.04) is below"),
        (["operator.resources.requests.cpu=2", "operator.resources.limits.cpu=1500m"], "limits.cpu (1500m) is below"),
        (["operator.resources.requests.memory=1G", "operator.resources.limits.memory=950Mi"], "limits.memory (950Mi)"),
        (["fullnameOverride=", "nameOverride=" + "k" * 55], "metrics Service's name"),  # release + name > 55
    ],
)
def test_refused_values_name_the_field(bad, field):
    args: list[str] = []
    for s in bad:
        args += ["--set", s]
    result = template(*args, check=False)
    assert result.returncode != 0, f"helm accepted {bad}"
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize(
    "good",
    [
        ["operator.resources.limits.cpu=50m"],  # equal to the request
        ["operator.resources.limits.cpu=1", "operator.resources.limits.memory=1Gi"],
        ["operator.resources.requests.memory=1G", "operator.resources.limits.memory=1Gi"],  # 1e9 < 2^30
        ["operator.resources.requests.cpu=1e-1", "operator.resources.limits.cpu=100m"],
        ["fullnameOverride=" + "k" * 55],
        ["operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms=null"],
    ],
)
def test_accepted_values(good):
    args: list[str] = []
    for s in good:
        args += ["--set", s]
    result = template(*args, check=False)
    assert result.returncode == 0, result.stderr


def test_metrics_port_zero_turns_metrics_off():
    from kondense_operator.cli import build_parser

    objs = list(rendered("metrics.port=0"))
    (dep,) = by_kind(objs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in c["ports"]] == ["health"], "no metrics port"
    assert "--metrics-port=0" in c["args"] and build_parser().parse_args(c["args"]).metrics_port == 0
    assert by_kind(objs, "Service") == [] and by_kind(objs, "ServiceMonitor") == []
    validate_any(dep)


# ---------------------------------------------------------------------------------------------
# the operator's NetworkPolicy (networkPolicy.enabled)


def _port_peers(rules: list[dict]) -> dict[int, list]:
    """port -> the peers a list of ingress/egress rules admits on it ([] = any peer)."""
    out: dict[int, list] = {}
    for rule in rules:
        for p in rule["ports"]:
            out.setdefault(p["port"], []).extend(rule.get("from", rule.get("to", [])))
    return out


def test_network_policy():
    assert by_kind(list(rendered()), "NetworkPolicy") == [], "off by default"
    objs = list(
        rendered(
            "networkPolicy.enabled=true",
            "networkPolicy.metricsFrom.namespaceSelector.matchLabels.team=monitoring",
            "networkPolicy.apiServer.cidrs={10.0.0.10/32,fd00::10/128}",
            "networkPolicy.apiServer.ports={6443}",
        )
    )
    (np,) = by_kind(objs, "NetworkPolicy")
    validate_any(np)
    (dep,) = by_kind(objs, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items(), "selects the operator's pod"
    assert np["metadata"]["namespace"] == dep["metadata"]["namespace"]
    assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # in: exactly the container's ports; metrics from the selected scrapers only, health from anyone (the kubelet)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    ingress = _port_peers(np["spec"]["ingress"])
    assert set(ingress) == set(ports.values())
    assert ingress[ports["metrics"]] == [
        {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}, "podSelector": {}}
    ]
    assert ingress[ports["health"]] == []
    # out: DNS to the DNS pods, the API server's endpoints, nothing else
    egress = _port_peers(np["spec"]["egress"])
    assert set(egress) == {53, 6443}
    assert egress[6443] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "fd00::10/128"}}]
    assert all(p["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}} for p in egress[53])
    assert {p["protocol"] for r in np["spec"]["egress"] for p in r["ports"] if p["port"] == 53} == {"UDP", "TCP"}


def test_network_policy_without_metrics():
    (np,) = by_kind(list(rendered("networkPolicy.enabled=true", "metrics.port=0")), "NetworkPolicy")
    validate_any(np)
    assert set(_port_peers(np["spec"]["ingress"])) == {8080}, "only the health port"
    assert _port_peers(np["spec"]["egress"])[443] == [], "no CIDR given: any address on the API server's ports"


# ---------------------------------------------------------------------------------------------
# the zoo cache's claim: one name in the chart, the examples, the docs and NOTES

ZOO_EXAMPLE = EXAMPLES / "zoo-cache.yaml"


def notes(*sets: str) -> str:
    """NOTES.txt as `helm install` prints it (a client-side dry run: no cluster needed)."""
    args = [tool("helm"), "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    for s in sets:
        args += ["--set", s]
    out = run(args).stdout
    assert "NOTES:" in out, out
    return out.split("NOTES:", 1)[1]


def zoo_examples() -> set[str]:
    """Example files with a CompressionJob of a zoo model (their weights come from the cache)."""
    return {
        p.name
        for p in EXAMPLES.glob("*.yaml")
        for d in load_all(p.read_text())
        if d.get("kind") == "CompressionJob" and "zoo" in d["spec"].get("model", {})
    }


def test_zoo_cache_claim_has_one_name():
    docs = load_all(ZOO_EXAMPLE.read_text())
    (claim,) = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    volumes = job["spec"]["template"]["spec"]["volumes"]
    mounted = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    assert mounted == {claim}
    # the claim the chart creates under the documented release name is the example's
    objs = rendered("watch.scope=namespace", "workers.zooCache.create=true")
    assert [p["metadata"]["name"] for p in by_kind(list(objs), "PersistentVolumeClaim")] == [claim]
    # every claim name the docs and examples hand to the chart or the worker config is that one
    named = []
    for path in [*EXAMPLES.glob("*.yaml"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        named += [
            (path.name, m)
            for m in re.findall(r"(?:existingClaim=|zooCacheClaim: )([a-z0-9][-a-z0-9.]*)", path.read_text())
        ]
    assert named and all(name == claim for _, name in named), named
    # `-l app.kubernetes.io/component=zoo-train` (NOTES, the example) selects the Job alone
    selected = [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "zoo-train"]
    assert selected == [job]


def test_notes_suggest_a_zoo_example_only_with_a_cache():
    zoo = zoo_examples()
    assert "resnet18-stage1.yaml" in zoo and "user-model-pvc.yaml" not in zoo
    cases = {
        (): False,  # no cache
        ("watch.scope=namespace", "workers.zooCache.create=true"): True,
        ("workers.zooCache.existingClaim=zoo-weights",): True,
    }
    for sets, cached in cases.items():
        text = notes(*sets)
        applied = set(re.findall(r"examples/([-a-z0-9]+\.yaml)", text))
        assert applied and all((EXAMPLES / f).is_file() for f in applied), applied
        assert bool(applied & zoo) == cached, (sets, applied)
        # `describe cpj NAME` names a CompressionJob NOTES had applied
        jobs = {
            d["metadata"]["name"]
            for f in applied
            for d in load_all((EXAMPLES / f).read_text())
            if d["kind"] == "CompressionJob"
        }
        (described,) = re.findall(r"describe cpj (\S+)", text)
        assert described in jobs, (described, jobs)
        if cached and "create=true" in " ".join(sets):
            assert "zoo-cache.yaml -l app.kubernetes.io/component=zoo-train" in text


# ---------------------------------------------------------------------------------------------
# GitOps: the Argo CD and Flux examples (README, "Argo CD and Flux")

ARGO_EXAMPLE = EXAMPLES / "argocd-application.yaml"
FLUX_EXAMPLE = EXAMPLES / "flux-helmrelease.yaml"
NO_PRUNE = "argocd.argoproj.io/sync-options"


def chart_meta() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def render_values(values: dict, tmp_path) -> list[dict]:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    return render("--values", str(f))


def test_crd_annotations():
    (crd,) = crds("crds.annotations.argocd\\.argoproj\\.io/sync-options=Prune=false\\,Delete=false")
    assert crd["metadata"]["annotations"] == {NO_PRUNE: "Prune=false,Delete=false", KEEP: "keep"}
    (crd,) = crds("crds.annotations.team=ml", "crds.keep=false")
    assert crd["metadata"]["annotations"] == {"team": "ml"}
    bad = template("--set", "crds.annotations.n=1", check=False)
    assert bad.returncode != 0 and "crds/annotations/n" in bad.stderr, bad.stderr


def test_argocd_example_pins_the_chart_and_keeps_the_crd(tmp_path):
    (app,) = load_all(ARGO_EXAMPLE.read_text())
    src = app["spec"]["source"]
    assert src["targetRevision"] == f"v{chart_meta()['version']}", "pin the release tag of the chart's version"
    labels = app["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    objs = render_values(src["helm"]["valuesObject"], tmp_path)
    (crd,) = by_kind(objs, "CustomResourceDefinition")
    options = set(crd["metadata"]["annotations"][NO_PRUNE].split(","))
    assert {"Prune=false", "Delete=false"} <= options, "Argo CD ignores Helm's keep policy"
    (dep,) = by_kind(objs, "Deployment")
    assert_restricted(dep["spec"]["template"]["spec"])


def test_flux_example_pins_the_chart_from_the_release_registry(tmp_path):
    docs = {d["kind"]: d for d in load_all(FLUX_EXAMPLE.read_text())}
    assert set(docs) == {"HelmRepository", "HelmRelease"}
    repo, release = docs["HelmRepository"], docs["HelmRelease"]
    assert repo["apiVersion"] == "source.toolkit.fluxcd.io/v1" and release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    assert repo["spec"]["type"] == "oci"
    # the release workflow pushes the chart to oci://ghcr.io/<owner>/charts
    workflow = (ROOT / ".github" / "workflows" / "release.yaml").read_text()
    assert 'helm push dist/kondense-*.tgz "oci://ghcr.io/$OWNER/charts"' in workflow
    assert re.fullmatch(r"oci://ghcr\.io/[a-z0-9-]+/charts", repo["spec"]["url"]), repo["spec"]["url"]
    chart = release["spec"]["chart"]["spec"]
    assert chart["chart"] == chart_meta()["name"] and chart["version"] == chart_meta()["version"]
    assert chart["sourceRef"] == {"kind": "HelmRepository", "name": repo["metadata"]["name"]}
    assert repo["metadata"]["namespace"] == release["metadata"]["namespace"], "a sourceRef without namespace"
    assert release["spec"]["targetNamespace"] == NAMESPACE and release["spec"]["releaseName"] == RELEASE
    objs = render_values(release["spec"]["values"], tmp_path)
    app_version = chart_meta()["appVersion"]
    (dep,) = by_kind(objs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"{release['spec']['values']['operator']['image']['repository']}:{app_version}"
    assert f"{release['spec']['values']['workers']['image']['repository']}:{app_version}" in yaml.safe_dump(objs)


def assert_restricted(pod: dict) -> None:
    """The restricted Pod Security Standard, the checks that concern these pods: non-root, seccomp
    RuntimeDefault (pod or container), no privilege escalation, every capability dropped."""
    psc = pod.get("securityContext", {})
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, c["name"]
        assert sc.get("runAsUser", psc.get("runAsUser")) != 0, c["name"]
        assert (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), c["name"]
    for v in pod.get("volumes", []):
        assert "hostPath" not in v, v


@pytest.mark.parametrize("sets", [(), ("workers.podSecurityContext.runAsUser=null",)])
def test_worker_pods_meet_restricted(sets):
    """The namespaces of CompressionJobs may enforce restricted too: the worker pods the operator
    builds from the chart's worker config (with and without the OpenShift setting) meet it."""
    from kondense.job import spec as spec_mod
    from kondense_operator import children
    from kondense_operator.config import worker_config_from_dict

    (cm,) = [o for o in rendered(*sets) if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("worker-config")]
    cfg = worker_config_from_dict(yaml.safe_load(cm["data"]["worker.yaml"]))
    (body,) = [d for d in load_all((EXAMPLES / "resnet18-stage1.yaml").read_text()) if d["kind"] == "CompressionJob"]
    body["metadata"].update(uid="uid-1", namespace="team-a")
    pod = children.build_job(body, spec_mod.parse(body), 1, cfg)["spec"]["template"]["spec"]
    assert_restricted(pod)
    assert ("runAsUser" in pod["securityContext"]) is (not sets)


# ---------------------------------------------------------------------------------------------
# pull secrets: one form for the operator and the workers (Secret names), as Kubernetes' objects


def test_operator_pull_secrets_are_secret_names_like_the_workers():
    deployment = by_kind(list(rendered("operator.imagePullSecrets={regcred,mirror}")), "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert "imagePullSecrets" not in by_kind(list(rendered()), "Deployment")[0]["spec"]["template"]["spec"]
    refused = template("--set", "operator.imagePullSecrets[0].name=regcred", check=False)
    assert refused.returncode != 0 and "/operator/imagePullSecrets/0" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    "sets,ids",
    [
        ((), {"runAsUser": 1000, "runAsGroup": 1000}),
        (("operator.podSecurityContext.runAsUser=2000",), {"runAsUser": 2000, "runAsGroup": 1000}),
        # OpenShift's restricted-v2 SCC assigns the IDs: null leaves them out
        (("operator.podSecurityContext.runAsUser=null,operator.podSecurityContext.runAsGroup=null",), {}),
    ],
)
def test_operator_pod_ids_are_settings_and_may_be_left_out(sets, ids):
    pod = by_kind(list(rendered(*sets)), "Deployment")[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    context = pod["securityContext"]
    assert {k: v for k, v in context.items() if k in ("runAsUser", "runAsGroup", "fsGroup")} == ids
    assert context["runAsNonRoot"] is True and container["securityContext"]["runAsNonRoot"] is True
    assert not {"runAsUser", "runAsGroup"} & set(container["securityContext"]), "the pod's IDs, not the container's"


# ---- standby replicas (operator.replicas): kopf peering only above one


def _peering_crds(objects: tuple[dict, ...]) -> dict[str, dict]:
    return {
        c["metadata"]["name"]: c
        for c in by_kind(list(objects), "CustomResourceDefinition")
        if c["spec"]["group"] == "kopf.dev"
    }


def _rules(objects: tuple[dict, ...], kind: str) -> set[tuple[str, str, str]]:
    return rule_triples(
        [r for o in by_kind(list(objects), kind) if o["metadata"]["name"] == RELEASE for r in o["rules"]]
    )


def _operator(objects: tuple[dict, ...]) -> tuple[dict, dict]:
    (deploy,) = by_kind(list(objects), "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return deploy, container


def test_one_replica_runs_standalone():
    objects = rendered()
    deploy, container = _operator(objects)
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(a.startswith("--peering") for a in container["args"]) and "env" not in container
    assert _peering_crds(objects) == {}
    text = yaml.safe_dump_all(objects)
    assert "kopf.dev" not in text and "kopfpeering" not in text.lower()


@pytest.mark.parametrize("scope", ["all", "namespace"])
def test_replicas_peer_through_kopf(scope):
    from kondense_operator import rbac

    objects = rendered("operator.replicas=3", f"watch.scope={scope}")
    deploy, container = _operator(objects)
    assert deploy["spec"]["replicas"] == 3 and deploy["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert f"--peering={deploy['metadata']['name']}" in container["args"]
    assert container["env"][0]["name"] == "POD_ID"  # kopf's identity: the pod's name
    crds = _peering_crds(objects)
    assert set(crds) == {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    for crd in crds.values():
        validate_any(crd)
        (version,) = crd["spec"]["versions"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True and "subresources" not in version
        assert crd["metadata"]["annotations"][KEEP] == "keep"
    cluster, namespaced = _rules(objects, "ClusterRole"), _rules(objects, "Role")
    if scope == "all":
        assert rule_triples(rbac.CLUSTER_PEERING_RULES) <= cluster
        assert not {t for t in cluster | namespaced if t[1] == "kopfpeerings"}
    else:
        assert rule_triples(rbac.PEERING_RULES) <= namespaced
        assert not {t for t in cluster | namespaced if t[1] == "clusterkopfpeerings"}
    # without crds.install the platform team applies the CRDs; the rights and --peering stay
    objects = rendered("operator.replicas=2", f"watch.scope={scope}", "crds.install=false")
    assert _peering_crds(objects) == {} and f"--peering={RELEASE}" in _operator(objects)[1]["args"]


def test_replicas_below_one_are_refused():
    result = template("--set", "operator.replicas=0", check=False)
    assert result.returncode != 0 and "replicas" in result.stderr
