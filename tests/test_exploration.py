"""Stage 1's attempts: a plan that fine-tuning cannot bring within delta is retried with half the
allowance, as long as another attempt stays within the training-sample cap."""

from __future__ import annotations

import torch

from kondense.pipeline.budget import Budget
from kondense.pipeline.context import Context
from kondense.pipeline.exploration import explore
from kondense.pipeline.runstate import RunDir
from kondense.pipeline.timing import Stopwatch
from tests.test_annealing import CountingFineTune, ScriptedJudge
from tests.tinynet import TinyNet


class StageOneJudge(ScriptedJudge):
    """ScriptedJudge as the stage 1 scan asks it: one process judges every trial."""

    recal_samples = 64

    def scan_accuracy_alone(self, model: torch.nn.Module) -> float:
        return self.scan_accuracy(model)


def explore_with(tmp_path, vals: list[float], **budget) -> tuple[Context, float]:
    ctx = Context(
        original=TinyNet().eval(),
        example=torch.zeros(2, 1, 28, 28),
        delta=1.0,
        objective="params",
        protected={"fc2"},
        judge=StageOneJudge(vals),
        finetune=CountingFineTune(batch_size=10),
        teacher_data=list(range(100)),
        budget=Budget(**{"ratios": (0.5,), "safety": 0.0, "stage1_epochs": 1.0, **budget}),
        run=RunDir(tmp_path, {}),
        original_val=90.0,
        stopwatch=Stopwatch({}),
    )
    return ctx, explore(ctx).val_accuracy


def test_an_attempt_below_the_floor_is_retried_with_half_the_allowance(tmp_path) -> None:
    # the floor is 89.0: 88.7 -> a second attempt at half the allowance -> 89.2, kept
    ctx, val = explore_with(tmp_path / "retried", [88.7, 89.2])
    assert val == 89.2 and ctx.samples == 200 and ctx.finetune.runs == ["stage 1 fine-tune"] * 2
    assert ctx.run.state["stage1"]["valAccuracy"] == 89.2


def test_no_attempt_passes_the_sample_cap(tmp_path) -> None:
    # 100 samples per attempt, a cap of 150: no second attempt, and the original is kept
    ctx, val = explore_with(tmp_path, [88.7, 99.0], max_samples=150)
    assert val == 90.0 and ctx.finetune.calls == 1 and ctx.samples == 100
