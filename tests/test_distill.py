"""Fine-tuning's learning-rate schedule: a short warm-up, then cosine decay."""

from __future__ import annotations

import copy
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


def test_a_weak_teacher_does_not_hold_the_student_below_label_training() -> None:
    """An undertrained original: fine-tuning with kondense's distillation reaches what plain label
    training of the same network reaches with the same samples, well above the teacher."""
    from torch.nn import functional as F

    from kondense.measure.profile import accuracy
    from kondense.pipeline.distill import cache_teacher
    from kondense.train import recalibrate_batchnorm
    from tests.tinynet import TinyNet, small_data

    bundle = small_data()
    train, val = bundle.loaders(batch_size=64, seed=0)[:2]
    torch.manual_seed(0)
    teacher = TinyNet()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    for x, y in itertools.islice(train, 6):  # a few steps: a teacher far from what the network can do
        optimizer.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    recalibrate_batchnorm(teacher, train)
    teacher.eval()
    taught = cache_teacher(teacher, bundle.train)

    def fine_tuned(**loss) -> float:
        student = copy.deepcopy(teacher)
        FineTune(batch_size=64, lr=0.02, precision="fp32", **loss).run(student, taught, epochs=3, seed=0)
        return accuracy(student.eval(), val)

    weak = accuracy(teacher, val)
    distilled = fine_tuned()
    labels_only = fine_tuned(loss_fn=lambda student, _teacher, y: F.cross_entropy(student, y))
    assert labels_only > weak + 10, (weak, labels_only)  # the teacher really is weak
    assert distilled >= labels_only - 1.5, (weak, distilled, labels_only)


class _RandomViews(torch.utils.data.Dataset):
    """Augmented data as fine-tuning sees it: every read of a sample is another random view."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] + torch.randn_like(self.x[i]), self.y[i]


def test_on_augmented_data_the_teacher_sees_the_view_the_student_sees() -> None:
    from kondense.pipeline.distill import cache_teacher

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    student = copy.deepcopy(teacher)
    data = cache_teacher(teacher, _RandomViews(torch.randn(32, 1, 4, 4), torch.randint(0, 3, (32,))), augmented=True)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss_fn(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs.append((logits.detach().clone(), teacher_logits.clone()))
        return logits.sum() * 0  # no update: the student stays equal to the teacher

    FineTune(batch_size=8, loss_fn=loss_fn).run(student, data, epochs=1.0, seed=0)
    assert len(pairs) == 4
    # the same weights on the same view give the same logits; a cached view would differ
    assert all(torch.allclose(s, t, atol=1e-6) for s, t in pairs)
    cached = cache_teacher(teacher, data.base)  # one fixed view per sample
    assert not torch.allclose(cached.logits[:8], cache_teacher(teacher, data.base).logits[:8])
