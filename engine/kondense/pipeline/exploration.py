"""Stage 1, exploration: a sensitivity scan, a coarse plan, short distillation.

The scan estimates every (layer, transform, ratio) from one pass of gradients and measures each layer's
`Budget.screen` most promising options (all of them with screen None).

Every nn.MultiheadAttention is unpacked first (a 'heads' step at ratio 1.0: the same computation with
plain projections), so the scan can reach attention projections, heads and the model's width.
The plan ranks every measured candidate by saving per point of scan accuracy it costs and takes
the longest prefix whose composed model keeps the scan accuracy within `stage1_drop` deltas; if
fine-tuning cannot bring it back within delta, the allowance halves and it tries again. (An attempt
just below the floor is not fine-tuned once more, as an annealing step is: a second schedule of
stage 1's length lost as often as it won on the demo, and a loss spends most of the budget.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from torch import nn

from kondense import transforms
from kondense.measure.profile import size_mb
from kondense.pipeline.conductor import fit, options_from_json, options_to_json, priced, ranked, scan
from kondense.pipeline.context import Context
from kondense.pipeline.plan import Step, applied
from kondense.progress import StageProgress, stage_progress

logger = logging.getLogger(__name__)


@dataclass
class StageResult:
    model: nn.Module
    steps: list[Step]
    val_accuracy: float


def explore(ctx: Context) -> StageResult:
    run, budget = ctx.run, ctx.budget
    done = run.state.get("stage1")
    if done:
        model, steps = run.load_model(done["checkpoint"], ctx.original, ctx.example)
        logger.info(f"stage 1: resumed from checkpoint ({len(steps)} steps, val acc {done['valAccuracy']:.2f}%)")
        return StageResult(model, steps, done["valAccuracy"])
    with stage_progress(1) as report:
        # steps are fine-tune batches: known before the scan, so the scan shows as 0 of them
        batches = ctx.finetune.steps(len(ctx.teacher_data), budget.stage1_epochs)
        report.update(
            step=0,
            steps=batches,
            fraction=0.0,
            val_accuracy=ctx.original_val,
            compression=1.0,
            message="sensitivity scan",
            boundary=True,
        )
        result = _explore(ctx, report, batches)
        report.finish(val_accuracy=result.val_accuracy, compression=_ratio(ctx, result.model), message="done")
        return result


def _explore(ctx: Context, report: StageProgress, batches: int) -> StageResult:
    run, budget = ctx.run, ctx.budget
    unpack = [Step(name, "heads", 1.0) for name in transforms.packed_attention(ctx.original)]
    base = applied(ctx.original, unpack, ctx.example)  # what the scan and every plan start from
    with ctx.stopwatch.timing("scan"):
        if "scan" in run.state:
            options = options_from_json(run.state["scan"])
            logger.info(f"stage 1: sensitivity scan resumed from checkpoint ({len(options)} options)")
        else:
            logger.info(f"stage 1: sensitivity scan at ratios {list(budget.ratios)}")
            options = scan(
                base,
                ctx.judge,
                ctx.example,
                budget.ratios,
                ctx.objective,
                ctx.protected,
                ctx.latency_table,
                budget.screen,
                ctx.stopwatch,
            )
            run.state["scan"] = options_to_json(options)
            run.save()
        with ctx.stopwatch.searching("probes"):
            base_scan = ctx.judge.scan_accuracy(applied(base, [], ctx.example, judged=True))
    drop = budget.stage1_drop * ctx.delta
    for attempt in range(1, 4):
        if attempt > 1 and not ctx.within_sample_cap(budget.stage1_epochs):
            logger.info(f"stage 1: another attempt would pass the training-sample cap ({budget.max_samples})")
            break
        with ctx.stopwatch.timing("scan"), ctx.stopwatch.searching("probes"):
            picks = ranked(priced(options, base_scan))
            steps, _ = fit(base, picks, options, ctx.judge, ctx.example, base_scan, base_scan - drop)
            steps = ctx.comm.broadcast_object(steps)
        if not steps:
            break
        began = time.perf_counter()
        model = applied(base, steps, ctx.example)
        report.count_batches(offset=(attempt - 1) * batches, planned=batches)
        report.update(message=f"fine-tune, attempt {attempt}", boundary=True)
        ctx.fine_tune(model, budget.stage1_epochs, seed=ctx.seed, description="stage 1 fine-tune")
        val = ctx.val_accuracy(model)
        report.update(
            val_accuracy=val, compression=_ratio(ctx, model), message=f"attempt {attempt} fine-tuned", boundary=True
        )
        logger.info(
            f"stage 1, attempt {attempt}: {len(steps)} layers compressed, {size_mb(ctx.original) / size_mb(model):.1f}x smaller, val acc {val:.2f}% "
            f"(original {ctx.original_val:.2f}%, floor {ctx.accept_floor:.2f}%), fine-tuned in {time.perf_counter() - began:.0f}s"
        )
        if val >= ctx.accept_floor:
            return _finish(ctx, model, unpack + steps, val)
        drop /= 2
    logger.info("stage 1: no coarse plan stays within delta after fine-tuning; keeping the original")
    return _finish(ctx, base, unpack, ctx.original_val)


def _ratio(ctx: Context, model: nn.Module) -> float:
    return size_mb(ctx.original) / size_mb(model)


def _finish(ctx: Context, model: nn.Module, steps: list[Step], val: float) -> StageResult:
    ctx.run.state["stage1"] = {"checkpoint": ctx.run.save_model("stage1", model, steps), "valAccuracy": val}
    ctx.run.save()
    return StageResult(model, steps, val)
