"""A worker container's requests and limits: merged from the worker config's defaults, the
CompressionJob's spec.resources and the GPU limit of device cuda, and checked the way the API
server checks a pod before any child exists. A bad mix then fails the CompressionJob at once
with the field to fix (reason InvalidResources), instead of a Job whose pods are refused one by
one, or a refused child with the API server's message about a field the user never wrote.
Pure: no API calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from kubernetes.utils import parse_quantity

from kondense.job import spec as spec_mod

from .config import WorkerConfig

INVALID = "InvalidResources"
GPU_RESOURCE = "nvidia.com/gpu"
# the resources a request may stay below the limit for (the API server's IsOverCommitAllowed):
# native ones (no domain, or *kubernetes.io/) except hugepages-*; extended ones such as GPUs
# must request exactly their limit
_OVERCOMMIT_DOMAINS = ("", "kubernetes.io")


@dataclass
class Merged:
    """requests and limits ({name: quantity}), and where each value came from, for messages."""

    requests: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)  # ("requests"|"limits", name) -> a phrase

    def as_resources(self) -> dict:
        """The container's `resources`, empty parts left out."""
        return {k: dict(v) for k, v in (("requests", self.requests), ("limits", self.limits)) if v}


def merge(job: spec_mod.CompressionJob, cfg: WorkerConfig) -> Merged:
    """The admin's defaults, the job's own requests/limits over them, and one GPU per slot for cuda."""
    out = Merged()
    layers = (
        (cfg.resources or {}, "the worker config's resources.{part}.{name}"),
        (job.spec.resources or {}, "spec.resources.{part}.{name}"),
    )
    for given, where in layers:
        for part in ("requests", "limits"):
            for name, value in (given.get(part) or {}).items():
                getattr(out, part)[name] = value
                out.origin[(part, name)] = where.format(part=part, name=name)
    if job.spec.device == "cuda":
        out.limits[GPU_RESOURCE] = job.spec.slots_per_worker
        out.origin[("limits", GPU_RESOURCE)] = "spec.slotsPerWorker, one GPU per slot for device cuda"
    return out


def launcher(cfg: WorkerConfig) -> Merged:
    """The MPI launcher's requests and limits: the worker config's mpiJob.launcherResources alone."""
    given = cfg.mpi_job.get("launcherResources") or {}
    out = Merged()
    for part in ("requests", "limits"):
        for name, value in (given.get(part) or {}).items():
            getattr(out, part)[name] = value
            out.origin[(part, name)] = f"the worker config's mpiJob.launcherResources.{part}.{name}"
    return out


def overcommit_allowed(name: str) -> bool:
    """Whether a request may be below its limit: cpu, memory, ephemeral-storage, not hugepages-* or
    extended resources (nvidia.com/gpu, ...)."""
    domain = name.rsplit("/", 1)[0] if "/" in name else ""
    native = domain in _OVERCOMMIT_DOMAINS or domain.endswith(".kubernetes.io")
    return native and not name.split("/")[-1].startswith("hugepages-")


def problems(merged: Merged) -> list[str]:
    """What the API server would refuse in these requests and limits, each naming its field."""
    out: list[str] = []
    parsed: dict = {}
    for part in ("requests", "limits"):
        for name, value in getattr(merged, part).items():
            try:
                parsed[(part, name)] = Decimal(parse_quantity(value))
            except (ValueError, TypeError):
                out.append(f"{merged.origin[(part, name)]} ({value}) is not a quantity such as 500m, 2Gi or 4")
    for name, value in merged.requests.items():
        request = parsed.get(("requests", name))
        if request is None:
            continue
        where = merged.origin[("requests", name)]
        if name not in merged.limits:
            if not overcommit_allowed(name):
                out.append(
                    f"{where} ({value}) has no limit: {name} cannot be overcommitted, so the API server "
                    f"needs limits.{name} equal to the request; set both, or the limit alone"
                )
            continue
        limit = parsed.get(("limits", name))
        if limit is None:
            continue
        lim_text = f"{merged.limits[name]}, from {merged.origin[('limits', name)]}"
        if not overcommit_allowed(name) and request != limit:
            out.append(
                f"{where} ({value}) differs from the limit ({lim_text}): {name} cannot be overcommitted, "
                "so its request must equal its limit"
            )
        elif request > limit:
            out.append(f"{where} ({value}) is above the limit ({lim_text})")
    return out


def invalid(job: spec_mod.CompressionJob, cfg: WorkerConfig) -> str | None:
    """Why this job's pods would be refused for their resources (None: they would not): the
    message of a CompressionJob failed with reason INVALID."""
    found = [f"worker pods: {p}" for p in problems(merge(job, cfg))]
    if job.spec.backend == "mpi":
        found += [f"MPI launcher pod: {p}" for p in problems(launcher(cfg))]
    return "; ".join(found) or None
