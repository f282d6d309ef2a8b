"""Nothing loops, nothing sticks (#14): what a CompressionJob goes through besides its stages.
A missed watch event, a name still held by a deleted job's children, a stage Job deleted by
hand, a change after the end, pods the scheduler cannot place, deletion, and the log lines.

Two operators on one API server, each watching its own namespace: FAST re-checks every second
(what the re-check timer catches), SLOW once an hour, i.e. never within a test (what the watch
events alone do). Waits are long (T): on a loaded machine a pass can take seconds."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from kondense.job.spec import parse_for_kubernetes
from kondense_operator import children, cleanup, handlers
from kondense_operator import status as st
from kondense_operator.cli import parse_config

from .conftest import OperatorProcess, cj_manifest, operator_process, summary, wait_for

pytestmark = pytest.mark.timeout(300)
FAST, SLOW = "fast", "slow"
T = 60  # seconds to wait for what the operator does
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
NO_GPU = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."


@pytest.fixture(scope="module")
def fast(kubeconfig, tmp_path_factory):
    yield from operator_process(kubeconfig, tmp_path_factory, "--namespace", FAST, "--recheck-seconds", "1")


@pytest.fixture(scope="module")
def slow(kubeconfig, tmp_path_factory):
    yield from operator_process(kubeconfig, tmp_path_factory, "--namespace", SLOW, "--recheck-seconds", "3600")


def status_of(api, ns: str, name: str) -> dict:
    return api.get_cj(ns, name).get("status") or {}


def stage_job(api, ns: str, name: str, stage: int = 1, timeout: float = T) -> dict:
    return wait_for(lambda: api.get("Job", ns, children.child_name(name, stage)), timeout, message=f"stage {stage} Job")


def events(api, ns: str, name: str, reason: str) -> list[dict]:
    return [e for e in api.list("Event", ns) if e["reason"] == reason and e["involvedObject"]["name"] == name]


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status.get("conditions") or []}


def gets_of(apiserver, op: OperatorProcess, ns: str, name: str) -> int:
    path = f"/apis/kondense.dev/v1alpha1/namespaces/{ns}/compressionjobs/{name}"
    return sum(1 for token, m, p in apiserver.emulator.log if token == op.token and m == "GET" and p == path)


# ---- 1. a missed event is caught by the re-check; finished jobs are not re-checked


def test_a_missed_event_is_caught_by_the_recheck(apiserver, api, fast):
    name = "missed"
    api.create_cj(FAST, cj_manifest(name, FAST))
    job1 = stage_job(api, FAST, name)
    pods = api.start_job(job1)
    wait_for(lambda: status_of(api, FAST, name).get("phase") == "Running", T)
    # the timer and the on.delete handler need kopf's finalizer
    assert KOPF_FINALIZER in api.get_cj(FAST, name)["metadata"].get("finalizers", [])

    # stage 1 ends, and the watch loses every event that says so
    for i, pod in enumerate(pods):
        term = {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-01-01T00:00:00Z"}
        if i == 0:
            term["message"] = json.dumps(summary(1))
        cs = {"name": "worker", "ready": False, "restartCount": 0, "image": "x", "imageID": "", "state": {}}
        cs["state"] = {"terminated": term}
        apiserver.unannounced_patch(
            "v1/pods", FAST, pod["metadata"]["name"], {"status": {"phase": "Succeeded", "containerStatuses": [cs]}}
        )
    complete = {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    apiserver.unannounced_patch(
        "batch/v1/jobs",
        FAST,
        job1["metadata"]["name"],
        {"status": {"active": 0, "succeeded": 2, "completedIndexes": "0-1", "conditions": [complete]}},
    )
    job2 = stage_job(api, FAST, name, 2)  # the re-check (1 s here) found it

    api.succeed_job(job2, api.start_job(job2), summary(2))
    wait_for(lambda: status_of(api, FAST, name).get("phase") == "Succeeded", T)
    time.sleep(3)  # a re-check already under way may still finish
    before = gets_of(apiserver, fast, FAST, name)
    time.sleep(4)
    assert gets_of(apiserver, fast, FAST, name) == before, "a finished job is still re-checked"


# ---- 2. a name held by a deleted job's children: wait (said once), then start promptly


def _old_child(api, kind: str, name: str, old_uid: str) -> dict:
    meta = children.child_metadata(
        {
            "apiVersion": "kondense.dev/v1alpha1",
            "kind": "CompressionJob",
            "metadata": {"name": name, "namespace": FAST, "uid": old_uid},
        },
        1,
    )
    body: dict = {"apiVersion": "batch/v1" if kind == "Job" else "v1", "kind": kind, "metadata": meta}
    if kind == "Job":
        body["spec"] = {"completions": 2, "parallelism": 2, "completionMode": "Indexed", "template": {"spec": {}}}
    elif kind == "ConfigMap":
        body["data"] = {"job.yaml": "old"}
    else:
        body["spec"] = {"clusterIP": "None"}
    return api.raw.create_or_get(body)[0]


def test_a_name_held_by_old_children_waits_then_starts(api, fast):
    name, old_uid = "reborn", "0ld-0ld-0ld"
    for kind in ("Service", "ConfigMap", "Job"):
        _old_child(api, kind, name, old_uid)
    api.create_cj(FAST, cj_manifest(name, FAST))
    status = wait_for(lambda: status_of(api, FAST, name).get("reason") == "NameTaken" and status_of(api, FAST, name), T)
    assert status["phase"] == "Pending" and old_uid in status["message"] and "Service" in status["message"]
    assert conditions(status)["NameTaken"]["status"] == "True"
    time.sleep(3)  # three re-checks that find the name still taken
    assert len(events(api, FAST, name, "NameTaken")) == 1, "one Event per transition, not one per re-check"

    # the old children go; the Job first, so that its event's pass still finds the Service there
    for kind in ("Job", "Service", "ConfigMap"):
        api.delete(kind, FAST, children.child_name(name, 1))
    uid = api.get_cj(FAST, name)["metadata"]["uid"]
    job = wait_for(
        lambda: (
            (j := api.get("Job", FAST, children.child_name(name, 1)))
            and j["metadata"]["ownerReferences"][0]["uid"] == uid
            and j
        ),
        T,
        message="the new job's own Job",
    )
    assert job["spec"]["template"]["spec"]["containers"], "the old Job came back?"
    for kind in ("Service", "ConfigMap"):
        assert api.get(kind, FAST, children.child_name(name, 1))["metadata"]["ownerReferences"][0]["uid"] == uid
    status = wait_for(
        lambda: conditions(status_of(api, FAST, name))["NameTaken"]["status"] == "False" and status_of(api, FAST, name),
        T,
    )
    assert status["reason"] != "NameTaken"
    assert len(events(api, FAST, name, "NameTaken")) == 1


# ---- deletion: the children go first, then the finalizer; the name is then free


def test_deletion_waits_for_the_children_then_frees_the_name(apiserver, api, slow):
    name = "phoenix"
    api.create_cj(SLOW, cj_manifest(name, SLOW))
    job = stage_job(api, SLOW, name)
    api.start_job(job)
    old_uid = api.get_cj(SLOW, name)["metadata"]["uid"]
    child = children.child_name(name, 1)
    # the Job controller's own finalizer keeps a Job a moment after its deletion; here until the test says
    api.raw.request(
        "PATCH",
        api.raw.child_path("Job", SLOW, child),
        {"metadata": {"finalizers": ["test/hold"]}},
        "application/merge-patch+json",
    )
    # a restarted stage's other Job (children.job_name), and a Job of someone else's with the labels
    cj = api.get_cj(SLOW, name)
    for job_name, owner in (
        (f"{child}-r1", cj),
        (f"{child}-x", {**cj, "metadata": {**cj["metadata"], "uid": "other"}}),
    ):
        extra = {**job, "metadata": {**children.child_metadata(owner, 1), "name": job_name}, "status": {}}
        api.raw.create_or_get(extra)
    api.delete_cj(SLOW, name)

    wait_for(lambda: api.get("Service", SLOW, child) is None and api.get("ConfigMap", SLOW, child) is None, T)
    wait_for(lambda: api.get("Job", SLOW, f"{child}-r1") is None, T, message="the restarted stage's other Job gone")
    wait_for(lambda: api.get("Job", SLOW, child)["metadata"].get("deletionTimestamp"), T)
    time.sleep(2)
    held = api.get_cj(SLOW, name)  # its finalizer stays while a child is there
    assert held["metadata"]["deletionTimestamp"] and KOPF_FINALIZER in held["metadata"]["finalizers"]
    deletes = [
        p
        for t, m, p in apiserver.emulator.log
        if t == slow.token and m == "DELETE" and urlsplit(p).path.endswith(f"/jobs/{child}")
    ]
    assert deletes and all(parse_qs(urlsplit(p).query)["propagationPolicy"] == ["Background"] for p in deletes)
    assert len(deletes) == 1, "deletion is asked for once, then waited for"

    api.raw.request(
        "PATCH",
        api.raw.child_path("Job", SLOW, child),
        {"metadata": {"finalizers": []}},
        "application/merge-patch+json",
    )
    wait_for(lambda: api.get("Job", SLOW, child) is None, T)

    def gone() -> bool:
        try:
            api.get_cj(SLOW, name)
        except Exception as e:  # noqa: BLE001  (the client's 404)
            return getattr(e, "status", None) == 404
        return False

    wait_for(gone, T, message="the CompressionJob gone once its children are")
    assert api.get("Job", SLOW, f"{child}-x")["metadata"]["ownerReferences"][0]["uid"] == "other", "not its own"
    # the same name again: a new job with its own children at once
    api.create_cj(SLOW, cj_manifest(name, SLOW))
    job = stage_job(api, SLOW, name)
    assert job["metadata"]["ownerReferences"][0]["uid"] not in ("", old_uid)
    assert status_of(api, SLOW, name).get("reason") != "NameTaken"


# ---- 3. a stage's Job deleted by hand comes back (its DELETED event, not the re-check)


@pytest.mark.parametrize("with_pods", [False, True])
def test_a_deleted_stage_job_is_created_again(api, slow, with_pods):
    name = f"handdeleted-{int(with_pods)}"
    api.create_cj(SLOW, cj_manifest(name, SLOW))
    job = stage_job(api, SLOW, name)
    pods = api.start_job(job) if with_pods else []
    if with_pods:
        wait_for(lambda: status_of(api, SLOW, name).get("phase") == "Running", T)
    wait_for(lambda: status_of(api, SLOW, name).get("phase") in ("Pending", "Running"), T)
    time.sleep(1.5)  # the creation's own events handled: only the deletion's can bring the Job back
    api.delete("Job", SLOW, job["metadata"]["name"])
    # SLOW's re-check is an hour away: the Job's DELETED event brings it back
    again = wait_for(
        lambda: (
            (j := api.get("Job", SLOW, job["metadata"]["name"]))
            and j["metadata"]["uid"] != job["metadata"]["uid"]
            and j
        ),
        T,
        message="the Job created again",
    )
    assert (
        again["spec"]["template"]["spec"]["containers"][0]["command"]
        == job["spec"]["template"]["spec"]["containers"][0]["command"]
    )
    # the garbage collector takes the old pods (kmock has none: played here), the new Job runs to the end
    for pod in pods:
        api.delete("Pod", SLOW, pod["metadata"]["name"])
    api.succeed_job(again, api.start_job(again), summary(1))
    stage_job(api, SLOW, name, 2)
    assert status_of(api, SLOW, name)["phase"] in ("Pending", "Running")


# ---- 4. observedGeneration after the end


def test_observed_generation_follows_a_finished_job(api, slow):
    name = "finished"
    api.create_cj(SLOW, cj_manifest(name, SLOW, delta=0))  # invalid: Failed at once
    wait_for(lambda: status_of(api, SLOW, name).get("phase") == "Failed", T)
    assert status_of(api, SLOW, name)["observedGeneration"] == 1
    api.patch_cj(SLOW, name, {"spec": {"suspend": True}})  # the one mutable field
    assert api.get_cj(SLOW, name)["metadata"]["generation"] == 2
    wait_for(lambda: status_of(api, SLOW, name).get("observedGeneration") == 2, T, message="observedGeneration 2")
    assert status_of(api, SLOW, name)["phase"] == "Failed"


# ---- 5. pods the scheduler cannot place


def test_unschedulable_pods_are_said_not_running(api, slow):
    name = "nogpu"
    api.create_cj(SLOW, cj_manifest(name, SLOW))
    job = stage_job(api, SLOW, name)
    pods = api.make_pods(job)
    api.unschedulable(pods[0], "0/3 nodes are available: 1 node(s) had untolerated taint.")
    api.unschedulable(pods[1], NO_GPU)
    # the Job controller counts pending pods as active
    api.patch_status("Job", SLOW, job["metadata"]["name"], {"active": 2})
    status = wait_for(
        lambda: status_of(api, SLOW, name).get("reason") == "Unschedulable" and status_of(api, SLOW, name), T
    )
    assert status["phase"] == "Pending"
    assert status["message"].startswith("stage 1: worker 0 (pod ") and "untolerated taint" in status["message"]
    assert conditions(status)["Unschedulable"]["status"] == "True"
    api.schedule(pods[0])  # worker 1 still waits for a GPU node
    status = wait_for(lambda: NO_GPU in status_of(api, SLOW, name).get("message", "") and status_of(api, SLOW, name), T)
    assert status["phase"] == "Pending" and status["message"].startswith("stage 1: worker 1 (pod ")
    assert len(events(api, SLOW, name, "Unschedulable")) == 1, "once per transition"

    api.schedule(pods[1])  # a node was added
    status = wait_for(lambda: status_of(api, SLOW, name).get("phase") == "Running" and status_of(api, SLOW, name), T)
    conds = conditions(status)
    assert conds["Unschedulable"]["status"] == "False" and conds["Running"]["status"] == "True"


def test_unschedulable_after_running_is_not_running():
    """Pure: stage 2's pods unplaced after stage 1 ran; and a deleted Job's lingering pods say nothing."""
    body = cj_manifest("x", "ns") | {"metadata": {"name": "x", "namespace": "ns", "uid": "u"}}
    job_spec = parse_for_kubernetes(body).spec
    status = st.running({"conditions": []}, 2, job_spec, 1)
    out = st.waiting_for_nodes(status, 2, "worker 0 (pod p) cannot be scheduled: " + NO_GPU, 1)
    assert out["phase"] == "Pending" and out["reason"] == "Unschedulable"
    assert conditions(out)["Running"]["status"] == "False" and conditions(out)["Unschedulable"]["status"] == "True"

    k8s_job = {"metadata": {"uid": "new"}, "spec": {"completions": 1}, "status": {}}
    old_pod = {
        "metadata": {
            "name": "j-0-old",
            "labels": {children.INDEX_LABEL: "0"},
            "ownerReferences": [{"kind": "Job", "uid": "old", "controller": True}],
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "worker", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
            ],
        },
    }
    assert st.observe_stage(k8s_job, [old_pod]).state == "pending"
    mine = {
        **old_pod,
        "metadata": {**old_pod["metadata"], "ownerReferences": [{"kind": "Job", "uid": "new", "controller": True}]},
    }
    assert st.observe_stage(k8s_job, [mine]).reason == "OOMKilled"


# ---- 6. log lines name the CompressionJob


def test_log_lines_name_the_compressionjob(api, slow):
    name = "logged"
    api.create_cj(SLOW, cj_manifest(name, SLOW))
    stage_job(api, SLOW, name)
    wait_for(lambda: f"kopf.objects: [{SLOW}/{name}] Handler 'created' succeeded" in slow.log(), T)
    # every line kopf writes about an object (handler outcomes, retries, errors) says which one
    objects = [ln for ln in slow.log().splitlines() if " kopf.objects: " in ln]
    unnamed = [ln for ln in objects if not re.search(r"kopf\.objects: \[[^/\]]+/[^\]]+\] ", ln)]
    assert objects and not unnamed, unnamed[:5]


# ---- 7. the children's watches are filtered on the API server, their lists come in pages


def _child_collection_gets(apiserver, op: OperatorProcess, ns: str) -> list[tuple[str, dict[str, list[str]]]]:
    """(collection, query) of every GET `op` made on the Jobs or Pods collection of `ns`."""
    collections = {f"/apis/batch/v1/namespaces/{ns}/jobs": "jobs", f"/api/v1/namespaces/{ns}/pods": "pods"}
    gets = []
    for token, method, path_qs in list(apiserver.emulator.log):
        url = urlsplit(path_qs)
        if token == op.token and method == "GET" and url.path in collections:
            gets.append((collections[url.path], parse_qs(url.query)))
    return gets


def _kopf_gets(gets: list[tuple[str, dict[str, list[str]]]], collection: str, watch: bool) -> list[dict]:
    # kopf's requests, told from Kube.list_labelled's by what only kopf sends: watch=true on the
    # watches, limit (LIST_CHUNK_SIZE) on the lists
    key = "watch" if watch else "limit"
    return [q for c, q in gets if c == collection and key in q and ("watch" in q) == watch]


@pytest.mark.parametrize("which", [FAST, SLOW])
def test_children_are_filtered_on_the_server(request, apiserver, api, which):
    op = request.getfixturevalue(which)
    ns = which
    wanted = "app.kubernetes.io/managed-by=kondense-operator,app.kubernetes.io/name=kondense"
    assert handlers.CHILD_SELECTOR == wanted
    name = "filtered"
    api.create_cj(ns, cj_manifest(name, ns))
    stage_job(api, ns, name)  # a pass ran: Kube.list_pods asked for the job's pods too

    def kopf_started() -> bool:
        gets = _child_collection_gets(apiserver, op, ns)
        return all(_kopf_gets(gets, c, w) for c in ("jobs", "pods") for w in (False, True))

    wait_for(kopf_started, T, message="kopf's lists and watches of the Jobs and Pods")
    gets = _child_collection_gets(apiserver, op, ns)
    for collection, query in gets:
        # none unfiltered: kopf's carry the children's selector, the operator's own pod lists
        # (Kube.list_pods) their job's and stage's labels (kondense.dev/job, kondense.dev/stage)
        assert query.get("labelSelector", [""])[0], f"an unfiltered GET {collection} in {ns}: {query}"
    for collection in ("jobs", "pods"):
        for q in _kopf_gets(gets, collection, watch=True) + _kopf_gets(gets, collection, watch=False):
            assert q["labelSelector"] == [wanted], f"kopf's GET {collection}: {q}"
        for q in _kopf_gets(gets, collection, watch=False):
            assert q["limit"] == [str(handlers.LIST_CHUNK_SIZE)] and handlers.LIST_CHUNK_SIZE == 500
    api.delete_cj(ns, name)


# ---- the pieces


def test_recheck_seconds_option():
    assert parse_config([])[0].recheck_s == 30
    assert parse_config(["--recheck-seconds", "2.5"])[0].recheck_s == 2.5
    with pytest.raises(SystemExit):
        parse_config(["--recheck-seconds", "0"])


def test_cleanup_looks_at_every_stage():
    assert cleanup.stage_objects("a") == [
        ("Service", "a-s1"),
        ("ConfigMap", "a-s1"),
        ("Service", "a-s2"),
        ("ConfigMap", "a-s2"),
    ]
    assert cleanup.run_kinds(False) == ["Job"] and cleanup.run_kinds(True) == ["Job", "MPIJob"]
