"""A restart after a killed worker pod resumes from the checkpoint: stage 1's pods run for real (the
operator's pod template as local processes, as in test_pod_template.py), worker 1 is killed once
the run has a checkpoint on the output claim and its pod marked evicted as the kubelet would, the
Job fails as its controller would; the operator's next Job runs for real too, resumes the run
from the output directory, and the job finishes with status.restarts 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kondense_operator.children import child_name, job_name

from .conftest import lenet5_on_claim, tiny_manifest, wait_for
from .test_pod_template import run_pods, start_pods
from .test_restarts import evict, restarted_events

pytestmark = pytest.mark.timeout(900)
NS = "ml"
NAME = "lenet5-evicted"


def _checkpointed(state_file: Path) -> bool:
    """The run's state holds more than its fingerprint: a resumed run starts from there."""
    try:
        return len(json.loads(state_file.read_text())) > 1
    except (OSError, ValueError):
        return False


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants: torchrun starts the ranks in sessions of their own, so a process
    group is not the pod; the container is (the kubelet kills all of it)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop(proc: subprocess.Popen, sig: int, timeout: float) -> str:
    """`sig` to the pod's main process (SIGTERM: as the kubelet stops a container, which the worker
    passes on to its ranks) or, for SIGKILL, to all of the pod's processes; whatever is left after
    `timeout` is killed. The pod's output."""
    tree = _tree(proc.pid)
    _kill(tree if sig == signal.SIGKILL else [proc.pid], sig)
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        _kill(_tree(proc.pid) + tree, signal.SIGKILL)
        return proc.communicate()[0]
    finally:
        _kill(tree, signal.SIGKILL)  # no rank outlives its pod


def test_killed_worker_pod_resumes_from_the_checkpoint(apiserver, api, operator, tmp_path, kondense_home):
    pvc = tmp_path / "pvc"
    lenet5_on_claim(pvc)
    api.create_cj(NS, tiny_manifest(NAME, NS))
    state_file = pvc / "models" / "out" / "checkpoints" / "state.json"

    job = wait_for(lambda: api.get("Job", NS, child_name(NAME, 1)), 30, message="stage 1's Job")
    configmap = api.get("ConfigMap", NS, child_name(NAME, 1))
    pods = api.start_job(job)
    work = tmp_path / "stage1"
    work.mkdir()
    procs, messages = start_pods(job, configmap, pvc, work, kondense_home)
    try:
        wait_for(lambda: _checkpointed(state_file) or any(p.poll() is not None for p in procs), 600, interval=0.05)
        assert all(p.poll() is None for p in procs), "a worker ended before the run had a checkpoint"
        # the node under worker 1 runs out of memory: the kubelet kills it and marks its pod evicted
        _stop(procs[1], signal.SIGKILL, 30)
        evict(api, pods[1])
        # the Job's controller fails the Job (podFailurePolicy FailJob on DisruptionTarget) and deletes worker 0
        api.fail_job(job, "PodFailurePolicy", f"Pod {NS}/{pods[1]['metadata']['name']} has condition DisruptionTarget")
        _stop(procs[0], signal.SIGTERM, 60)
    finally:
        for p in procs:
            if p.poll() is None:
                _stop(p, signal.SIGKILL, 30)
    assert "stage1" not in json.loads(state_file.read_text()), "stage 1 finished before the kill: nothing to resume"
    last_word = messages[0].read_text() if messages[0].exists() else ""
    term = {"exitCode": 143, "reason": "Error", **({"message": last_word} if last_word else {})}
    api.set_pod(pods[0], "Failed", {"terminated": term})

    again = wait_for(lambda: api.get("Job", NS, job_name(NAME, 1, 1)), 30, message="the re-created stage 1 Job")
    assert api.get_cj(NS, NAME)["status"]["restarts"] == 1
    api_pods = api.start_job(again)
    work = tmp_path / "stage1-r1"
    work.mkdir()
    outputs, message = run_pods(again, configmap, pvc, work, kondense_home)
    assert any("resuming the run in" in out for out in outputs), outputs[0][-3000:]
    assert json.loads(message)["stage"] == 1
    api.succeed_job(again, api_pods, message)

    job2 = wait_for(lambda: api.get("Job", NS, job_name(NAME, 2, 1)), 30, message="stage 2's Job")
    work = tmp_path / "stage2"
    work.mkdir()
    pods2 = api.start_job(job2)
    _, message = run_pods(job2, api.get("ConfigMap", NS, child_name(NAME, 2)), pvc, work, kondense_home)
    api.succeed_job(job2, pods2, message)

    status = wait_for(lambda: (s := api.get_cj(NS, NAME).get("status") or {}).get("phase") == "Succeeded" and s, 30)
    assert status["restarts"] == 1
    assert status["artifacts"]["model"] == "pvc://models/out/model.pt"
    time.sleep(1)  # kopf posts Events in the background
    assert len(restarted_events(api, NS)) == 1
