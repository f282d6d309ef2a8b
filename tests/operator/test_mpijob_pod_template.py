"""The MPIJob the operator generates really runs: for each stage, take the launcher's container
command and env and run it here, as the launcher pod would, but without the MPI operator's host
file, so `kondense worker` starts every rank on this machine with mpirun (no ssh); its termination
message (rank 0's summary, relayed over mpirun's stdout) goes back into the launcher pod's status.
Two workers of one slot, a tiny budget, both stages. The ssh half (sshd in the worker pods) is
scripts/ssh/check.sh's, run in the worker image."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from kondense_operator import children, progress
from kondense_operator.children import child_name

from .conftest import KONDENSE_BIN, ApiServer, OperatorProcess, lenet5_on_claim, tiny_manifest, wait_for

# end to end (whole compressions), like test_pod_template.py: make test-e2e
pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun: make mpi (scripts/install-mpi.sh)"),
]
NS = "ml"
NAME = "lenet5-mpi"


@pytest.fixture(scope="module")
def apiserver():
    server = ApiServer(mpijobs=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(kubeconfig, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("op")
    (tmp / "worker.yaml").write_text("mpiJob: {enabled: true}\n")
    op = OperatorProcess(
        kubeconfig, tmp / "operator.log", ["--all-namespaces", "--worker-config", str(tmp / "worker.yaml")]
    ).start()
    yield op
    op.stop()


def run_launcher(mpijob: dict, configmap: dict, pvc_root: Path, work: Path, home: Path) -> tuple[str, str]:
    """The launcher's container as its pod would start it, paths mapped onto this machine;
    returns (its output, its termination message)."""
    replicas = mpijob["spec"]["mpiReplicaSpecs"]
    (container,) = replicas["Launcher"]["template"]["spec"]["containers"]
    # the ranks run in the worker pods: the claim is theirs, mounted where the launcher's command says
    (worker,) = replicas["Worker"]["template"]["spec"]["containers"]
    assert {m["mountPath"] for m in worker["volumeMounts"]} >= {f"{children.PVC_ROOT}/models", children.CONFIG_DIR}
    job_file = work / "job.yaml"
    job_file.write_text(configmap["data"]["job.yaml"])
    command = list(container["command"])
    assert command[:2] == ["kondense", "worker"]
    command[0] = str(KONDENSE_BIN)
    command[command.index("--job") + 1] = str(job_file)  # the ConfigMap's mount, the same in every pod
    command[command.index("--pvc-root") + 1] = str(pvc_root)  # /mnt/pvc
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KONDENSE_BACKEND"] == "mpi" and "KONDENSE_COORDINATOR" not in env
    message = work / "termination-log"
    env.update(KONDENSE_HOME=str(home), HOME=str(work), KONDENSE_TIMEOUT="120", KONDENSE_TERMINATION_LOG=str(message))
    penv = {**os.environ, **env}
    for name in ("OMPI_MCA_orte_default_hostfile", "OMPI_MCA_prte_default_hostfile", "HYDRA_HOST_FILE"):
        penv.pop(name, None)  # no MPI operator here: every rank on this machine
    proc = subprocess.Popen(
        command, env=penv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out = proc.communicate(timeout=600)[0]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # mpirun's ranks too
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, out[-4000:]
    return out, message.read_text()


def test_generated_launcher_runs_both_stages(apiserver, api, operator, tmp_path, kondense_home):
    pvc = tmp_path / "pvc"
    lenet5_on_claim(pvc)
    manifest = tiny_manifest(NAME, NS, workers=2, slotsPerWorker=1, backend="mpi")
    api.create_cj(NS, manifest)

    for stage in (1, 2):
        mj = wait_for(
            lambda stage=stage: api.get("MPIJob", NS, child_name(NAME, stage)), 30, message=f"stage {stage} MPIJob"
        )
        configmap = api.get("ConfigMap", NS, child_name(NAME, stage))
        assert yaml.safe_load(configmap["data"]["job.yaml"])["spec"]["backend"] == "mpi"
        launcher, workers = api.start_mpijob(mj)
        work = tmp_path / f"stage{stage}"
        work.mkdir()
        out, message = run_launcher(mj, configmap, pvc, work, kondense_home)
        # rank 0's progress lines come back through mpirun into the launcher's log, where the operator reads them
        assert (progress.last_progress(out) or {}).get("stage") == stage, out[-4000:]
        assert len(message.encode()) <= 4096 and json.loads(message)["stage"] == stage
        api.succeed_mpijob(mj, launcher, workers, message)

    status = wait_for(lambda: (s := api.get_cj(NS, NAME).get("status") or {}).get("phase") == "Succeeded" and s, 30)
    six = {"accuracy", "sizeMB", "macsG", "paramsM", "memoryMB", "latencyMs"}
    for key in ("original", "stage1", "stage2"):
        assert set(status["metrics"][key]) == six
    assert status["metrics"]["enhancement"]["accuracyDrop"] <= 10
    assert status["artifacts"]["model"] == "pvc://models/out/model.pt"
    assert (pvc / "models" / "out" / "model.ts").exists()
