"""Stage 2, annealing: from stage 1, compress further in steps until the budget is spent.

Each step rescans the current model at one ratio, ranks the layers by saving per point of
accuracy, and takes as many as keep the composed model's scan accuracy within the step's
allowance of the current one; it fine-tunes, and keeps the result only if validation accuracy
stays above the floor. A rejected step halves the allowance (the temperature falls) and
retries from the same scan (the model did not change); `patience` rejections in a row end
the stage.
"""

from __future__ import annotations

import logging
import time

from kondense.measure.profile import size_mb
from kondense.pipeline.conductor import fit, greedy_step, scan
from kondense.pipeline.context import Context
from kondense.pipeline.exploration import StageResult
from kondense.pipeline.plan import applied

logger = logging.getLogger(__name__)


def anneal(ctx: Context, start: StageResult) -> tuple[StageResult, list[dict]]:
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
    scanned = None  # (options, base accuracy) of `current`, reused after a rejected step
    while not state["done"] and state["step"] < budget.max_steps:
        k = state["step"] + 1
        logger.info(
            f"stage 2, step {k}/{budget.max_steps}: {'rescan at ratio ' + str(budget.anneal_ratio) if scanned is None else 'same scan'}, "
            f"allowance {state['drop']:.2f} points"
        )
        if scanned is None:
            options = scan(current.model, ctx.judge, ctx.example, (budget.anneal_ratio,), ctx.objective, ctx.protected)
            scanned = (options, ctx.judge.scan_accuracy(applied(current.model, [], ctx.example)))
        options, base = scanned
        picks = greedy_step(options, base, state["drop"])
        steps, _ = fit(current.model, picks, options, ctx.judge, ctx.example, base, base - state["drop"])
        steps = ctx.comm.broadcast_object(steps)
        if not steps:
            logger.info(f"stage 2, step {k}: no layer can shrink within the allowance; done")
            state["done"] = True
            break
        model = applied(current.model, steps, ctx.example)
        ctx.count_samples(
            ctx.finetune.run(
                model,
                ctx.teacher_data,
                budget.step_epochs,
                seed=ctx.seed + k,
                description=f"stage 2 step {k}",
                comm=ctx.comm,
            )
        )
        val = ctx.judge.val_accuracy(model)
        accepted = val >= ctx.accept_floor
        state["history"].append(_point(ctx, f"step {k}", model, val, accepted))
        if accepted:
            current, scanned = StageResult(model, current.steps + steps, val), None
            state.update(checkpoint=run.save_model(f"stage2_step{k}", model, current.steps), valAccuracy=val, rejects=0)
        else:
            state["rejects"] += 1
            state["drop"] /= 2
            state["done"] = state["rejects"] >= budget.patience
        state["step"] = k
        run.save()
        per_step = (time.perf_counter() - began) / (k - first)
        logger.info(
            f"stage 2, step {k}: {len(steps)} layers shrunk, val acc {val:.2f}% (floor {ctx.accept_floor:.2f}%) -> "
            f"{'kept' if accepted else 'rejected'}; size {size_mb(current.model):.3f} MB "
            f"({size_mb(ctx.original) / size_mb(current.model):.1f}x smaller); "
            f"ETA at most {per_step * (budget.max_steps - k):.0f}s"
        )
    state["done"] = True
    run.save()
    return current, state["history"]


def _point(ctx: Context, label: str, model, val: float, accepted: bool) -> dict:
    return {"label": label, "valAccuracy": val, "sizeMB": size_mb(model), "accepted": accepted}
