"""The state of a compression run in its output directory, so a killed run resumes.

state.json says how far the run got; each finished step has a checkpoint that
kondense.pipeline.artifacts writes and rebuilds (steps + weights, replayed on the original model).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from kondense.errors import KondenseError
from kondense.files import save_json
from kondense.pipeline import artifacts
from kondense.pipeline.plan import Step


class RunDir:
    """Every rank keeps the same state in memory; only the `writer` (rank 0) writes it."""

    def __init__(self, path: str | Path, fingerprint: dict, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer
        self.checkpoints = self.path / "checkpoints"
        self.state_file = self.checkpoints / "state.json"
        self.state: dict = {}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
            if not _same(self.state.get("fingerprint"), fingerprint):
                raise KondenseError(
                    f"{self.path} holds a run with other settings ({_diff(self.state.get('fingerprint', {}), fingerprint)}); "
                    "use another --out directory, or delete this one to start over"
                )
        else:
            self.state = {"fingerprint": fingerprint}

    @property
    def resumed(self) -> bool:
        return len(self.state) > 1

    def save(self) -> None:
        if self.writer:
            save_json(self.state, self.state_file)

    def save_model(self, tag: str, model: nn.Module, steps: list[Step]) -> str:
        path = self.checkpoints / f"{tag}.pt"
        if self.writer:
            artifacts.save_state(path, model, steps)
        return path.name

    def load_model(self, name: str, original: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[Step]]:
        return artifacts.load_state(self.checkpoints / name, original, example)


def _same(old: object, new: object) -> bool:
    """Whether a run directory's settings are these. A setting that a later version added, at None (its
    "off"), matches its absence: a run started before an upgrade resumes after it (the operator's next
    stage may run a newer image than the last)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return set(old) <= set(new) and all(_same(old[k], v) if k in old else v is None for k, v in new.items())
    return old == new


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:3])
