"""What every stage of a compression run shares: the original, the data, the budget, the judge."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kondense.distributed import Comm, SingleComm
from kondense.measure.latency_table import LatencyTable
from kondense.pipeline.budget import Budget
from kondense.pipeline.conductor import Judge
from kondense.pipeline.distill import FineTune, WithTeacher
from kondense.pipeline.runstate import RunDir
from kondense.pipeline.timing import Stopwatch


@dataclass
class Context:
    original: nn.Module
    example: torch.Tensor
    delta: float
    objective: str
    protected: set[str]
    judge: Judge
    finetune: FineTune
    teacher_data: WithTeacher
    budget: Budget
    run: RunDir
    original_val: float
    stopwatch: Stopwatch
    seed: int = 0
    comm: Comm = field(default_factory=SingleComm)
    latency_table: LatencyTable | None = None  # where objective latency's milliseconds are measured (spec.latency)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.example.shape[1:])

    @property
    def accept_floor(self) -> float:
        """The lowest validation accuracy a kept model may have."""
        return self.original_val - self.delta * (1 - self.budget.safety)

    def count_samples(self, n: int) -> None:
        self.run.state["trainingSamples"] = self.run.state.get("trainingSamples", 0) + n

    @property
    def samples(self) -> int:
        return self.run.state.get("trainingSamples", 0)

    def fine_tune(self, model: nn.Module, epochs: float, seed: int, description: str) -> None:
        """Fine-tune `model` in place against the teacher, counting the samples and the time."""
        with self.stopwatch.timing("fineTune"):
            self.count_samples(
                self.finetune.run(model, self.teacher_data, epochs, seed=seed, description=description, comm=self.comm)
            )

    def val_accuracy(self, model: nn.Module) -> float:
        with self.stopwatch.timing("eval"):
            return self.judge.val_accuracy(model)

    def planned_samples(self, epochs: float) -> int:
        """The training samples, all ranks together, that a fine-tuning of `epochs` will process."""
        return self.finetune.samples(len(self.teacher_data), epochs) * self.comm.size

    def within_sample_cap(self, epochs: float) -> bool:
        """Whether a fine-tuning of `epochs` more stays within the training-sample cap the user set."""
        cap = self.budget.max_samples
        return cap is None or self.samples + self.planned_samples(epochs) <= cap
