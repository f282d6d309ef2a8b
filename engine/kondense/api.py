"""`kondense.compress`: the whole run, spec -> plan -> stages -> report, as one call."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from kondense import data as data_mod
from kondense.device import resolve_precision
from kondense.distributed import Comm, SingleComm
from kondense.errors import KondenseError
from kondense.files import save_json
from kondense.job.spec import (
    DEFAULT_DEVICE,
    DEFAULT_LATENCY_BATCH,
    DEFAULT_LATENCY_RUNTIME,
    DEFAULT_OBJECTIVE,
    DEFAULT_SEED,
    DEFAULT_STAGE,
    check_settings,
    resolve_quantize,
)
from kondense.measure import latency_table
from kondense.measure import report as report_mod
from kondense.measure.deployed_latency import latency_report
from kondense.measure.profile import Metrics, accuracy, profile
from kondense.onnx_export import save_onnx
from kondense.pipeline import quantize as quantize_mod
from kondense.pipeline.annealing import anneal
from kondense.pipeline.artifacts import save_state, save_torchscript
from kondense.pipeline.budget import Budget
from kondense.pipeline.conductor import EvalFn, Judge, evaluate_sharded
from kondense.pipeline.context import Context
from kondense.pipeline.distill import FineTune, cache_teacher
from kondense.pipeline.exploration import explore
from kondense.pipeline.plan import Plan
from kondense.pipeline.qat import Retraining
from kondense.pipeline.runstate import RunDir
from kondense.pipeline.timing import Stopwatch
from kondense.sources import ModelOptions, load_model

logger = logging.getLogger(__name__)

OUTPUTS = (
    "model.pt",
    "model.ts",
    "model.onnx",
    "model.int8.onnx",
    "plan.json",
    "report.json",
    "report.md",
    "annealing.png",
)


@dataclass
class Result:
    """What compress() returns: the output directory, the compressed model (eval mode), its plan
    and the report (report.json's content)."""

    out: Path
    model: nn.Module
    plan: Plan
    report: dict


def compress(
    model: nn.Module | str,
    data: str | Path | data_mod.DataBundle | None = None,
    *,
    delta: float = 1.0,
    stage: int = DEFAULT_STAGE,
    out: str | Path = "kondense-out",
    arch: str | None = None,
    weights: str | Path | None = None,
    pretrained: str | None = None,
    model_kwargs: dict | None = None,
    code_dir: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    augment: str = "none",
    mean: list[float] | None = None,
    std: list[float] | None = None,
    objective: str = DEFAULT_OBJECTIVE,
    latency_runtime: str = DEFAULT_LATENCY_RUNTIME,
    latency_batch: int = DEFAULT_LATENCY_BATCH,
    quantize: str | None = None,
    device: str = DEFAULT_DEVICE,
    seed: int = DEFAULT_SEED,
    budget: Budget | None = None,
    finetune: FineTune | None = None,
    loaders: tuple[DataLoader, DataLoader, DataLoader] | None = None,
    eval_fn: EvalFn | None = None,
    comm: Comm | None = None,
) -> Result:
    """Compress `model` as far as it goes while its accuracy stays within `delta` points.

    model      an nn.Module; 'zoo:ARCH' (the zoo's trained weights for `data`); 'torchvision:NAME' (a
               torchvision architecture built for the data's classes and channels, with `weights`, a
               state dict in torchvision's layout, or `pretrained`, published weights by name);
               'package.module:function' (your factory, called with `model_kwargs`, imported from
               `code_dir` or the installed packages; optional `weights`); or a weights file (a
               kondense zoo file, or a state dict of the zoo architecture `arch`)
    data       a data set name or path, or a DataBundle; or None with your own `loaders`
    input_size the (H, W) the network takes, when it is not the data's own; `augment` the training
               augmentation ('none', 'crop-flip', 'resized-crop-flip'); `mean`/`std` the network's
               normalisation, per channel (default: measured on the data)
    delta      the allowed top-1 accuracy drop, in percentage points, in (0, 100]
    stage      1: exploration only; 2: exploration then annealing; 3: both, then INT8 post-training
               quantisation of the stage 2 model (quantize='int8', which stage 3 implies)
    objective  what to minimise: 'params', 'macs' or 'latency' (measured per layer shape where the model will
               be deployed: `latency_runtime` at `latency_batch`)
    latency_runtime  where the model will be deployed: 'torch' (eager, on `device`) or 'onnxruntime' (on the
               CPU whatever `device`); the latency objective's table is timed there
    latency_batch  inputs per call in deployment, 1..4096: the latency table's batch; report.json's
               "latency" also times both models at it, beside batches 1 and 32
    quantize   'int8': after the last stage, INT8 post-training quantisation of model.onnx, written as
               model.int8.onnx where its validation accuracy stays within delta (report.json's "stage3"
               then holds its six metrics); 'none': float outputs only; None (default): 'int8' at
               stage 3, 'none' otherwise ('none' at stage 3 is refused)
    device     'cpu', 'cuda', 'cuda:N' or 'auto'
    budget     how much work the run may do, and on how many samples (Budget(train_samples=...))
    finetune   batch size, learning rate, precision, optimizer and loss of fine-tuning (FineTune())
    loaders    your own (train, val, test) DataLoaders instead of `data`
    eval_fn    eval_fn(model, loader) -> accuracy %, instead of top-1

    Outputs go to `out`; running again with the same `out` resumes a killed run. Progress is
    logged through `logging` (call kondense.logs.setup() to see it on stderr).
    With `comm` (kondense.distributed), every rank calls this alike: data is sharded, gradients
    and evaluations are averaged, decisions are rank 0's, and only rank 0 writes.
    Bad settings raise KondenseError naming the field.
    """
    began = time.perf_counter()
    check_settings(
        delta=delta,
        stage=stage,
        objective=objective,
        latency={"runtime": latency_runtime, "batch": latency_batch},
        quantize=quantize,
        seed=seed,
    )
    quantize = resolve_quantize(stage, quantize)
    budget = budget or Budget()
    finetune = finetune or FineTune()
    comm = comm or SingleComm()
    dev = comm.device(device)
    torch.manual_seed(seed)

    options = ModelOptions(arch, _text(weights), pretrained, dict(model_kwargs or {}), _text(code_dir))
    # published torchvision weights take RGB images: grayscale data is repeated to 3 channels for them
    reading = _Reading(input_size, 3 if pretrained else None, augment, mean, std)
    splits = _splits(data, loaders, seed, budget, reading)
    original, base, source = load_model(model, options, splits.name, splits.num_classes, splits.input_shape)
    out = Path(out)
    _refuse_overwriting_input(source, out)
    # logged once the inputs are known good, so that a user error stays the one line a user sees
    if budget.train_samples or budget.val_samples or budget.test_samples:
        logger.info(
            f"using a subset of {splits.name}: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test samples"
        )
    # a copy: the user's module is never modified, not even moved to another device
    original = copy.deepcopy(original).to(dev).to(memory_format=torch.channels_last).eval()
    example = torch.zeros(2, *splits.input_shape, device=dev)
    evaluate = eval_fn or accuracy
    fingerprint = {
        "model": source,
        "data": splits.name,
        "delta": delta,
        "objective": objective,
        # the latency objective's choices depend on where its table is timed
        **({"latency": {"runtime": latency_runtime, "batch": latency_batch}} if objective == "latency" else {}),
        "seed": seed,
        "budget": budget.to_dict(),
        "train": len(splits.train),
        "val": len(splits.val),
        "batch": finetune.batch_size,
        "lr": finetune.lr,
    }
    run = RunDir(out, fingerprint, writer=comm.is_root)
    if run.resumed:
        logger.info(f"resuming the run in {out}")
    stopwatch = Stopwatch(run.state.setdefault("timing", {}), since=began)

    logger.info(f"original: measuring on {len(splits.test)} test samples")
    test_loader = DataLoader(comm.shard(splits.test), batch_size=256)
    with stopwatch.timing("eval"):
        metrics = {"original": _metrics(original, splits.input_shape, test_loader, evaluate, comm)}
    scan_subset = Subset(splits.val, range(min(budget.scan_samples, len(splits.val))))
    judge = Judge(
        # every rank re-estimates BatchNorm on the same samples in batches of the global batch, so a trial
        # scores the same on one rank as in a one-process run (BatchNorm statistics depend on the batch)
        recal=DataLoader(
            splits.train,
            batch_size=finetune.batch_size * comm.size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        ),
        scan=DataLoader(comm.shard(scan_subset), batch_size=256),
        scan_whole=DataLoader(scan_subset, batch_size=256),
        val=DataLoader(comm.shard(splits.val), batch_size=256),
        eval_fn=evaluate,
        recal_samples=budget.recal_samples,
        scan_precision=resolve_precision(finetune.precision, dev),
        comm=comm,
    )
    original_val = run.state.get("originalVal")
    if original_val is None:
        with stopwatch.timing("eval"):
            original_val = evaluate_sharded(original, judge.val, evaluate, comm)
        run.state["originalVal"] = original_val
    train_shard = comm.shard(splits.train, even=True)
    if splits.augmented:
        logger.info("teacher: the original runs on every augmented training batch (each read is a new view)")
    else:
        logger.info(
            f"teacher: caching the original's outputs on {len(train_shard)} training samples"
            + (f" per rank, {comm.size} ranks" if comm.size > 1 else "")
        )
    ctx = Context(
        original=original,
        example=example,
        delta=delta,
        objective=objective,
        protected=_classifier(original),
        judge=judge,
        finetune=finetune,
        teacher_data=cache_teacher(original, train_shard, augmented=splits.augmented),
        budget=budget,
        run=run,
        original_val=original_val,
        stopwatch=stopwatch,
        seed=seed,
        comm=comm,
        latency_table=latency_table.table(latency_runtime, str(dev), latency_batch) if objective == "latency" else None,
    )

    stage1 = explore(ctx)
    with stopwatch.timing("eval"):
        metrics["stage1"] = _metrics(stage1.model, splits.input_shape, test_loader, evaluate, comm)
    final, history = stage1, []
    if stage >= 2:
        final, history = anneal(ctx, stage1)
        with stopwatch.timing("eval"):
            metrics["stage2"] = _metrics(final.model, splits.input_shape, test_loader, evaluate, comm)

    plan = Plan(objective, final.steps)
    plan.account(original, final.model, example)
    report = report_mod.build_report(
        metrics,
        delta=delta,
        stage=stage,
        objective=objective,
        trainingSamples=ctx.samples,
        validation={
            "original": original_val,
            "stage1": stage1.val_accuracy,
            **({"stage2": final.val_accuracy} if stage >= 2 else {}),
        },
        annealing=history,
        data={"name": splits.name, "train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        seconds=stopwatch.total,
        timing=stopwatch.report(),
    )
    if comm.is_root:
        save_state(out / "model.pt", final.model, final.steps, base=base, input_shape=splits.input_shape)
        save_torchscript(out / "model.ts", final.model, example)
        report["onnx"] = save_onnx(out / "model.onnx", final.model, example, DataLoader(splits.test, batch_size=256))
        onnx_file = out / report["onnx"]["file"] if report["onnx"].get("file") else None
        report["latency"] = latency_report(original, final.model, onnx_file, example, latency_batch)
        if ctx.latency_table is not None:
            table = ctx.latency_table
            report["latencyTable"] = table.describe() | {
                "originalMs": table.model_ms(original, splits.input_shape),
                "finalMs": table.model_ms(final.model, splits.input_shape),
            }
        if quantize == "int8":
            report["int8"] = _int8(out, report["onnx"], splits, example, ctx, final.model, final.val_accuracy)
            if "qat" in report["int8"]:
                # the quantisation-aware fine-tune is part of the run's work: its samples and its time
                report.update(trainingSamples=ctx.samples, seconds=stopwatch.total, timing=stopwatch.report())
            if stage == 3 and report["int8"].get("file"):
                # stage 3's model is the last one produced: its column, and the enhancement measured against it.
                # After stage 1 or 2 INT8 stays an extra output (report.json "int8"), as --quantize int8 asked.
                metrics["stage3"] = quantize_mod.stage3_metrics(report["int8"], metrics["stage2"], final.model)
                report.update(report_mod.build_report(metrics))
                report["validation"]["stage3"] = report["int8"]["valAccuracy"]
        save_json(plan.to_dict(), out / "plan.json")
        save_json(report, out / "report.json")
        report_mod.write_markdown(report, out / "report.md")
        if history:
            report_mod.plot_annealing(
                history, metrics["original"].sizeMB, original_val, delta, ctx.accept_floor, out / "annealing.png"
            )
    comm.barrier()
    return Result(out, final.model.eval(), plan, report)


@dataclass
class _Splits:
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int | None
    input_shape: tuple[int, ...]
    augmented: bool = False  # every read of a training sample is another random view


@dataclass(frozen=True)
class _Reading:
    """How a data set given by name or path is read for the network."""

    input_size: tuple[int, int] | None
    channels: int | None
    augment: str
    mean: list[float] | None
    std: list[float] | None


def _text(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _splits(
    data: str | Path | data_mod.DataBundle | None,
    loaders: tuple[DataLoader, DataLoader, DataLoader] | None,
    seed: int,
    budget: Budget,
    reading: _Reading,
) -> _Splits:
    limits = (budget.train_samples, budget.val_samples, budget.test_samples)
    if any(limits) and (loaders is not None or isinstance(data, data_mod.DataBundle)):
        raise KondenseError(
            "budget.train_samples, val_samples and test_samples take subsets of a data set given by name or "
            "path; a DataBundle or your own loaders are used as they are: subset those yourself"
        )
    reads = {"input_size": reading.input_size, "mean": reading.mean, "std": reading.std}
    reads["augment"] = None if reading.augment == "none" else reading.augment
    given = [k for k, v in reads.items() if v is not None]
    if given and (loaders is not None or isinstance(data, data_mod.DataBundle)):
        raise KondenseError(
            f"{', '.join(given)} say how a data set given by name or path is read; a DataBundle or your own "
            "loaders are used as they are: pass them to kondense.data.load, or build your loaders with them"
        )
    if loaders is not None:
        if len(loaders) != 3 or any(not isinstance(loader, DataLoader) for loader in loaders):
            raise KondenseError("loaders must be three DataLoaders, (train, val, test); or pass None and a data set")
        if data is not None:
            raise KondenseError("give either data or loaders, not both")
        train_loader, val_loader, test_loader = loaders
        if not hasattr(train_loader.dataset, "__getitem__"):
            raise KondenseError(
                "train_loader must read a map-style data set (with __getitem__): the teacher's outputs are cached per sample"
            )
        x, _ = next(iter(val_loader))
        return _Splits(
            "user loaders", train_loader.dataset, val_loader.dataset, test_loader.dataset, None, tuple(x.shape[1:])
        )
    if data is None:
        raise KondenseError("give data: a data set name or path, a DataBundle, or your own loaders")
    if isinstance(data, data_mod.DataBundle):
        bundle = data
    else:
        bundle = data_mod.load(
            str(data),
            seed=seed,
            input_size=reading.input_size,
            channels=reading.channels,
            augment=reading.augment,
            mean=reading.mean,
            std=reading.std,
            train_samples=budget.train_samples,
            val_samples=budget.val_samples,
            test_samples=budget.test_samples,
        )
    return _Splits(
        bundle.name if isinstance(data, data_mod.DataBundle) else str(data),
        bundle.train,
        bundle.val,
        bundle.test,
        bundle.num_classes,
        bundle.input_shape,
        bundle.augment != "none",
    )


def _metrics(
    model: nn.Module, input_shape: tuple[int, ...], test_loader: DataLoader, evaluate: EvalFn, comm: Comm
) -> Metrics:
    """The six metrics: test accuracy over all ranks' shards; the rest measured by rank 0 alone
    (so that other ranks do not compete for the cores while latency is timed) and shared."""
    m = copy.deepcopy(model).eval()
    accuracy_ = evaluate_sharded(m, test_loader, evaluate, comm)
    metrics = comm.broadcast_object(profile(m, input_shape) if comm.is_root else None)
    metrics.accuracy = accuracy_
    return metrics


def _int8(
    out: Path, onnx: dict, splits: _Splits, example: torch.Tensor, ctx: Context, model: nn.Module, val: float
) -> dict:
    """Stage 3 on model.onnx (see pipeline.quantize): report.json's "int8" entry. `model` is model.onnx's float
    model, which a quantisation-aware fine-tune copies where no post-training recipe clears the floor. Rank 0
    runs it alone, on its shard of the training data; the other ranks wait at the barrier after it."""
    if not onnx.get("file"):
        return {"file": None, "error": f"INT8 quantises model.onnx, which was not written: {onnx.get('error')}"}
    return quantize_mod.stage3(
        out / onnx["file"],
        out / "model.int8.onnx",
        calibration=DataLoader(
            splits.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(ctx.seed)
        ),
        val=DataLoader(splits.val, batch_size=256),
        test=DataLoader(splits.test, batch_size=256),
        example=example.cpu(),
        floor=ctx.accept_floor,
        fp32_val=val,
        retraining=Retraining.of(ctx, model),
    )


def _classifier(model: nn.Module) -> set[str]:
    """The last Linear (or conv, for fully convolutional models) produces the classes: never pruned."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return {layers[-1]} if layers else set()


def _refuse_overwriting_input(source: str, out: Path) -> None:
    path = Path(source)
    if path.exists() and path.resolve() in {(out / name).resolve() for name in OUTPUTS}:
        raise KondenseError(f"--out {out} would overwrite the input model {source}; choose another output directory")
