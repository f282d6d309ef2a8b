"""Quantisation-aware fine-tuning: a short fine-tune of a copy of the float model that sees ONNX Runtime's INT8
rounding, for stage 3 where post-training quantisation alone falls below the floor.

The copy simulates what quantize_static (pipeline.quantize) will make of it, with torch's fake-quantisation
ops (straight-through gradients): every Conv2d/Linear weight symmetric int8 per output channel (levels -127..127,
scale max|w| / 127, as ONNX Runtime quantises weights), and the activation every Conv2d/Linear reads uint8
asymmetric per tensor over the range observed on the calibration samples (ONNX Runtime's MinMax calibration),
and the model's output likewise (ONNX Runtime quantises the last Gemm's or Conv's output too).
Per-channel symmetric rounding does not change when a channel is scaled, so it is the same before and after
ONNX Runtime folds a BatchNorm into the convolution before it.

The fine-tune is the run's own (FineTune, distilling from the teacher). Afterwards the simulation is stripped:
what is left is a plain float model whose weights round well, which pipeline.quantize exports and quantises
again with ONNX Runtime. The deployed file is always ONNX Runtime's, and measured in ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from kondense.distributed import SingleComm
from kondense.errors import KondenseError
from kondense.pipeline.context import Context
from kondense.pipeline.distill import FineTune, WithTeacher
from kondense.pipeline.timing import Stopwatch

# A tenth of the run's learning rate: the weights are already trained and only have to settle where their
# rounding costs least; the run's rate is sized for repairing what pruning broke, a larger move than this.
LR_FACTOR = 0.1
# Half an epoch of the training samples: quantisation-aware fine-tunes take a small fraction of the original
# training, and stage 3 must stay a small part of the run's work (one annealing step fine-tunes for a whole
# epoch). On the tiny net of tests/test_qat.py half an epoch (8 steps) won back 17 to 31 of the 25 to 43 points
# MinMax INT8 had lost. The samples count against the run's budget.max_samples like every other fine-tune's.
EPOCHS = 0.5

WEIGHT_RANGE = (-127, 127)  # ONNX Runtime's symmetric int8 weights leave -128 out
ACTIVATION_RANGE = (0, 255)  # uint8


@dataclass
class Retraining:
    """What a quantisation-aware fine-tune needs from the run: the float `model` (left untouched: a copy is
    trained), the training samples with the teacher's logits, the run's FineTune settings and seed; `spent`
    training samples the run has processed so far and its `max_samples` cap (None: none); where the run keeps
    its accounts, `count` (called with the samples processed) and the `stopwatch` its time goes to."""

    model: nn.Module
    data: WithTeacher
    finetune: FineTune
    seed: int
    epochs: float = EPOCHS
    spent: int = 0
    max_samples: int | None = None
    count: Callable[[int], None] | None = None
    stopwatch: Stopwatch | None = None

    @classmethod
    def of(cls, ctx: Context, model: nn.Module) -> Retraining:
        """The fine-tune of `model` within the run `ctx`: its teacher data (this rank's shard), settings, seed,
        samples so far and cap, counted and timed with the run's."""
        return cls(
            model,
            ctx.teacher_data,
            ctx.finetune,
            ctx.seed,
            spent=ctx.samples,
            max_samples=ctx.budget.max_samples,
            count=ctx.count_samples,
            stopwatch=ctx.stopwatch,
        )

    def settings(self) -> FineTune:
        return dataclasses.replace(self.finetune, lr=self.finetune.lr * LR_FACTOR)

    def planned_samples(self) -> int:
        """The training samples the fine-tune will process (FineTune.run's count, before running it)."""
        return self.settings().samples(len(self.data), self.epochs)

    def refusal(self) -> str | None:
        """Why the fine-tune may not run (it would pass the run's samples cap), or None."""
        planned = self.planned_samples()
        if self.max_samples is not None and self.spent + planned > self.max_samples:
            return (
                f"its {planned:,} training samples would take the run from {self.spent:,} past budget.max_samples "
                f"{self.max_samples:,}; raise max_samples to allow it"
            )
        return None


@dataclass
class Outcome:
    model: nn.Module  # plain float (no simulation left), in eval mode, on the CPU
    samples: int
    seconds: float
    lr: float | None  # None where the user's own optimizer sets it


class _ObservedRange:
    """Records the range of a tensor while observing, then fake-quantises it to uint8 over that range (ONNX
    Runtime's MinMax calibration and its scale and zero point). As a forward pre-hook it acts on a layer's
    input; as a forward hook, on a module's output."""

    def __init__(self) -> None:
        self.low, self.high = 0.0, 0.0  # ONNX Runtime's range always holds 0, so that 0 is exact
        self.observing = True

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor | None = None) -> tuple | None:
        if output is not None:
            return self.apply(output) if isinstance(output, torch.Tensor) else None
        return (self.apply(args[0]), *args[1:])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.low = min(self.low, float(x.detach().min()))
            self.high = max(self.high, float(x.detach().max()))
            return x
        scale, zero_point = self.qparams()
        low, high = ACTIVATION_RANGE
        # in float: autocast hands layers bf16 inputs, and the simulation is of float arithmetic
        return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, low, high).to(x.dtype)

    def qparams(self) -> tuple[float, int]:
        low, high = ACTIVATION_RANGE
        if self.high == self.low:
            return 1.0, 0
        scale = (self.high - self.low) / (high - low)
        return scale, int(round(low - self.low / scale))


