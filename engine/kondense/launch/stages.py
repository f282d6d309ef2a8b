"""Running a CompressionJob: each stage on its ranks, and the status the operator writes.

The same path serves a pod (`kondense worker`: this pod's ranks of one stage) and this
machine (`kondense run`: every worker of every stage, through the same launcher). Rank 0
of a stage leaves a small JSON summary in the termination-message file; on Kubernetes
the kubelet copies it into the pod status, where the operator reads it.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Callable

from kondense.job import spec as spec_mod
from kondense.files import atomic_write, save_json

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of a termination message
Log = Callable[[str], None]


def rank_command(*args: str) -> list[str]:
    """The command every rank runs: a `kondense` subcommand in a fresh interpreter."""
    return [sys.executable, "-m", "kondense.cli", "_rank", "--", *args]


def run_stage(job: spec_mod.CompressionJob, stage: int, pvc_root: str | Path, comm, log: Log = print) -> dict:
    """This rank's part of one stage; rank 0 writes and returns the stage summary."""
    from kondense.api import compress
    from kondense.pipeline.context import Budget

    s = job.spec
    kwargs = {k: v for k, v in spec_mod.compress_kwargs(s).items() if k not in ("stage",)}
    out = spec_mod.local_path(s.output_uri, pvc_root)
    result = compress(spec_mod.model_argument(s, pvc_root), spec_mod.data_argument(s, pvc_root), stage=stage, out=out,
                      budget=Budget(**spec_mod.budget_kwargs(s)), comm=comm, log=log, **kwargs)
    summary = stage_summary(result.report, stage, s.output_uri)
    if comm.is_root:
        write_termination_message(summary)
    return summary


def stage_summary(report: dict, stage: int, output_uri: str) -> dict:
    """What a stage tells the operator: its metrics so far, the enhancement, where the artifacts are."""
    base = output_uri.rstrip("/")
    return {
        "stage": stage,
        "metrics": {k: report[k] for k in ("original", "stage1", "stage2") if k in report},
        "enhancement": report["enhancement"],
        "trainingSamples": report.get("trainingSamples", 0),
        "artifacts": {"model": f"{base}/model.pt", "torchscript": f"{base}/model.ts", "report": f"{base}/report.json",
                      "plan": f"{base}/plan.json"},
    }


def termination_path() -> Path | None:
    configured = os.environ.get("KONDENSE_TERMINATION_LOG")
    if configured:
        return Path(configured)
    default = Path(TERMINATION_LOG)
    return default if default.exists() and os.access(default, os.W_OK) else None


def write_termination_message(summary: dict) -> None:
    """Compact JSON within the kubelet's 4 KiB; numbers are rounded so it always fits."""
    path = termination_path()
    if path is None:
        return
    text = json.dumps(_rounded(summary), separators=(",", ":"))
    if len(text.encode()) > TERMINATION_LIMIT:
        text = json.dumps({k: summary[k] for k in ("stage", "error") if k in summary} | {"truncated": True})
    if path.parent.exists() and str(path).startswith("/dev/"):
        path.write_text(text)  # a device file cannot be replaced atomically
    else:
        atomic_write(path, lambda tmp: tmp.write_text(text))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, reason: str, message: str, generation: int = 1) -> dict:
    """A metav1.Condition."""
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now(),
            "observedGeneration": generation}


def run_job(path: str | Path, pvc_root: str | Path, log: Log = print) -> dict:
    """Run every stage of the manifest at `path` on this machine; returns (and saves) the status."""
    from kondense.launch.worker import launch_local

    job = spec_mod.load(path)
    s = job.spec
    out = spec_mod.local_path(s.output_uri, pvc_root)
    status_file = out / "status.json"
    status: dict = {"phase": "Pending", "stage": 0, "startTime": now(), "conditions": [condition("Created", "Created", f"{job.name} accepted")],
                    "metrics": {}}
    stages = [1] if s.stage == 1 else [1, 2]
    for stage in stages:
        status.update(phase="Running", stage=stage)
        status["conditions"].append(condition("Running", f"Stage{stage}Running", f"stage {stage} on {s.workers} x {s.slots_per_worker} {s.backend} processes"))
        save_json(status, status_file)
        log(f"== {job.name}: stage {stage} on {s.workers} worker(s) x {s.slots_per_worker} process(es), backend {s.backend}")
        message_file = out / "checkpoints" / f"termination-stage{stage}.json"
        message_file.unlink(missing_ok=True)
        code = launch_local(s.workers, s.slots_per_worker, s.backend,
                            rank_command("job", str(Path(path).resolve()), "--stage", str(stage), "--pvc-root", str(Path(pvc_root).resolve())),
                            log=log, env={"KONDENSE_TERMINATION_LOG": str(message_file)})
        summary = json.loads(message_file.read_text()) if message_file.exists() else {}
        if code != 0 or "error" in summary:
            reason = summary.get("error") or f"stage {stage} failed (exit code {code}); see the log above"
            status.update(phase="Failed", completionTime=now())
            status["conditions"].append(condition("Failed", f"Stage{stage}Failed", reason))
            save_json(status, status_file)
            return status
        status["metrics"].update(summary["metrics"])
        status["metrics"]["enhancement"] = summary["enhancement"]
        status["artifacts"] = summary["artifacts"]
    status.update(phase="Succeeded", completionTime=now())
    status["conditions"].append(condition("Succeeded", "Succeeded", f"compressed {status['metrics']['enhancement']['params']:.1f}x (params) "
                                          f"at {status['metrics']['enhancement']['accuracyDrop']:.2f} points"))
    save_json(status, status_file)
    return status


def fail_message(error: str, stage: int) -> None:
    """Rank 0's last word when a stage fails with an error the user can act on."""
    try:
        write_termination_message({"stage": stage, "error": error[:3000]})
    except OSError:
        pass


__all__ = ["run_job", "run_stage", "rank_command", "stage_summary", "write_termination_message", "fail_message"]
