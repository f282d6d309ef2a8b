"""status.progress from rank 0's KONDENSE-PROGRESS lines in its pod's log (pods/log), and the
kondense_job_progress_percent gauge: parsing and throttling on their own, the emulator's pods/log
as an API server answers it, and the operator following a log the tests write as the kubelet would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kondense.progress import PREFIX as ENGINE_PREFIX
from kondense_operator import progress
from kondense_operator.children import child_name
from kondense_operator.kube import ApiError

from .conftest import PATIENCE, Api, OperatorProcess, Refusal, cj_manifest, metric_value, summary, wait_for

TS = "2026-11-28T10:00:0{}.123456789Z "


def line(second: int, **record) -> str:
    return TS.format(second) + ENGINE_PREFIX + json.dumps(record)


# ---- parsing


def test_the_last_valid_line_wins_and_its_timestamp_is_the_update_time() -> None:
    text = "\n".join(
        [
            line(1, stage=1, step=2, steps=10, percent=20, etaSeconds=80, valAccuracy=91.0, compression=1.0),
            TS.format(2) + "stage 1 fine-tune: 3/10 batches (30%), ETA 1m10s",
            line(3, stage=1, step=4, steps=10, percent=40, etaSeconds=60, valAccuracy=91.0, compression=1.5),
            TS.format(4) + ENGINE_PREFIX + '{"stage": 1, "step": 5, "per',  # cut short: the one before counts
        ]
    )
    assert progress.last_progress(text) == {
        "stage": 1,
        "step": 4,
        "steps": 10,
        "percent": 40,
        "etaSeconds": 60,
        "valAccuracy": 91.0,
        "compression": 1.5,
        "updateTime": "2026-11-28T10:00:03Z",
    }
    assert progress.last_progress(TS.format(1) + "no progress here\n") is None
    assert progress.last_progress("") is None


def test_fields_are_cleaned_to_what_the_crd_accepts() -> None:
    got = progress.clean(
        {"stage": 2, "percent": 140, "step": True, "steps": "8", "etaSeconds": -3, "valAccuracy": "x", "extra": 1}
    )
    assert got == {"stage": 2, "percent": 100, "etaSeconds": 0}
    assert progress.clean({"percent": 50}) is None  # no stage: not a progress record
    assert progress.clean(["stage", 1]) is None
    assert len(progress.clean({"stage": 1, "message": "m" * 1000})["message"]) == progress.MESSAGE_CHARS
    # a line without the kubelet's timestamp still counts, as of now
    assert progress.last_progress(ENGINE_PREFIX + '{"stage": 1, "percent": 5}')["updateTime"].endswith("Z")


def test_the_operator_and_the_engine_agree_on_the_prefix() -> None:
    assert progress.PREFIX == ENGINE_PREFIX


def test_the_read_interval_comes_from_the_environment() -> None:
    assert progress.every_from_env({}) == progress.DEFAULT_EVERY_S
    assert progress.every_from_env({progress.EVERY_ENV: "2.5"}) == 2.5
    for bad in ("0", "-1", "ten", "nan", "inf"):
        with pytest.raises(ValueError, match="KONDENSE_PROGRESS_SECONDS"):
            progress.every_from_env({progress.EVERY_ENV: bad})


def pod(
    name: str, index: int | None, container: str = "worker", state: str = "running", launcher: bool = False
) -> dict:
    labels = {"kondense.dev/mpi-role": "launcher"} if launcher else {}
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
    return {
        "metadata": {"name": name, "labels": labels, "creationTimestamp": f"2026-11-28T10:00:0{len(name) % 10}Z"},
        "spec": {"containers": [{"name": container}]},
        "status": {
            "phase": "Running" if state == "running" else "Pending",
            "containerStatuses": [{"name": container, "state": {state: {}}}],
        },
    }


def test_rank_0_is_worker_0_or_the_mpi_launcher_and_only_once_it_runs() -> None:
    assert progress.rank0_pod([pod("j-1-x", 1), pod("j-0-x", 0)]) == ("j-0-x", "worker")
    assert progress.rank0_pod([pod("j-0-x", 0, state="waiting"), pod("j-1-x", 1)]) is None
    mpi = [pod("m-worker-0", None), pod("m-launcher-x", None, container="launcher", launcher=True)]
    assert progress.rank0_pod(mpi) == ("m-launcher-x", "launcher")
    assert progress.rank0_pod([]) is None


def test_the_pod_templates_turn_rank_0s_lines_on() -> None:
    """Worker 0 of an Indexed Job prints them itself; for backend mpi the launcher passes the switch
    on to the ranks (mpirun -x KONDENSE_*), and rank 0's lines come back in the launcher's log."""
    from kondense.job import spec as spec_mod
    from kondense.launch.mpi import forwarded
    from kondense_operator import children, mpijob
    from kondense_operator.config import WorkerConfig

    switch = {"name": "KONDENSE_PROGRESS_LINES", "value": "1"}
    body = cj_manifest("job", "ns")
    body["metadata"]["uid"] = "uid-1"
    job = children.build_job(body, spec_mod.parse(body), 1, WorkerConfig())
    (worker,) = job["spec"]["template"]["spec"]["containers"]
    assert switch in worker["env"]
    body = cj_manifest("job", "ns", backend="mpi")
    body["metadata"]["uid"] = "uid-1"
    _, mj = mpijob.build_children(body, spec_mod.parse(body), 1, WorkerConfig(mpi_job={"enabled": True}))
    (launcher,) = mj["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
    assert switch in launcher["env"] and "KONDENSE_PROGRESS_LINES" in forwarded({"KONDENSE_PROGRESS_LINES": "1"})


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class RecordingKube:
    """Answers pod_log with a fixed text (or error) and records each read."""

    def __init__(self, answer: str | ApiError) -> None:
        self.answer, self.reads = answer, []

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int) -> str:
        self.reads.append((namespace, name, container, tail_lines))
        if isinstance(self.answer, ApiError):
            raise self.answer
        return self.answer


def test_each_job_is_read_at_most_once_per_interval() -> None:
    clock = Clock()
    reader = progress.Reader(every_s=10.0, clock=clock)
    kube = RecordingKube(line(1, stage=1, percent=30) + "\n")
    pods = [pod("j-0-x", 0)]
    assert reader.read(kube, "ns", "a", pods)["percent"] == 30
    assert reader.read(kube, "ns", "a", pods) is None  # too soon: the status keeps what it has
    assert reader.read(kube, "ns", "b", pods)["percent"] == 30  # another job has its own stamp
    clock.t += 10.0
    assert reader.read(kube, "ns", "a", pods) is not None
    assert [r[:3] for r in kube.reads] == [("ns", "j-0-x", "worker")] * 3 and kube.reads[0][3] == progress.TAIL_LINES
    reader.forget("ns", "a")
    assert reader.read(kube, "ns", "a", pods) is not None  # forgotten: read at once
    assert reader.read(kube, "ns", "c", [pod("j-0-y", 0, state="waiting")]) is None and len(kube.reads) == 4


# ---- the emulator's pods/log, as an API server answers it


def test_the_emulator_serves_pod_logs_as_the_api_server_does(apiserver, api: Api, namespace: str) -> None:
    logs = apiserver.emulator.pod_logs
    body = pod("p-0", 0, state="waiting")
    body["metadata"] = {"name": "p-0", "namespace": namespace}
    body["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    api.raw.create_or_get({"apiVersion": "v1", "kind": "Pod", **body})
    with pytest.raises(ApiError) as missing:
        api.raw.pod_log(namespace, "nope", "worker", 10)
    assert missing.value.status == 404 and 'pods "nope" not found' in missing.value.message
    with pytest.raises(ApiError) as waiting:
        api.raw.pod_log(namespace, "p-0", "worker", 10)
    assert waiting.value.status == 400 and "is waiting to start: ContainerCreating" in waiting.value.message
    with pytest.raises(ApiError) as wrong:
        api.raw.pod_log(namespace, "p-0", "sidecar", 10)
    assert wrong.value.status == 400 and "not valid for pod p-0" in wrong.value.message
    api.patch_status("Pod", namespace, "p-0", {"containerStatuses": [{"name": "worker", "state": {"running": {}}}]})
    assert api.raw.pod_log(namespace, "p-0", "worker", 10) == ""
    logs.write(namespace, "p-0", "one\ntwo\nthree")
    text = api.raw.pod_log(namespace, "p-0", "worker", 2)
    stamps, lines = zip(*(x.split(" ", 1) for x in text.splitlines()), strict=True)
    assert lines == ("two", "three") and all(s.endswith("Z") and len(s) == 30 for s in stamps), text
    # a Reader shrugs off a log that is not there, whatever the pods' status said
    reader = progress.Reader(every_s=0.0)
    assert reader.read(api.raw, namespace, "x", [pod("gone-0", 0)]) is None


# ---- the operator


@pytest.fixture(scope="module")
def operator(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory):
    """Reads a job's log at most every 0.2 s, and looks at every unfinished job every second."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(progress.EVERY_ENV, "0.2")
        op = OperatorProcess(
            kubeconfig,
            tmp_path_factory.mktemp("operator") / "operator.log",
            ["--all-namespaces", "--recheck-seconds", "1"],
        ).start()
    yield op
    op.stop()


