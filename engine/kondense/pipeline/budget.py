"""How much work a compression run may do. Plain data, no torch: the CLI reads its defaults for
its help without loading the engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Budget:
    """How much work a run may do. Defaults suit a real network on a real data set; tests shrink them.

    ratios          sizes tried per layer in the stage 1 sensitivity scan (fraction of the layer kept)
    screen          options measured per layer in that scan: the best by their gradient estimates (None: all)
    stage1_drop     scan-accuracy drop allowed before stage 1 fine-tuning, in units of delta
    stage1_epochs   fine-tuning epochs of stage 1
    anneal_ratio    how much a layer shrinks in one annealing step
    step_drop       scan-accuracy drop allowed per annealing step (composed model, before fine-tuning), in units of delta
    step_epochs     fine-tuning epochs after each annealing step
    max_steps       annealing steps at most (None: no cap; annealing ends on patience)
    max_samples     annealing takes no step that would pass this many training samples processed in all (None: no cap)
    patience        annealing stops after this many rejected steps in a row
    safety          decisions keep the validation drop within delta * (1 - safety), so the test drop stays within delta
    scan_samples    validation samples the sensitivity scan is scored on
    recal_samples   training samples that re-estimate BatchNorm statistics after each change
    train_samples   fine-tune on the first N training samples only (None: all of them)
    val_samples     decide on the first N validation samples only (None: all)
    test_samples    report on the first N test samples only (None: all)
    """

    ratios: tuple[float, ...] = (0.75, 0.5, 0.25, 0.125)
    screen: int | None = None
    stage1_drop: float = 10.0
    stage1_epochs: float = 2.0
    anneal_ratio: float = 0.7
    step_drop: float = 2.0
    step_epochs: float = 1.0
    max_steps: int | None = None
    max_samples: int | None = None
    patience: int = 2
    safety: float = 0.25
    scan_samples: int = 2000
    recal_samples: int = 512
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = list(self.ratios)
        return d


def default(name: str):
    """A Budget field's default value (the CLI's help shows these)."""
    return next(f.default for f in fields(Budget) if f.name == name)
