"""The pod template the operator generates really runs: for each stage, take the Job's pod spec,
run its container command with its env as one local process per completion index (the cluster's
names and paths mapped onto this machine), and feed rank 0's termination message back into the
pod status. Two workers over torch.distributed, a tiny budget, both stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from kondense_operator import children
from kondense_operator.children import child_name

from .conftest import KONDENSE_BIN, free_port, lenet5_on_claim, tiny_manifest, wait_for

pytestmark = pytest.mark.timeout(900)
NS = "ml"
NAME = "lenet5-local"


def run_pods(job: dict, configmap: dict, pvc_root: Path, work: Path, home: Path) -> tuple[list[str], str]:
    """One process per index, as the kubelet would start the pod's container; returns
    (each process's output, index 0's termination message)."""
    procs, messages = start_pods(job, configmap, pvc_root, work, home)
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the worker's ranks too
            except ProcessLookupError:
                pass
            p.wait()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return outputs, messages[0].read_text()


def start_pods(
    job: dict, configmap: dict, pvc_root: Path, work: Path, home: Path
) -> tuple[list[subprocess.Popen], list[Path]]:
    """The pods' processes started, each in its own process group (its ranks with it); returns
    (processes, their termination-message files) by index."""
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {
        v["persistentVolumeClaim"]["claimName"]: mounts[v["name"]]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"models": f"{children.PVC_ROOT}/models"}, "each claim mounted at /mnt/pvc/CLAIM"
    job_file = work / "job.yaml"
    job_file.write_text(configmap["data"]["job.yaml"])

    command = list(container["command"])
    assert command[0] == "kondense"
    command[0] = str(KONDENSE_BIN)
    command[command.index("--job") + 1] = str(job_file)  # the ConfigMap's mount
    command[command.index("--pvc-root") + 1] = str(pvc_root)  # /mnt/pvc
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KONDENSE_COORDINATOR"] == f"{job['metadata']['name']}-0.{spec['subdomain']}"
    env.update(
        KONDENSE_COORDINATOR="127.0.0.1",
        KONDENSE_PORT=str(free_port()),
        KONDENSE_HOME=str(home),
        HOME=str(work),
        KONDENSE_TIMEOUT="120",
    )
    procs, messages = [], []
    for index in range(job["spec"]["completions"]):
        message = work / f"termination-{index}"
        messages.append(message)
        penv = {**os.environ, **env, "JOB_COMPLETION_INDEX": str(index), "KONDENSE_TERMINATION_LOG": str(message)}
        penv.pop("KONDENSE_WORKER_INDEX", None)
        # its own process group: a failed test must not leave ranks behind
        procs.append(
            subprocess.Popen(
                command, env=penv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
        )
    return procs, messages


def test_generated_pods_run_both_stages(apiserver, api, operator, tmp_path, kondense_home):
    pvc = tmp_path / "pvc"
    lenet5_on_claim(pvc)
    manifest = tiny_manifest(NAME, NS)
    api.create_cj(NS, manifest)

    for stage in (1, 2):
        job = wait_for(
            lambda stage=stage: api.get("Job", NS, child_name(NAME, stage)), 30, message=f"stage {stage} Job"
        )
        configmap = api.get("ConfigMap", NS, child_name(NAME, stage))
        assert yaml.safe_load(configmap["data"]["job.yaml"])["spec"]["budget"]["trainSamples"] == 1000
        pods = api.start_job(job)
        work = tmp_path / f"stage{stage}"
        work.mkdir()
        _, message = run_pods(job, configmap, pvc, work, kondense_home)
        assert len(message.encode()) <= 4096 and json.loads(message)["stage"] == stage
        api.succeed_job(job, pods, message)

    status = wait_for(lambda: (s := api.get_cj(NS, NAME).get("status") or {}).get("phase") == "Succeeded" and s, 30)
    six = {"accuracy", "sizeMB", "macsG", "paramsM", "memoryMB", "latencyMs"}
    for key in ("original", "stage1", "stage2"):
        assert set(status["metrics"][key]) == six
    assert set(status["metrics"]["enhancement"]) == {"accuracyDrop", "size", "macs", "params", "memory", "latency"}
    assert status["metrics"]["enhancement"]["accuracyDrop"] <= 10
    assert status["artifacts"]["model"] == "pvc://models/out/model.pt"
    assert (pvc / "models" / "out" / "model.ts").exists()