def gauge(op: OperatorProcess, namespace: str, name: str, stage: int) -> float | None:
    """The job's kondense_job_progress_percent sample for `stage`, None where there is no such series."""
    labels = {"namespace": namespace, "name": name, "stage": str(stage)}
    text = op.metrics()
    value = metric_value(text, "kondense_job_progress_percent", labels)
    series = "kondense_job_progress_percent{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return value if series in text else None


def progress_of(api: Api, namespace: str, name: str) -> dict:
    return (api.get_cj(namespace, name).get("status") or {}).get("progress") or {}


def test_status_progress_and_the_gauge_follow_rank_0s_log(apiserver, api: Api, operator, namespace: str) -> None:
    logs = apiserver.emulator.pod_logs
    api.create_cj(namespace, cj_manifest("follow", namespace))
    job = wait_for(lambda: api.get("Job", namespace, child_name("follow", 1)), message="stage 1 Job")
    pods = api.start_job(job)
    rank0, rank1 = (p["metadata"]["name"] for p in pods)
    logs.write(namespace, rank0, "loading fashion-mnist")
    logs.write(namespace, rank0, ENGINE_PREFIX + json.dumps({"stage": 1, "step": 3, "steps": 10, "percent": 30}))
    logs.write(namespace, rank1, ENGINE_PREFIX + json.dumps({"stage": 1, "step": 9, "steps": 10, "percent": 90}))
    got = wait_for(lambda: (p := progress_of(api, namespace, "follow")).get("percent") == 30 and p, PATIENCE)
    assert got["step"] == 3 and got["steps"] == 10 and got["updateTime"].endswith("Z")
    assert wait_for(lambda: gauge(operator, namespace, "follow", 1) == 30, PATIENCE)
    record = {"stage": 1, "step": 7, "steps": 10, "percent": 70, "etaSeconds": 12, "valAccuracy": 88.5}
    logs.write(namespace, rank0, ENGINE_PREFIX + json.dumps({**record, "compression": 2.5, "message": "fine-tune"}))
    got = wait_for(lambda: (p := progress_of(api, namespace, "follow")).get("percent") == 70 and p, PATIENCE)
    assert {k: got[k] for k in record} == record and got["compression"] == 2.5 and got["message"] == "fine-tune"
    assert wait_for(lambda: gauge(operator, namespace, "follow", 1) == 70, PATIENCE)
    logs.write(namespace, rank0, ENGINE_PREFIX + json.dumps({"stage": 1, "step": 8, "steps": 10, "percent": 80}))
    got = wait_for(lambda: (p := progress_of(api, namespace, "follow")).get("percent") == 80 and p, PATIENCE)
    # what the newest line leaves out is not the line before's (status patches merge nested objects)
    assert not {"etaSeconds", "valAccuracy", "compression", "message"} & set(got), got
    reads = [r for r in logs.reads if r[1] == rank0]
    assert reads and all("container=worker" in q and "timestamps=true" in q and "tailLines=" in q for *_, q in reads)
    assert not [r for r in logs.reads if r[1] == rank1], "only rank 0's log is read"

    # stage 2: stage 1's progress goes, the gauge's series moves to stage 2
    api.succeed_job(job, pods, summary(1))
    job2 = wait_for(lambda: api.get("Job", namespace, child_name("follow", 2)), message="stage 2 Job")
    wait_for(lambda: not progress_of(api, namespace, "follow"), PATIENCE, message="stage 1's progress dropped")
    pods2 = api.start_job(job2)
    logs.write(
        namespace, pods2[0]["metadata"]["name"], ENGINE_PREFIX + json.dumps({"stage": 2, "step": 1, "percent": 45})
    )
    wait_for(lambda: progress_of(api, namespace, "follow").get("percent") == 45, PATIENCE)
    assert wait_for(lambda: gauge(operator, namespace, "follow", 2) == 45, PATIENCE)
    assert gauge(operator, namespace, "follow", 1) is None

    api.delete_cj(namespace, "follow")
    wait_for(lambda: gauge(operator, namespace, "follow", 2) is None, PATIENCE, message="the gauge's series removed")


