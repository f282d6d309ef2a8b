"""Stage 2, annealing: from stage 1, compress further in steps until the accuracy budget is spent.

Each step estimates, from one pass of gradients, what shrinking each layer of the current model
to one ratio would cost (pipeline.estimate), ranks the layers by saving per unit of that harm,
and takes as many as keep the composed model's measured scan accuracy within the step's
allowance of the current one; it fine-tunes, and keeps the result only if validation accuracy
stays above the floor. A rejected step halves the allowance (the temperature falls) and retries
from the same estimates (the model did not change); a kept step doubles it again (up to GROWTH
times where it started), so one unlucky step does not slow every later one. A step that ends just below the floor (within half of delta) is
fine-tuned once more before it is given up: a bigger cut needs more training, not a retreat. The stage ends when `patience`
steps in a row are rejected, when no layer can shrink within the allowance, or at the caps a
user may set (`max_steps`, `max_samples`); a run still improving never stops on its own.
"""

from __future__ import annotations

import logging
import time

from kondense.measure.profile import size_mb
from kondense.pipeline.conductor import estimated, fit, ranked
from kondense.pipeline.context import Context
from kondense.pipeline.exploration import StageResult
from kondense.pipeline.plan import applied
from kondense.progress import StageProgress, stage_progress

logger = logging.getLogger(__name__)

# How far the allowance may grow past where it started while steps keep being kept. Growing it
# 8-fold made steps of 8 layers at once that the tiny test's 600 validation samples passed and its
# test split did not (3.4 points lost at delta 3); recovering to the start kept the demo's 8.31x and
# took the tiny run further (9.7x, 0.65 points lost), in more, smaller steps.
GROWTH = 1


def anneal(ctx: Context, start: StageResult) -> tuple[StageResult, list[dict]]:
    with stage_progress(2) as report:
        return _anneal(ctx, start, report)


