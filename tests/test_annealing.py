"""Stage 2's schedule: it spends the budget (no step cap by default), its allowance recovers after a
kept step, and it stops on patience or on the caps a user sets."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, TensorDataset

from kondense.pipeline.annealing import anneal
from kondense.pipeline.budget import Budget
from kondense.pipeline.context import Context
from kondense.pipeline.distill import FineTune
from kondense.pipeline.exploration import StageResult
from kondense.pipeline.runstate import RunDir
from kondense.pipeline.timing import Stopwatch
from tests.tinynet import TinyNet


class ScriptedJudge:
    """Every composition keeps the scan accuracy; validation after each step follows a script."""

    def __init__(self, vals: list[float]) -> None:
        self.vals = list(vals)
        g = torch.Generator().manual_seed(0)
        self.recal = DataLoader(  # the training samples annealing's gradient estimates read
            TensorDataset(torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)),
            batch_size=32,
        )

    def scan_accuracy(self, model: torch.nn.Module) -> float:
        return 90.0

    def val_accuracy(self, model: torch.nn.Module) -> float:
        return self.vals.pop(0)


@dataclass
class CountingFineTune(FineTune):
    """Counts its runs and reports the samples a real one would process, without training."""

    runs: list[str] = field(default_factory=list)  # the description of every run, in order

    @property
    def calls(self) -> int:
        return len(self.runs)

    def run(self, model, data, epochs, seed, description="", comm=None) -> int:
        self.runs.append(description)
        return self.samples(len(data), epochs)


def anneal_with(tmp_path, vals: list[float], finetune: FineTune | None = None, **budget) -> tuple[Context, list[dict]]:
    model = TinyNet().eval()
    ctx = Context(
        original=model,
        example=torch.zeros(2, 1, 28, 28),
        delta=1.0,
        objective="params",
        protected={"fc2"},
        judge=ScriptedJudge(vals),
        finetune=finetune or CountingFineTune(batch_size=10),
        teacher_data=list(range(100)),
        budget=Budget(**{"step_drop": 2.0, "safety": 0.0, **budget}),
        run=RunDir(tmp_path, {}),
        original_val=90.0,
        stopwatch=Stopwatch({}),
    )
    result, history = anneal(ctx, StageResult(model, [], 90.0))
    return ctx, history


def test_annealing_runs_until_patience_and_its_allowance_recovers(tmp_path) -> None:
    # kept, rejected, kept, rejected, rejected: the floor is 89.0
    ctx, history = anneal_with(tmp_path, [89.5, 80.0, 89.6, 80.0, 80.0], patience=2)
    assert [p["accepted"] for p in history[1:]] == [True, False, True, False, False]
    # allowance 2 -> kept: 2 (recovers up to where it started) -> rejected: 1 -> kept: 2 -> rejected: 1 -> rejected: 0.5
    assert ctx.run.state["stage2"]["drop"] == 0.5
    assert ctx.samples == 500 and ctx.stopwatch.seconds["scan"] > 0


def test_caps_a_user_sets_end_annealing_early(tmp_path) -> None:
    ctx, history = anneal_with(tmp_path / "steps", [89.5] * 10, max_steps=3)
    assert len(history) == 4  # stage 1 and three steps, all kept
    ctx, history = anneal_with(tmp_path / "samples", [89.5] * 10, max_samples=250)
    assert len(history) == 3 and ctx.samples == 200  # a third step would pass 250 samples


def test_a_step_just_below_the_floor_is_fine_tuned_once_more_before_it_is_given_up(tmp_path) -> None:
    # step 1: 88.7 (half a point below the floor 89.0 at most: trained again) -> 89.1, kept;
    # step 2: 88.8 -> 88.9 still below, rejected; step 3: 80.0, far below: rejected at once
    ctx, history = anneal_with(tmp_path, [88.7, 89.1, 88.8, 88.9, 80.0], patience=2)
    assert [(p["valAccuracy"], p["accepted"]) for p in history[1:]] == [(89.1, True), (88.9, False), (80.0, False)]
    assert ctx.finetune.calls == 5 and ctx.samples == 500
