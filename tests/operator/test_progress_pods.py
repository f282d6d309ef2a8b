"""status.progress moving through a real stage: the operator's pod template run as real worker
processes (test_pod_template.start_pods: a tiny LeNet-5 budget, two workers over torch.distributed),
each process's live output served as its pod's log (podlogs.PodLogs.pump, as the kubelet serves a
container's output), and the CompressionJob's status.progress watched while the stages run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from kondense_operator import progress
from kondense_operator.children import child_name

from .conftest import OperatorProcess, _now, lenet5_on_claim, tiny_manifest, wait_for
from .test_pod_template import start_pods

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NS = "progress"
NAME = "lenet5-progress"


@pytest.fixture(scope="module")
def operator(kubeconfig, tmp_path_factory):
    """Reads a job's log at most every 0.2 s (a stage here lasts seconds, not hours)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(progress.EVERY_ENV, "0.2")
        op = OperatorProcess(
            kubeconfig, tmp_path_factory.mktemp("op") / "operator.log", ["--all-namespaces", "--recheck-seconds", "1"]
        ).start()
    yield op
    op.stop()


class Kubelet(threading.Thread):
    """Touches rank 0's pod status every `every` seconds (its Ready condition probed again), as a
    kubelet's status updates do: each one is a pod event, so the operator runs a pass."""

    def __init__(self, api, pod: dict, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.api, self.pod, self.every = api, pod, every
        self.done = threading.Event()

    def run(self) -> None:
        meta = self.pod["metadata"]
        while not self.done.wait(self.every):
            ready = {"type": "Ready", "status": "True", "lastProbeTime": _now(), "lastTransitionTime": _now()}
            try:
                self.api.patch_status("Pod", meta["namespace"], meta["name"], {"conditions": [ready]})
            except Exception:  # noqa: BLE001  (the pod may be going; the test's own checks decide)
                pass


def run_stage_watching(api, apiserver, job, configmap, pvc, work, home) -> tuple[list[dict], list[dict], str]:
    """Runs the stage's pods with their output as their logs; returns (the pods, every distinct
    status.progress seen while they ran, rank 0's termination message)."""
    pods = api.start_job(job)
    procs, messages = start_pods(job, configmap, pvc, work, home)
    pumps = [
        apiserver.emulator.pod_logs.pump(NS, pod["metadata"]["name"], proc.stdout)
        for pod, proc in zip(pods, procs, strict=True)
    ]
    kubelet = Kubelet(api, pods[0])
    kubelet.start()
    seen: list[dict] = []
    try:
        deadline = time.monotonic() + 600
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            shown = (api.get_cj(NS, NAME).get("status") or {}).get("progress")
            if shown and (not seen or shown != seen[-1]):
                seen.append(shown)
            time.sleep(0.1)
    finally:
        kubelet.done.set()
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # whatever is left of a worker's ranks
            except ProcessLookupError:
                pass
            p.wait()
    for pump, proc in zip(pumps, procs, strict=True):
        pump.join(10)
        assert proc.returncode == 0, "".join(pump.output)[-4000:]
    return pods, seen, messages[0].read_text()


def test_status_progress_moves_while_real_workers_run_each_stage(apiserver, api, operator, tmp_path, kondense_home):
    pvc = tmp_path / "pvc"
    lenet5_on_claim(pvc)
    manifest = tiny_manifest(NAME, NS)
    manifest["spec"]["budget"]["maxSteps"] = 2  # two annealing steps: 0%, 50%, 100% of stage 2
    api.create_cj(NS, manifest)

    for stage in (1, 2):
        job = wait_for(lambda stage=stage: api.get("Job", NS, child_name(NAME, stage)), 30, message=f"stage {stage}")
        configmap = api.get("ConfigMap", NS, child_name(NAME, stage))
        work = tmp_path / f"stage{stage}"
        work.mkdir()
        pods, seen, message = run_stage_watching(api, apiserver, job, configmap, pvc, work, kondense_home)
        rank0_log = apiserver.emulator.pod_logs.text(NS, pods[0]["metadata"]["name"])
        lines = [ln for ln in rank0_log.splitlines() if ln.startswith(progress.PREFIX)]
        assert lines, f"rank 0 printed no progress lines:\n{rank0_log[-3000:]}"
        assert not any(
            progress.PREFIX in ln
            for ln in apiserver.emulator.pod_logs.text(NS, pods[1]["metadata"]["name"]).splitlines()
        ), "rank 1 prints no progress lines"

        mine = [p for p in seen if p["stage"] == stage]
        assert mine == seen, f"stage {stage}'s Job showed another stage's progress: {seen}"
        percents = [p["percent"] for p in mine]
        print(f"stage {stage}: status.progress seen while it ran:", *(json.dumps(p) for p in mine), sep="\n  ")
        assert percents == sorted(percents), f"percent went back: {seen}"
        rises = len(set(percents)) - 1
        assert rises >= (2 if stage == 2 else 1), f"stage {stage}: status.progress did not move enough: {seen}"
        assert all(p["updateTime"].endswith("Z") and p["steps"] >= 1 for p in mine), seen
        if stage == 2:
            assert mine[-1]["compression"] > 1.0 and mine[-1]["valAccuracy"] > 0, seen
        api.succeed_job(job, pods, message)

    status = wait_for(lambda: (s := api.get_cj(NS, NAME).get("status") or {}).get("phase") == "Succeeded" and s, 30)
    assert "progress" not in status  # the results are in status.metrics now
