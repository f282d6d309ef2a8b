"""The CompressionJob's status: one shape on one machine and on a cluster.

`kondense run` (kondense.launch.stages.run_job) saves it as status.json; the operator writes it
into the CompressionJob. Both build it here: the phases, metav1 conditions (one entry per type),
the transitions between phases, the stage summary that rank 0 leaves in its termination message
(written and read back here), and the one wording of a result. Standard library only: the
operator imports this module and must never import torch.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kondense.job.spec import JobSpec

PENDING, RUNNING, SUCCEEDED, FAILED, SUSPENDED = "Pending", "Running", "Succeeded", "Failed", "Suspended"
PHASES = (PENDING, RUNNING, SUCCEEDED, FAILED, SUSPENDED)
TERMINAL = (SUCCEEDED, FAILED)

TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of a termination message
ERROR_LIMIT = 3000  # characters of an error a summary keeps: within TERMINATION_LIMIT once quoted
STAGE3_NOTE_LIMIT = 400  # characters of why stage 3 kept no model: beside the metrics, within TERMINATION_LIMIT
ARTIFACTS = {"model": "model.pt", "torchscript": "model.ts", "report": "report.json", "plan": "plan.json"}


def now() -> str:
    """The current UTC time as Kubernetes writes it (RFC 3339, whole seconds)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    """A timestamp of the status or of a Job; None when absent or unreadable."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# conditions


def set_condition(
    conditions: list[dict], type_: str, status: bool, reason: str, message: str, generation: int
) -> list[dict]:
    """metav1.Condition semantics: one entry per type; lastTransitionTime moves only when the
    status flips, so `kubectl wait --for=condition=Succeeded` and dashboards see real transitions."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions]
    for c in out:
        if c.get("type") == type_:
            if c.get("status") != value:
                c["lastTransitionTime"] = now()
            c.update(status=value, reason=reason, message=message, observedGeneration=generation)
            return out
    out.append(
        {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now(),
            "observedGeneration": generation,
        }
    )
    return out


