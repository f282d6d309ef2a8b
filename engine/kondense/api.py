"""`kondense.compress`: the whole run, spec -> plan -> stages -> report, as one call."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from kondense import data as data_mod
from kondense.measure import report as report_mod
from kondense.pipeline.annealing import anneal
from kondense.pipeline.conductor import OBJECTIVES, EvalFn, Judge, evaluate_sharded
from kondense.pipeline.context import Budget, Context
from kondense.device import resolve_precision
from kondense.distributed import Comm, SingleComm
from kondense.pipeline.distill import FineTune, LossFn, OptimizerFactory, cache_teacher
from kondense.errors import KondenseError
from kondense.pipeline.exploration import explore
from kondense.artifacts import save_state, save_torchscript
from kondense.files import save_json
from kondense.pipeline.plan import Plan
from kondense.measure.profile import Metrics, accuracy, profile
from kondense.pipeline.runstate import RunDir
from kondense.sources import load_model

OUTPUTS = ("model.pt", "model.ts", "plan.json", "report.json", "report.md", "annealing.png")


@dataclass
class Result:
    out: Path
    model: nn.Module
    plan: Plan
    report: dict


def compress(
    model: nn.Module | str,
    data: str | data_mod.DataBundle | None = None,
    *,
    delta: float = 1.0,
    stage: int = 2,
    out: str | Path = "kondense-out",
    arch: str | None = None,
    objective: str = "params",
    device: str = "auto",
    precision: str = "auto",
    budget: Budget | None = None,
    batch_size: int = 128,
    lr: float = 0.02,
    train_samples: int | None = None,
    val_samples: int | None = None,
    test_samples: int | None = None,
    seed: int = 0,
    train_loader: DataLoader | None = None,
    val_loader: DataLoader | None = None,
    test_loader: DataLoader | None = None,
    optimizer: OptimizerFactory | None = None,
    loss_fn: LossFn | None = None,
    eval_fn: EvalFn | None = None,
    log: Callable[[str], None] = print,
    comm: Comm | None = None,
) -> Result:
    """Compress `model` as far as it goes while its accuracy stays within `delta` points.

    model   an nn.Module, 'zoo:ARCH' (the zoo's trained weights for `data`), or a weights file
            (a kondense zoo file, or a state dict with `arch`)
    data    a data set name or path, or a DataBundle; or None with your own train/val/test loaders
    stage   1: exploration only; 2: exploration then annealing
    optimizer(params) -> Optimizer, loss_fn(student_logits, teacher_logits, labels) -> loss and
    eval_fn(model, loader) -> accuracy % replace the defaults (SGD, distillation, top-1).
    Outputs go to `out`; running again with the same `out` resumes a killed run.
    With `comm` (kondense.distributed), every rank calls this alike: data is sharded, gradients
    and evaluations are averaged, decisions are rank 0's, and only rank 0 writes and logs.
    """
    began = time.perf_counter()
    if not 0 < delta <= 100:
        raise KondenseError(f"delta must be in (0, 100] percentage points, got {delta}")
    if stage not in (1, 2):
        raise KondenseError(f"stage must be 1 (exploration) or 2 (exploration then annealing), got {stage}")
    if objective not in OBJECTIVES:
        raise KondenseError(f"objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'")
    budget = budget or Budget()
    comm = comm or SingleComm()
    dev = comm.device(device)
    log = log if comm.is_root else _silent
    torch.manual_seed(seed)

    splits = _splits(data, train_loader, val_loader, test_loader, seed, train_samples, val_samples, test_samples, log)
    original, base, source = load_model(model, arch, splits.name, splits.num_classes, splits.input_shape)
    out = Path(out)
    _refuse_overwriting_input(source, out)
    # a copy: the user's module is never modified, not even moved to another device
    original = copy.deepcopy(original).to(dev).to(memory_format=torch.channels_last).eval()
    example = torch.zeros(2, *splits.input_shape, device=dev)
    evaluate = eval_fn or accuracy
    fingerprint = {"model": source, "data": splits.name, "delta": delta, "objective": objective, "seed": seed,
                   "budget": budget.to_dict(), "train": len(splits.train), "val": len(splits.val), "batch": batch_size, "lr": lr}
    run = RunDir(out, fingerprint, writer=comm.is_root)
    if run.resumed:
        log(f"resuming the run in {out}")

    log(f"original: measuring on {len(splits.test)} test samples")
    test_loader = DataLoader(comm.shard(splits.test), batch_size=256)
    metrics = {"original": _metrics(original, splits.input_shape, test_loader, evaluate, comm)}
    judge = Judge(recal=DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
                  scan=DataLoader(comm.shard(Subset(splits.val, range(min(budget.scan_samples, len(splits.val))))), batch_size=256),
                  val=DataLoader(comm.shard(splits.val), batch_size=256), eval_fn=evaluate, recal_samples=budget.recal_samples,
                  scan_precision=resolve_precision(precision, dev), comm=comm)
    original_val = run.state.get("originalVal")
    if original_val is None:
        original_val = evaluate_sharded(original, judge.val, evaluate, comm)
        run.state["originalVal"] = original_val
    finetune = FineTune(batch_size=batch_size, lr=lr, precision=resolve_precision(precision, dev), optimizer=optimizer, loss_fn=loss_fn)
    train_shard = comm.shard(splits.train, even=True)
    log(f"teacher: caching the original's outputs on {len(train_shard)} training samples" + (f" per rank, {comm.size} ranks" if comm.size > 1 else ""))
    ctx = Context(original=original, example=example, delta=delta, objective=objective, protected=_classifier(original),
                  judge=judge, finetune=finetune, teacher_data=cache_teacher(original, train_shard), budget=budget,
                  run=run, original_val=original_val, seed=seed, log=log, comm=comm)

    stage1 = explore(ctx)
    metrics["stage1"] = _metrics(stage1.model, splits.input_shape, test_loader, evaluate, comm)
    final, history = stage1, []
    if stage == 2:
        final, history = anneal(ctx, stage1)
        metrics["stage2"] = _metrics(final.model, splits.input_shape, test_loader, evaluate, comm)

    plan = Plan(objective, final.steps)
    plan.account(original, final.model, example)
    report = report_mod.build_report(metrics, delta=delta, stage=stage, objective=objective, trainingSamples=ctx.samples,
                                     validation={"original": original_val, "stage1": stage1.val_accuracy,
                                                 **({"stage2": final.val_accuracy} if stage == 2 else {})},
                                     annealing=history, data={"name": splits.name, "train": len(splits.train),
                                                              "val": len(splits.val), "test": len(splits.test)},
                                     seconds=time.perf_counter() - began)
    if comm.is_root:
        save_state(out / "model.pt", final.model, base, final.steps, splits.input_shape)
        save_torchscript(out / "model.ts", final.model, example)
        save_json(plan.to_dict(), out / "plan.json")
        save_json(report, out / "report.json")
        report_mod.write_markdown(report, out / "report.md")
        if history:
            report_mod.plot_annealing(history, metrics["original"].sizeMB, original_val, delta, ctx.accept_floor, out / "annealing.png")
    comm.barrier()
    return Result(out, final.model.eval(), plan, report)


def _silent(message: str) -> None:
    pass


@dataclass
class _Splits:
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int | None
    input_shape: tuple[int, ...]


def _splits(data, train_loader, val_loader, test_loader, seed, train_samples, val_samples, test_samples, log) -> _Splits:
    if train_loader is not None or val_loader is not None or test_loader is not None:
        if None in (train_loader, val_loader, test_loader):
            raise KondenseError("pass all three of train_loader, val_loader and test_loader, or none and a data set")
        if not hasattr(train_loader.dataset, "__getitem__"):
            raise KondenseError("train_loader must read a map-style data set (with __getitem__): the teacher's outputs are cached per sample")
        x, _ = next(iter(val_loader))
        return _Splits("user loaders", train_loader.dataset, val_loader.dataset, test_loader.dataset, None, tuple(x.shape[1:]))
    if data is None:
        raise KondenseError("give data: a data set name or path, a DataBundle, or your own loaders")
    bundle = data if isinstance(data, data_mod.DataBundle) else data_mod.load(
        data, seed=seed, train_samples=train_samples, val_samples=val_samples, test_samples=test_samples)
    if train_samples or val_samples or test_samples:
        log(f"using a subset of {bundle.name}: {len(bundle.train)} train, {len(bundle.val)} val, {len(bundle.test)} test samples")
    return _Splits(bundle.name if isinstance(data, data_mod.DataBundle) else str(data), bundle.train, bundle.val, bundle.test,
                   bundle.num_classes, bundle.input_shape)


def _metrics(model: nn.Module, input_shape: tuple[int, ...], test_loader: DataLoader, evaluate: EvalFn, comm: Comm) -> Metrics:
    """The six metrics: test accuracy over all ranks' shards; the rest measured by rank 0 alone
    (so that other ranks do not compete for the cores while latency is timed) and shared."""
    m = copy.deepcopy(model).eval()
    accuracy_ = evaluate_sharded(m, test_loader, evaluate, comm)
    metrics = comm.broadcast_object(profile(m, input_shape) if comm.is_root else None)
    metrics.accuracy = accuracy_
    return metrics


def _classifier(model: nn.Module) -> set[str]:
    """The last Linear (or conv, for fully convolutional models) produces the classes: never pruned."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return {layers[-1]} if layers else set()


def _refuse_overwriting_input(source: str, out: Path) -> None:
    path = Path(source)
    if path.exists() and path.resolve() in {(out / name).resolve() for name in OUTPUTS}:
        raise KondenseError(f"--out {out} would overwrite the input model {source}; choose another output directory")
