"""Per-layer compression steps for Conv2d and Linear layers.

A compressed model is described by the list of (layer name, transform, ratio) steps that made
it: every step's resulting shapes depend only on the current shapes and the step, so replaying
the list on a freshly built architecture recreates the structure and its state_dict loads.

- 'prune': structured output-channel pruning (see pruning.py); the ratio applies to the whole
  group of channels coupled to the layer (residual additions, concatenations, depthwise convs).
- 'heads': removing whole heads of a multi-head attention (see attention.py), a step on the
  attention's output projection; an nn.MultiheadAttention becomes an equivalent `Attention` first.
- 'lowrank': truncated SVD (Linear, 1x1 conv) or Tucker-2 (kxk conv) factorisation into a
  Sequential at the same name, whose inner layers can be transformed again later.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from kondense.errors import KondenseError
from kondense.transforms import attention, lowrank, pruning
from kondense.transforms._common import (
    LAYER_TYPES,
    called,
    copied,
    get_layer,
    get_module,
    prepare_input,
    set_module,
    uncalled,
)
from kondense.transforms.pruning import Recipe

# the order a plan applies them in: prunings change neighbouring shapes, head pruning needs the projections whole
TRANSFORMS: tuple[str, ...] = ("prune", "heads", "lowrank")

__all__ = [
    "TRANSFORMS",
    "optimizable_layers",
    "candidates",
    "skipped",
    "apply",
    "prune_recipe",
    "packed_attention",
    "Recipe",
    "copied",
]


def optimizable_layers(model: nn.Module) -> list[str]:
    """Qualified names (as in model.named_modules()) of every nn.Conv2d and nn.Linear, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def candidates(
    model: nn.Module, name: str, protected: set[str] | None = None, *, example_input: torch.Tensor
) -> list[str]:
    """Which of TRANSFORMS apply to layer `name` in its current form, in TRANSFORMS order.

    `protected` names layers whose outputs must keep their size (the final classifier: its
    outputs are the classes); a layer whose channels are coupled to them, to the model input or
    to the model output is not prunable either. A protected name that was factorised since
    protects every layer inside its Sequential. Finding the couplings needs one trace of the
    model on `example_input`; the answers for all layers are cached until the model's structure
    changes, so asking layer by layer is cheap.
    """
    module = get_module(model, name)
    if not isinstance(module, LAYER_TYPES):
        return []
    x = prepare_input(model, example_input)
    found = []
    if pruning.blockers(model, set(protected or ()), x).get(name) is None:
        found.append("prune")
    if _heads_blocker(model, name) is None:
        found.append("heads")
    if lowrank.blocker(module, id(module) not in uncalled(model, x)) is None:
        found.append("lowrank")
    return found


def skipped(model: nn.Module, protected: set[str] | None = None, *, example_input: torch.Tensor) -> dict[str, str]:
    """{layer name: why no transform applies} for every Conv2d/Linear that candidates() gives nothing,
    e.g. "prune: it is a depthwise conv...; lowrank: it is a grouped/depthwise conv..."."""
    x = prepare_input(model, example_input)
    prune_reasons = pruning.blockers(model, set(protected or ()), x)
    missing = uncalled(model, x)
    found = {}
    for name, m in model.named_modules():
        if not isinstance(m, LAYER_TYPES):
            continue
        low = lowrank.blocker(m, id(m) not in missing)
        if prune_reasons.get(name) is None or low is None:
            continue
        heads = _heads_blocker(model, name)
        if heads is None:
            continue
        # a layer that is no attention's output projection says nothing about heads
        about_heads = f"; heads: {heads}" if attention.owner(model, name) is not None else ""
        found[name] = f"prune: {prune_reasons[name]}{about_heads}; lowrank: {low}"
    return found


def packed_attention(model: nn.Module) -> list[str]:
    """The output projections of the model's nn.MultiheadAttention modules whose heads can be pruned. A
    'heads' step at ratio 1.0 on each unpacks them into the same computation with plain projections: those
    the dependency graph can follow, so that low-rank factorisation reaches them and the model's width
    (the channels every block adds to) can be pruned, which one packed attention would block."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and isinstance(attention.owner(model, name), nn.MultiheadAttention)
        and _heads_blocker(model, name) is None
    ]


def _heads_blocker(model: nn.Module, name: str) -> str | None:
    owner = attention.owner(model, name)
    if owner is None:
        return "it is not the output projection of a multi-head attention"
    return attention.blocker(owner)


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not math.isfinite(ratio) or not 0 < ratio <= 1:
        raise KondenseError(f"ratio must be a number in (0, 1] (1 leaves the layer as it is), got {ratio!r}")
    return float(ratio)


def apply(model: nn.Module, name: str, transform: str, ratio: float, example_input: torch.Tensor) -> nn.Module:
    """Apply one transform to one layer, in place, and return the model.

    The resulting shapes depend only on the model's current shapes, `name`, `transform` and
    `ratio`, never on weight values, so a list of steps replays onto a fresh model exactly.
    ratio == 1.0 is a no-op (after checking the name, transform and ratio), except that 'heads' at 1.0 keeps
    every head of an nn.MultiheadAttention but unpacks it (see packed_attention()). 'prune' refuses a
    layer whose channels reach the model output or input; a classifier protected by the caller
    in candidates() is thereby refused here too when it produces the model output.
    """
    if transform not in TRANSFORMS:
        raise KondenseError(f"unknown transform '{transform}'; known: {', '.join(TRANSFORMS)}")
    ratio = _check_ratio(ratio)
    layer = get_layer(model, name)
    x = prepare_input(model, example_input)
    if ratio == 1.0 and transform != "heads":
        return model
    if transform == "lowrank":
        reason = lowrank.blocker(layer, id(layer) not in uncalled(model, x))
        if reason is not None:
            raise KondenseError(f"'lowrank' does not apply to '{name}': {reason}")
        replacement = lowrank.factorise(layer, ratio)
        set_module(model, name, replacement)
        called(model, replacement)
    elif transform == "heads":
        reason = _heads_blocker(model, name)
        if reason is not None:
            raise KondenseError(f"'heads' does not apply to '{name}': {reason}")
        replacement = attention.prune(attention.owner(model, name), ratio)
        set_module(model, name.rpartition(".")[0], replacement)
        called(model, replacement)
    else:
        pruning.prune(model, name, ratio, x)
    return model


def prune_recipe(model: nn.Module, name: str, ratio: float, example_input: torch.Tensor) -> Recipe:
    """Pruning layer `name` of `model` to `ratio`, planned on `model` (left unchanged) and applied to a
    copy with `recipe.apply(copy.deepcopy(model))`: every trial on one model state shares one trace of it."""
    ratio = _check_ratio(ratio)
    get_layer(model, name)
    return pruning.pruner(model, prepare_input(model, example_input)).recipe(name, ratio)