class _PerChannelWeights(nn.Module):
    """A parametrization: the weight as its symmetric int8 per-output-channel rounding."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        reach = weight.detach().abs().flatten(1).amax(dim=1)
        low, high = WEIGHT_RANGE
        scale = torch.where(reach > 0, reach / high, torch.ones_like(reach)).float()
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, low, high)


class Simulation:
    """A copy of `model` whose forward computes what ONNX Runtime's INT8 model of it will (see the module's
    docstring), with the activation ranges observed on up to `samples` inputs of `calibration`."""

    def __init__(self, model: nn.Module, calibration: DataLoader, samples: int) -> None:
        self.model = copy.deepcopy(model).float().eval()
        self._hooks, self._ranges = [], []
        layers = [m for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if not layers:
            raise KondenseError("quantisation-aware fine-tuning needs a model with Conv2d or Linear layers")
        for layer in layers:
            parametrize.register_parametrization(layer, "weight", _PerChannelWeights())
            observed = _ObservedRange()
            self._ranges.append(observed)
            self._hooks.append(layer.register_forward_pre_hook(observed))
        # ONNX Runtime also rounds what the last layer produces (the logits) to uint8
        self._ranges.append(_ObservedRange())
        self._hooks.append(self.model.register_forward_hook(self._ranges[-1]))
        self._observe(calibration, samples)

    @torch.no_grad()
    def _observe(self, calibration: DataLoader, samples: int) -> None:
        device = next(self.model.parameters()).device
        seen = 0
        for x, _ in calibration:
            if seen >= samples:
                break
            x = x[: samples - seen].float().to(device)
            self.model(x)
            seen += len(x)
        for observed in self._ranges:
            observed.observing = False

    def strip(self) -> nn.Module:
        """The model with the simulation removed: its trained float weights (not their rounding), in eval mode."""
        for hook in self._hooks:
            hook.remove()
        for layer in self.model.modules():
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        return self.model.eval()


def fine_tune(retraining: Retraining, calibration: DataLoader, samples: int) -> Outcome:
    """Quantisation-aware fine-tune of a copy of retraining.model, ranges observed on up to `samples` inputs of
    `calibration` (those ONNX Runtime calibrates on). Runs in this process alone (stage 3 is rank 0's)."""
    began = time.perf_counter()
    simulation = Simulation(retraining.model, calibration, samples)
    settings = retraining.settings()
    timing = retraining.stopwatch.timing("fineTune") if retraining.stopwatch else contextlib.nullcontext()
    with timing:
        seen = settings.run(
            simulation.model,
            retraining.data,
            retraining.epochs,
            seed=retraining.seed,
            description="quantisation-aware fine-tune",
            comm=SingleComm(),
        )
    if retraining.count:
        retraining.count(seen)
    model = simulation.strip().cpu()
    return Outcome(model, seen, time.perf_counter() - began, settings.lr if settings.optimizer is None else None)