def condition(conditions: list[dict] | None, type_: str) -> dict | None:
    """The condition of that type, or None."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)


# ---------------------------------------------------------------------------------------------
# transitions: each takes a status and returns the next one


def workers_text(spec: JobSpec) -> str:
    """ "2 worker(s) x 1 torch process(es)": where a stage runs, in status messages and the log."""
    return f"{spec.workers} worker(s) x {spec.slots_per_worker} {spec.backend} process(es)"


def accepted(spec: JobSpec, generation: int = 1) -> dict:
    """A new status: the job is accepted and stage 1 comes first."""
    message = f"accepted: stage {spec.stage} on {workers_text(spec)}"
    start = now()
    return {
        "phase": PENDING,
        "stage": 1,
        "startTime": start,
        "stageStartTime": start,
        "observedGeneration": generation,
        "conditions": set_condition([], "Created", True, "Created", message, generation),
    }


def running(status: dict, stage: int, spec: JobSpec, generation: int) -> dict:
    """`stage` runs; condition Running stays True from stage to stage (its reason names the stage)."""
    # stage 3 has no Job of its own: it is the end of stage 2's (kondense.job.spec.job_stages)
    then = " (then stage 3, INT8, in the same processes)" if spec.stage == 3 and stage == 2 else ""
    reason, message = f"Stage{stage}Running", f"stage {stage}{then} running on {workers_text(spec)}"
    out = dict(status, phase=RUNNING, stage=stage, reason=reason, message=message)
    out["conditions"] = set_condition(out.get("conditions") or [], "Running", True, reason, message, generation)
    return out


def succeeded(status: dict, generation: int) -> dict:
    """Every stage finished: phase and condition Succeeded, Running (and Suspended) False."""
    message = success_message(status)
    out = dict(status, phase=SUCCEEDED, completionTime=now(), reason="Succeeded", message=message)
    conds = set_condition(out.get("conditions") or [], "Running", False, "Completed", "all stages finished", generation)
    if condition(conds, "Suspended"):
        conds = set_condition(conds, "Suspended", False, "Completed", "all stages finished", generation)
    out["conditions"] = set_condition(conds, "Succeeded", True, "Succeeded", message, generation)
    return out


def failed(status: dict, reason: str, message: str, generation: int) -> dict:
    """Phase and condition Failed with the reason; final (nothing moves a failed job on)."""
    out = dict(
        status, phase=FAILED, reason=reason, message=message, completionTime=now(), observedGeneration=generation
    )
    if not out.get("startTime"):  # failed before it was accepted (an invalid spec)
        out["startTime"] = out["completionTime"]
    conds = out.get("conditions") or []
    if condition(conds, "Running"):
        conds = set_condition(conds, "Running", False, reason, message, generation)
    out["conditions"] = set_condition(conds, "Failed", True, reason, message, generation)
    return out


# ---------------------------------------------------------------------------------------------
# the stage summary: what rank 0 of a stage tells whoever runs the job


def stage_summary(report: dict, stage: int, output_uri: str) -> dict:
    """A finished stage (its Job's, `stage`): its metrics so far, the enhancement (of the last stage that
    produced a model), where the artifacts are (model.onnx only where it was written: its parity check passed).
    Where the run was stage 3 (the tail of stage 2's Job), "stage3" says "kept" or why no INT8 model was."""
    base = output_uri.rstrip("/")
    summary = {
        "stage": stage,
        "metrics": {k: report[k] for k in ("original", "stage1", "stage2", "stage3") if k in report},
        "enhancement": report["enhancement"],
        "trainingSamples": report.get("trainingSamples", 0),
        "artifacts": {key: f"{base}/{name}" for key, name in ARTIFACTS.items()}
        | {key: f"{base}/{name}" for key in ("onnx", "int8") if (name := (report.get(key) or {}).get("file"))},
    }
    if report.get("stage") == 3:
        int8 = report.get("int8") or {}
        reason = int8.get("error") or "no reason recorded"
        summary["stage3"] = "kept" if "stage3" in report else reason[:STAGE3_NOTE_LIMIT]
    return summary


def error_summary(stage: int, error: str) -> dict:
    """A failed stage: the error the user can act on."""
    return {"stage": stage, "error": error[:ERROR_LIMIT]}


def summary_text(summary: dict) -> str:
    """Compact JSON within the kubelet's 4 KiB; numbers are rounded so that it always fits."""
    text = json.dumps(_rounded(summary), separators=(",", ":"))
    if len(text.encode()) > TERMINATION_LIMIT:
        text = json.dumps({k: summary[k] for k in ("stage", "error") if k in summary} | {"truncated": True})
    return text


def parse_summary(text: str | None) -> dict | None:
    """A summary from its text, or None for anything else (a missing file, or the log's tail that
    FallbackToLogsOnError puts in the termination message when a worker died without one)."""
    try:
        value = json.loads(text or "")
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def apply_summary(status: dict, summary: dict) -> dict:
    """A finished stage's results into the status: metrics, enhancement, artifacts, samples."""
    out = dict(status)
    metrics = dict(out.get("metrics") or {})
    metrics.update(summary.get("metrics") or {})
    if summary.get("enhancement"):
        metrics["enhancement"] = summary["enhancement"]
    out["metrics"] = metrics
    if summary.get("stage3"):
        out["stage"] = 3  # "the last stage that ran": stage 3 ran at the end of stage 2's Job
    if summary.get("artifacts"):
        out["artifacts"] = summary["artifacts"]
    if "trainingSamples" in summary:
        out["trainingSamples"] = summary["trainingSamples"]
    return out


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# the words for a result, the same in status messages, Events and the log


def enhancement_text(enhancement: dict | None) -> str:
    """ "3.0x (params), 4.0x (size) at 1.00 points", or "" when the enhancement is incomplete."""
    e = enhancement or {}
    try:
        return f"{float(e['params']):.1f}x (params), {float(e['size']):.1f}x (size) at {float(e['accuracyDrop']):.2f} points"
    except (KeyError, TypeError, ValueError):
        return ""


def stage_message(stage: int, summary: dict) -> str:
    """What a finished stage achieved, for an Event or a log line."""
    text = enhancement_text(summary.get("enhancement"))
    stage3 = summary.get("stage3")
    done = f"stages {stage} and 3 succeeded" if stage3 else f"stage {stage} succeeded"
    kept = f"; stage 3 kept no INT8 model: {stage3}" if stage3 and stage3 != "kept" else ""
    return done + (f": {text}" if text else "") + kept


def success_message(status: dict) -> str:
    """The status message of a job whose every stage succeeded."""
    metrics = status.get("metrics") or {}
    text = enhancement_text(metrics.get("enhancement"))
    kept = "" if status.get("stage") != 3 or "stage3" in metrics else " (stage 3 kept no INT8 model: see report.md)"
    return (f"compressed {text}" if text else "all stages succeeded") + kept
