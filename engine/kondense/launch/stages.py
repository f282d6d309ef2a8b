"""Running a CompressionJob: each stage on its ranks, and the status on one machine.

The same path serves a pod (`kondense worker`: this pod's ranks of one stage) and this
machine (`kondense run`: every worker of every stage, through the same launcher). Rank 0
of a stage leaves its summary (kondense.job.status) in the termination-message file; on
Kubernetes the kubelet copies it into the pod status, where the operator reads it, and
`kondense run` reads it from the file. Both build the status with kondense.job.status, so
status.json has the shape of the CompressionJob's status on a cluster.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from kondense.files import save_json
from kondense.job import spec as spec_mod
from kondense.job import status as st
from kondense.launch.termination import write_termination_message

logger = logging.getLogger(__name__)


def rank_command(*args: str) -> list[str]:
    """The command every rank runs: a `kondense` subcommand in a fresh interpreter."""
    return [sys.executable, "-m", "kondense.cli", "_rank", "--", *args]


def run_stage(job: spec_mod.CompressionJob, stage: int, pvc_root: str | Path, comm) -> dict:
    """This rank's part of one stage; rank 0 writes and returns the stage summary."""
    from kondense.api import compress
    from kondense.pipeline.budget import Budget

    s = job.spec
    kwargs = {k: v for k, v in spec_mod.compress_kwargs(s, pvc_root).items() if k not in ("stage",)}
    # the last Job runs the spec's stage: stage 3 is stage 2's, followed by INT8 (spec.job_stages says why)
    run = spec_mod.run_stage_of(s.stage, stage)
    if run != s.stage:  # quantisation follows the last stage only
        kwargs["quantize"] = "none"
    out = spec_mod.local_path(s.output_uri, pvc_root)
    result = compress(
        spec_mod.model_argument(s, pvc_root),
        spec_mod.data_argument(s, pvc_root),
        stage=run,
        out=out,
        budget=Budget(**spec_mod.budget_kwargs(s)),
        comm=comm,
        **kwargs,
    )
    summary = st.stage_summary(result.report, stage, s.output_uri)
    if comm.is_root:
        write_termination_message(summary)
    return summary


def run_job(path: str | Path, pvc_root: str | Path) -> dict:
    """Run every stage of the manifest at `path` on this machine; returns (and saves) the status."""
    from kondense.launch.worker import launch_local

    job = spec_mod.load(path)
    s = job.spec
    out = spec_mod.local_path(s.output_uri, pvc_root)
    status_file = out / "status.json"
    generation = 1  # a manifest on disk has no generations; the operator's first is 1 too
    status = st.accepted(s, generation)
    logger.info("%s: %s", job.name, status["conditions"][0]["message"])
    for stage in spec_mod.job_stages(s.stage):
        status = dict(st.running(status, stage, s, generation), stageStartTime=st.now())
        save_json(status, status_file)
        logger.info("== %s: %s", job.name, status["message"])
        message_file = out / "checkpoints" / f"termination-stage{stage}.json"
        message_file.unlink(missing_ok=True)
        command = rank_command(
            "job", str(Path(path).resolve()), "--stage", str(stage), "--pvc-root", str(Path(pvc_root).resolve())
        )
        code = launch_local(
            s.workers, s.slots_per_worker, s.backend, command, env={"KONDENSE_TERMINATION_LOG": str(message_file)}
        )
        summary = st.parse_summary(message_file.read_text() if message_file.exists() else None) or {}
        if code != 0 or summary.get("error"):
            reason = summary.get("error") or f"the stage's processes failed (exit code {code}); see the log above"
            status = st.failed(
                status, "WorkerError" if summary.get("error") else "StageFailed", f"stage {stage}: {reason}", generation
            )
            save_json(status, status_file)
            logger.error("%s: %s", job.name, status["message"])
            return status
        status = st.apply_summary(status, summary)
        logger.info("%s: %s", job.name, st.stage_message(stage, summary))
    status = st.succeeded(status, generation)
    save_json(status, status_file)
    logger.info("%s: %s", job.name, status["message"])
    return status


__all__ = ["run_job", "run_stage", "rank_command"]