def _anneal(ctx: Context, start: StageResult, report: StageProgress) -> tuple[StageResult, list[dict]]:
    run, budget = ctx.run, ctx.budget
    state = run.state.get("stage2")
    if state is None:
        state = {
            "step": 0,
            "drop": budget.step_drop * ctx.delta,
            "rejects": 0,
            "done": False,
            "checkpoint": None,
            "valAccuracy": start.val_accuracy,
            "history": [_point(ctx, "stage 1", start.model, start.val_accuracy, True)],
        }
        run.state["stage2"] = state
    if state["checkpoint"]:
        model, steps = run.load_model(state["checkpoint"], ctx.original, ctx.example)
        logger.info(
            f"stage 2: resumed after step {state['step']} ({len(steps)} steps, val acc {state['valAccuracy']:.2f}%)"
        )
        current = StageResult(model, steps, state["valAccuracy"])
    else:
        current = start

    began, first = time.perf_counter(), state["step"]
    report.update(val_accuracy=current.val_accuracy, compression=_ratio(ctx, current.model))
    scanned = None  # (options, base accuracy) of `current`, reused after a rejected step
    while not state["done"]:
        stop = _cap_reached(ctx, state["step"])
        if stop:
            logger.info(f"stage 2: {stop}; done")
            break
        k = state["step"] + 1
        report.within_step(state["step"], _planned_steps(ctx, state["step"]))
        logger.info(
            f"stage 2, step {k}{'/' + str(budget.max_steps) if budget.max_steps else ''}: "
            f"{'estimating every layer at ratio ' + str(budget.anneal_ratio) if scanned is None else 'same estimates'}, "
            f"allowance {state['drop']:.2f} points"
        )
        with ctx.stopwatch.timing("scan"):
            if scanned is None:
                with ctx.stopwatch.searching("estimates"):
                    # every rank computes the same estimates; rank 0's are taken so that all probe alike
                    options = ctx.comm.broadcast_object(
                        estimated(
                            current.model,
                            ctx.judge.recal,
                            ctx.example,
                            budget.anneal_ratio,
                            ctx.objective,
                            ctx.protected,
                            budget.recal_samples,
                            ctx.latency_table,
                        )
                    )
                with ctx.stopwatch.searching("probes"):
                    scanned = (options, ctx.judge.scan_accuracy(applied(current.model, [], ctx.example, judged=True)))
            options, base = scanned
            with ctx.stopwatch.searching("probes"):
                steps, _ = fit(
                    current.model, ranked(options), options, ctx.judge, ctx.example, base, base - state["drop"]
                )
                steps = ctx.comm.broadcast_object(steps)
        if not steps:
            logger.info(f"stage 2, step {k}: no layer can shrink within the allowance; done")
            break
        model = applied(current.model, steps, ctx.example)
        ctx.fine_tune(model, budget.step_epochs, seed=ctx.seed + k, description=f"stage 2 step {k}")
        val = ctx.val_accuracy(model)
        if ctx.accept_floor - ctx.delta / 2 <= val < ctx.accept_floor and ctx.within_sample_cap(budget.step_epochs):
            # Close: a bigger cut needs more training, not a retreat. One more fine-tuning of the same
            # length before the step is given up, rather than throwing away what it has learnt.
            logger.info(f"stage 2, step {k}: val acc {val:.2f}% is just below the floor; fine-tuning it once more")
            ctx.fine_tune(model, budget.step_epochs, seed=ctx.seed + k + 10_000, description=f"stage 2 step {k}, more")
            val = ctx.val_accuracy(model)
        accepted = val >= ctx.accept_floor
        state["history"].append(_point(ctx, f"step {k}", model, val, accepted))
        if accepted:
            current, scanned = StageResult(model, current.steps + steps, val), None
            state.update(checkpoint=run.save_model(f"stage2_step{k}", model, current.steps), valAccuracy=val, rejects=0)
            state["drop"] = min(state["drop"] * 2, GROWTH * budget.step_drop * ctx.delta)
        else:
            state["rejects"] += 1
            state["drop"] /= 2
            state["done"] = state["rejects"] >= budget.patience
        state["step"] = k
        run.save()
        report.update(
            step=k,
            fraction=k / report.steps if report.steps else None,
            val_accuracy=current.val_accuracy,
            compression=_ratio(ctx, current.model),
            message=f"step {k} {'kept' if accepted else 'rejected'} (val acc {val:.2f}%)",
            boundary=True,
        )
        per_step = (time.perf_counter() - began) / (k - first)
        logger.info(
            f"stage 2, step {k}: {len(steps)} layers shrunk, val acc {val:.2f}% (floor {ctx.accept_floor:.2f}%) -> "
            f"{'kept' if accepted else 'rejected'}; size {size_mb(current.model):.3f} MB "
            f"({size_mb(ctx.original) / size_mb(current.model):.1f}x smaller); {per_step:.0f}s per step"
            + (f", ETA at most {per_step * (budget.max_steps - k):.0f}s" if budget.max_steps else "")
        )
    state["done"] = True
    run.save()
    report.finish(val_accuracy=current.val_accuracy, compression=_ratio(ctx, current.model), message="done")
    return current, state["history"]


def _ratio(ctx: Context, model) -> float:
    return size_mb(ctx.original) / size_mb(model)


def _planned_steps(ctx: Context, done: int) -> int | None:
    """How many steps annealing takes at most, as far as the user's caps say: the step cap, or the
    steps the training-sample cap leaves room for (fewer when a step needed a second fine-tune).
    None without caps: annealing then ends on patience, which nothing can foretell."""
    budget, caps = ctx.budget, []
    if budget.max_steps is not None:
        caps.append(budget.max_steps)
    if budget.max_samples is not None:
        per_step = ctx.planned_samples(budget.step_epochs)
        caps.append(done + max(0, (budget.max_samples - ctx.samples) // max(per_step, 1)))
    return max(min(caps), done + 1) if caps else None


def _cap_reached(ctx: Context, step: int) -> str | None:
    """Why annealing stops before another step, if a cap the user set says so."""
    budget = ctx.budget
    if budget.max_steps is not None and step >= budget.max_steps:
        return f"the step cap ({budget.max_steps}) is reached"
    if not ctx.within_sample_cap(budget.step_epochs):
        per_step = ctx.planned_samples(budget.step_epochs)
        return f"another step would pass the training-sample cap ({ctx.samples} + {per_step} > {budget.max_samples})"
    return None


def _point(ctx: Context, label: str, model, val: float, accepted: bool) -> dict:
    return {"label": label, "valAccuracy": val, "sizeMB": size_mb(model), "accepted": accepted}
