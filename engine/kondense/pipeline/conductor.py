"""The conductor: measures how each layer reacts to each transformation, and composes plans.

Sensitivity is the accuracy on a fixed validation subset after compressing one layer
alone and re-estimating BatchNorm statistics (without it every layer looks worse than it
is); stage 1 measures the options that gradient estimates (pipeline.estimate) screen, and
annealing ranks by the estimates alone. Plans rank the
candidates by saving per point of harm, one per layer, and take the longest prefix whose
composed model stays above a floor: a plan that weighs what a layer saves, where one accuracy
threshold across all layers (AIMET's greedy selection, which kondense used first) left the
layers holding most parameters alone on a compact network (3.0x where the ranking finds 3.7x
at a higher accuracy after the same fine-tuning).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn
from torch.utils.data import DataLoader

from kondense import transforms
from kondense.device import autocast
from kondense.distributed import Comm, SingleComm
from kondense.errors import KondenseError
from kondense.measure.latency_table import LatencyTable, latency_cost
from kondense.measure.profile import accuracy, macs_g, params_m
from kondense.pipeline import estimate
from kondense.pipeline.plan import Step, applied
from kondense.pipeline.timing import Stopwatch, searching
from kondense.train import recalibrate_batchnorm
from kondense.transforms.lowrank import kept_decompositions

logger = logging.getLogger(__name__)

EvalFn = Callable[[nn.Module, DataLoader], float]


def evaluate_sharded(model: nn.Module, loader: DataLoader, eval_fn: EvalFn, comm: Comm) -> float:
    """`eval_fn` on this rank's shard, averaged over ranks weighted by shard size, so every rank
    gets the same number (the whole data set's accuracy for top-1)."""
    n = len(loader.dataset)  # type: ignore[arg-type]
    total, count = comm.allreduce_sum([eval_fn(model, loader) * n if n else 0.0, n])
    return total / max(count, 1)


@dataclass
class Judge:
    """Accuracy as every decision sees it: BatchNorm re-estimated on training samples (the same
    samples on every rank, so statistics agree), then the user's evaluation function (top-1 by
    default) on validation data, never on test. The scan and val loaders read this rank's shard."""

    recal: DataLoader
    scan: DataLoader
    val: DataLoader
    eval_fn: EvalFn = accuracy
    recal_samples: int = 512
    scan_precision: str = "fp32"
    comm: Comm = field(default_factory=SingleComm)
    scan_whole: DataLoader | None = None  # the whole scan subset, for one rank judging a trial alone

    def scan_accuracy(self, model: nn.Module) -> float:
        """Only compared with other scan accuracies, so it may run in bf16 where that is native."""
        recalibrate_batchnorm(model, self.recal, self.recal_samples)
        with autocast(next(model.parameters()).device, self.scan_precision):
            return evaluate_sharded(model, self.scan, self.eval_fn, self.comm)

    def scan_accuracy_alone(self, model: nn.Module) -> float:
        """scan_accuracy() measured by this rank alone on the whole scan subset: the same number on any
        rank, with no collective, so ranks can judge different trials at once."""
        if self.scan_whole is None or self.comm.size == 1:
            return self.scan_accuracy(model)
        recalibrate_batchnorm(model, self.recal, self.recal_samples)
        with autocast(next(model.parameters()).device, self.scan_precision):
            return self.eval_fn(model, self.scan_whole)

    def val_accuracy(self, model: nn.Module) -> float:
        recalibrate_batchnorm(model, self.recal, self.recal_samples)
        return evaluate_sharded(model, self.val, self.eval_fn, self.comm)


# What a plan can minimise, per objective the CompressionJob allows (a test holds the two equal);
# each takes the model, its input shape and the job's latency table (read by the latency objective only).
COSTS: dict[str, Callable[[nn.Module, tuple[int, ...], LatencyTable | None], float]] = {
    "params": lambda model, input_shape, table: params_m(model),  # millions
    "macs": lambda model, input_shape, table: macs_g(model, input_shape),  # billions
    "latency": latency_cost,  # milliseconds in spec.latency's runtime and batch, from a per-layer table
}


def cost(model: nn.Module, objective: str, input_shape: tuple[int, ...], table: LatencyTable | None = None) -> float:
    """What the plan minimises, in the objective's units. `table`: where the latency objective's milliseconds
    are measured (None: torch on the model's device at batch 1, spec.latency's defaults)."""
    return COSTS[objective](model, input_shape, table)


@dataclass
class Option:
    """One layer compressed alone by one transform at one ratio, and what came of it."""

    layer: str
    transform: str
    ratio: float
    accuracy: float | None  # the scan accuracy measured with it; None where it was only estimated
    saving: float  # objective units saved in the whole model
    coupled: list[str]  # layers whose output channels changed with it (pruning groups)
    harm: float | None = None  # the estimated loss increase (pipeline.estimate), where estimated

    def step(self) -> Step:
        return Step(self.layer, self.transform, self.ratio)


def _out_dims(model: nn.Module) -> dict[str, int]:
    return {
        n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


class _Trials:
    """Compressing one candidate of `model` alone, and what it saves and which layers' channels move
    with it: what the measured scan and the estimates both record for every candidate."""

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        objective: str,
        protected: set[str],
        table: LatencyTable | None = None,
    ) -> None:
        self.model, self.example, self.objective, self.table = model, example, objective, table
        self.input_shape = tuple(example.shape[1:])
        self.base_cost = cost(model, objective, self.input_shape, table)
        self.base_dims = _out_dims(model)
        self.candidates = [
            (layer, t)
            for layer in transforms.optimizable_layers(model)
            for t in transforms.candidates(model, layer, protected, example_input=example)
        ]

    def make(self, layer: str, transform: str, ratio: float) -> tuple[nn.Module, float, list[str]]:
        """(the compressed copy, its saving in objective units, the layers coupled to a pruning)"""
        trial = applied(self.model, [Step(layer, transform, ratio)], self.example, judged=True)
        return (trial, *self._outcome(trial, transform))

    def _outcome(self, trial: nn.Module, transform: str) -> tuple[float, list[str]]:
        dims = _out_dims(trial)
        coupled = [n for n, d in self.base_dims.items() if n in dims and dims[n] != d] if transform == "prune" else []
        return self.base_cost - cost(trial, self.objective, self.input_shape, self.table), coupled

    def priced(
        self, layer: str, transform: str, ratio: float, recipe: transforms.Recipe | None = None
    ) -> tuple[float, list[str]]:
        """make()'s saving and coupled layers. A pruning is carried out from `recipe`, where the caller has
        planned it already (ranking the channels is most of a pruning's estimate), on a copy that shares
        every module the recipe leaves alone; any other transform is priced on make()'s own copy."""
        if transform != "prune":
            return self.make(layer, transform, ratio)[1:]
        recipe = recipe or transforms.prune_recipe(self.model, layer, ratio, self.example)
        trial = transforms.copied(self.model, only=recipe.modules(self.model))
        recipe.apply(trial)
        return self._outcome(trial, transform)

    def estimate(self, moments: estimate.Moments, layer: str, transform: str, ratio: float) -> Option:
        """The candidate with its harm estimated from gradient moments of `self.model`, not measured."""
        recipe = transforms.prune_recipe(self.model, layer, ratio, self.example) if transform == "prune" else None
        saving, coupled = self.priced(layer, transform, ratio, recipe)
        if recipe is not None:  # planned once: ranking the channels is most of a pruning's estimate
            harm = estimate.prune_harm(self.model, moments, recipe)
        elif transform == "heads":
            harm = estimate.heads_harm(self.model, moments, layer, ratio)
        else:
            harm = estimate.lowrank_harm(self.model, moments, layer, ratio)
        return Option(layer, transform, ratio, None, saving, coupled, harm)


def scan(
    model: nn.Module,
    judge: Judge,
    example: torch.Tensor,
    ratios: tuple[float, ...],
    objective: str,
    protected: set[str],
    table: LatencyTable | None = None,
    screen: int | None = None,
    watch: Stopwatch | None = None,
) -> list[Option]:
    """Candidates (layer, transform, ratio), each applied alone to a copy of `model` and measured; `table`
    prices the latency objective (see cost). Every candidate, or with `screen` = k only the k per layer
    that their gradient estimates (pipeline.estimate) rank best by saving per unit of harm: a layer's
    other options are rarely the one a plan takes, and each measurement is a thousand forward passes.

    With several ranks, each judges its share of the trials on the whole scan subset and the
    results are gathered: N ranks scan about N times faster than one, where sharding every trial's
    evaluation would leave each rank a batch or two and a collective per trial. `watch` is told which
    of its time went to estimates and which to measured trials.
    """
    with searching(watch, "trials"):
        made = _Trials(model, example, objective, protected, table)
    trials = [(layer, transform, ratio) for layer, transform in made.candidates for ratio in ratios]
    comm = getattr(judge, "comm", None) or SingleComm()
    if screen is not None:
        with searching(watch, "estimates"):
            # rank 0's choice, so that every rank measures its share of the same list
            trials = comm.broadcast_object(_screened(made, trials, judge.recal, judge.recal_samples, screen))
    with searching(watch, "trials"), kept_decompositions():
        return _measured(made, trials, judge, comm)


def _measured(made: _Trials, trials: list[tuple[str, str, float]], judge: Judge, comm: Comm) -> list[Option]:
    spread = comm.size > 1 and getattr(judge, "scan_whole", None) is not None
    mine = range(comm.rank, len(trials), comm.size) if spread else range(len(trials))
    judged: dict[int, Option] = {}
    began, reported = time.perf_counter(), 0
    for done, i in enumerate(mine, start=1):
        layer, transform, ratio = trials[i]
        trial, saving, coupled = made.make(layer, transform, ratio)
        accuracy_ = judge.scan_accuracy_alone(trial) if spread else judge.scan_accuracy(trial)
        judged[i] = Option(layer, transform, ratio, accuracy_, saving, coupled)
        if done == len(mine) or done - reported >= max(1, len(mine) // 10):
            reported = done
            eta = (time.perf_counter() - began) / done * (len(mine) - done)
            share = f" (this rank's {len(mine)} of {len(trials)})" if spread else ""
            logger.info(f"  sensitivity scan {done}/{len(mine)} trials{share}, ETA {eta:.0f}s")
    if spread:
        for part in comm.allgather_object(judged):
            judged.update(part)
    options = [judged[i] for i in range(len(trials))]
    # rank 0's, so that all rank alike: measured savings (the latency objective) differ a little per process
    return comm.broadcast_object(options) if comm.size > 1 and not spread else options


def in_order(picks: list[Option], options: list[Option]) -> list[Step]:
    """Steps in the order they can be applied: prunings first (they change neighbouring shapes), then
    head prunings (they need an attention's projections whole), then factorisations, each in model order."""
    order = {o.layer: i for i, o in enumerate(options)}
    kind = {t: i for i, t in enumerate(transforms.TRANSFORMS)}
    return [o.step() for o in sorted(picks, key=lambda o: (kind[o.transform], order[o.layer]))]


def priced(options: list[Option], base_accuracy: float) -> list[Option]:
    """Measured options priced for ranking: the scan accuracy each costs, at least 0.05 points (so a
    free option ranks by its saving, and a noisy gain does not rank above everything)."""
    return [replace(o, harm=max(base_accuracy - o.accuracy, 0.05)) for o in options]


def estimated(
    model: nn.Module,
    recal: DataLoader,
    example: torch.Tensor,
    ratio: float,
    objective: str,
    protected: set[str],
    samples: int,
    table: LatencyTable | None = None,
) -> list[Option]:
    """Every candidate (layer, transform) at `ratio`, its harm estimated from one pass of gradients
    (pipeline.estimate) rather than measured: what an annealing step ranks; `table` as for scan."""
    made = _Trials(model, example, objective, protected, table)
    moments = estimate.moments(model, recal, samples)
    with kept_decompositions():  # each estimate builds its factorisation, then prices it
        return [made.estimate(moments, layer, transform, ratio) for layer, transform in made.candidates]


def _screened(
    made: _Trials, trials: list[tuple[str, str, float]], recal: DataLoader, samples: int, keep: int
) -> list[tuple[str, str, float]]:
    """The `keep` trials per layer that save the most per unit of estimated harm, in their given order."""
    moments = estimate.moments(made.model, recal, samples)
    with kept_decompositions():
        options = [made.estimate(moments, *trial) for trial in trials]
    chosen: set[int] = set()
    for layer in dict.fromkeys(o.layer for o in options):
        mine = [i for i, o in enumerate(options) if o.layer == layer and o.saving > 0]
        mine.sort(key=lambda i: -_worth(options[i]))
        chosen.update(mine[:keep])
    logger.info(f"  sensitivity scan: {len(chosen)} of {len(trials)} candidates chosen by their gradient estimates")
    return [t for i, t in enumerate(trials) if i in chosen]


def _worth(option: Option) -> float:
    """What an option saves per unit of harm: how the screen and the plans rank."""
    return option.saving / max(option.harm or 0.0, 1e-12)


def ranked(options: list[Option]) -> list[Option]:
    """An annealing step's candidates, most saving per unit of estimated harm first: one per layer,
    a pruning group pruned once. How many of them a step takes, `fit` measures."""
    order = sorted((o for o in options if o.saving > 0), key=lambda o: -_worth(o))
    picks, pruned, used = [], set(), set()
    for o in order:
        group = set(o.coupled) | {o.layer}
        if o.layer in used or (o.transform == "prune" and group & pruned):
            continue
        picks.append(o)
        used.add(o.layer)
        if o.transform == "prune":
            pruned |= group
    return picks


def fit(
    model: nn.Module,
    picks: list[Option],
    options: list[Option],
    judge: Judge,
    example: torch.Tensor,
    base_accuracy: float,
    floor: float,
) -> tuple[list[Step], float]:
    """The longest prefix of the ranked `picks` whose composed model keeps scan accuracy >= floor.

    Drops measured one layer at a time do not add up: at a mild ratio most layers alone cost
    nothing, yet fifty of them together can ruin the model beyond what fine-tuning repairs. So
    the composed model is measured with a binary search over how
    many picks to take (each probe composes and evaluates the model once). `base_accuracy` is
    the unchanged model's scan accuracy, which the caller has already measured.
    """
    best: tuple[list[Step], float] = ([], base_accuracy)
    lo, hi = 1, len(picks)
    while lo <= hi:
        mid = (lo + hi) // 2
        trial, steps = _composed(model, in_order(picks[:mid], options), example)
        acc = judge.scan_accuracy(trial)
        logger.info(f"  step fit: {mid}/{len(picks)} layers -> scan accuracy {acc:.2f}% (floor {floor:.2f}%)")
        if acc >= floor:
            best, lo = (steps, acc), mid + 1
        else:
            hi = mid - 1
    return best


def _composed(model: nn.Module, steps: list[Step], example: torch.Tensor) -> tuple[nn.Module, list[Step]]:
    """applied(), less the factorisations that the prunings before them left nothing to save: pruning
    a layer's inputs can shrink it until even rank 1 is no smaller (a squeeze-and-excitation layer of a
    few channels). Returns the model and the steps it took, which replay exactly."""
    head = next((i for i, s in enumerate(steps) if s.transform != "prune"), len(steps))
    trial, kept = applied(model, steps[:head], example, judged=True, later=steps[head:]), steps[:head]
    for step in steps[head:]:
        try:
            transforms.apply(trial, step.layer, step.transform, step.ratio, example)
        except KondenseError:
            if step.transform != "lowrank":
                raise
            continue  # refused before changing anything: the layer stays as the prunings left it
        kept.append(step)
    return trial, kept


def options_to_json(options: list[Option]) -> list[dict]:
    return [asdict(o) for o in options]


def options_from_json(items: list[dict]) -> list[Option]:
    return [Option(**o) for o in items]
