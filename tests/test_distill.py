"""Fine-tuning's learning-rate schedule: a short warm-up, then cosine decay."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import TensorDataset

from kondense.pipeline.distill import FineTune, WithTeacher, warmup_cosine


def test_warmup_rises_linearly_to_the_full_rate_then_decays_to_zero() -> None:
    factor = warmup_cosine(100, 0.1)
    rates = [factor(step) for step in range(100)]
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert max(rates) == 1.0 and rates[10] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(rates[10:])), "decay must never rise again"
    assert rates[-1] < 0.001


def test_no_warmup_is_plain_cosine_and_a_single_step_gets_the_full_rate() -> None:
    factor = warmup_cosine(20, 0.0)
    assert [factor(s) for s in range(20)] == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 20)) for s in range(20)])
    assert warmup_cosine(1, 0.1)(0) == 1.0


def test_fine_tune_steps_follow_the_schedule() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    data = WithTeacher(TensorDataset(x, y), torch.randn(64, 3))
    rates: list[float] = []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
    try:
        seen = FineTune(batch_size=8, lr=0.05, warmup=0.25).run(model, data, epochs=2.0, seed=0)
    finally:
        hook.remove()
    assert seen == 128 and len(rates) == 16
    # 4 warm-up steps of 16: 0.05/4, 0.05/2, ..., then the full rate, then down
    assert rates[:5] == pytest.approx([0.0125, 0.025, 0.0375, 0.05, 0.05])
    assert rates[-1] < 0.005