def test_a_finished_job_keeps_no_progress_and_no_series(apiserver, api: Api, operator, namespace: str) -> None:
    logs = apiserver.emulator.pod_logs
    api.create_cj(namespace, cj_manifest("ends", namespace, stage=1))
    job = wait_for(lambda: api.get("Job", namespace, child_name("ends", 1)), message="stage 1 Job")
    pods = api.start_job(job)
    logs.write(namespace, pods[0]["metadata"]["name"], ENGINE_PREFIX + json.dumps({"stage": 1, "percent": 55}))
    wait_for(lambda: gauge(operator, namespace, "ends", 1) == 55, PATIENCE)
    api.succeed_job(job, pods, summary(1))
    status = wait_for(lambda: (s := api.get_cj(namespace, "ends")["status"])["phase"] == "Succeeded" and s, PATIENCE)
    assert "progress" not in status
    wait_for(lambda: gauge(operator, namespace, "ends", 1) is None, PATIENCE, message="the series removed at the end")


def test_a_log_the_operator_may_not_read_changes_nothing_else(apiserver, api: Api, operator, namespace: str) -> None:
    """An operator installed without the pods/log right: no progress, and the job runs on as before."""
    logs = apiserver.emulator.pod_logs
    api.create_cj(namespace, cj_manifest("denied", namespace, stage=1))
    job = wait_for(lambda: api.get("Job", namespace, child_name("denied", 1)), message="stage 1 Job")
    forbidden = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403}
    forbidden["message"] = f'pods "x" is forbidden: cannot get resource "pods/log" in the namespace "{namespace}"'
    pods = api.start_job(job)
    rank0 = pods[0]["metadata"]["name"]
    path = f"/api/v1/namespaces/{namespace}/pods/{rank0}/log"
    apiserver.emulator.refusals.append(Refusal("GET", path, 403, forbidden))
    logs.write(namespace, rank0, ENGINE_PREFIX + json.dumps({"stage": 1, "percent": 10}))
    wait_for(
        lambda: any(m == "GET" and p.startswith(path) for t, m, p in apiserver.emulator.log if t == operator.token),
        20,
        message="a log read refused",
    )
    api.succeed_job(job, pods, summary(1))
    status = wait_for(lambda: (s := api.get_cj(namespace, "denied")["status"])["phase"] == "Succeeded" and s, PATIENCE)
    assert "progress" not in status
    assert "grant get on pods/log" in operator.log()
