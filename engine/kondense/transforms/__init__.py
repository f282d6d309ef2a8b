"""Per-layer compression steps for Conv2d and Linear layers.

A compressed model is described by the list of (layer name, transform, ratio) steps that made
it: every step's resulting shapes depend only on the current shapes and the step, so replaying
the list on a freshly built architecture recreates the structure and its state_dict loads.

- 'prune': structured output-channel pruning (see pruning.py); the ratio applies to the whole
  group of channels coupled to the layer (residual additions, concatenations, depthwise convs).
- 'lowrank': truncated SVD (Linear, 1x1 conv) or Tucker-2 (kxk conv) factorisation into a
  Sequential at the same name, whose inner layers can be transformed again later.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from kondense.errors import KondenseError
from kondense.transforms import lowrank, pruning
from kondense.transforms._common import LAYER_TYPES, get_layer, get_module, guess_input, inspecting, prepare_input, set_module

TRANSFORMS: tuple[str, ...] = ("prune", "lowrank")

__all__ = ["TRANSFORMS", "optimizable_layers", "candidates", "apply", "layer_cost"]


def optimizable_layers(model: nn.Module) -> list[str]:
    """Qualified names (as in model.named_modules()) of every nn.Conv2d and nn.Linear, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def candidates(model: nn.Module, name: str, protected: set[str] | None = None,
               example_input: torch.Tensor | None = None) -> list[str]:
    """Which of TRANSFORMS apply to layer `name` in its current form, in TRANSFORMS order.

    `protected` names layers whose outputs must keep their size (the final classifier: its
    outputs are the classes); a layer whose channels are coupled to them, to the model input or
    to the model output is not prunable either. A protected name that was factorised since
    protects every layer inside its Sequential. Finding the couplings needs one trace of the
    model, on `example_input` if given, else on the last input shape this model was used with
    (apply/layer_cost), else on a guessed image size; the answers for all layers are cached
    until the model's structure changes, so asking layer by layer is cheap.
    """
    module = get_module(model, name)
    if not isinstance(module, LAYER_TYPES):
        return []
    x = prepare_input(model, example_input) if example_input is not None else guess_input(model)
    found = []
    if pruning.blockers(model, set(protected or ()), x).get(name) is None:
        found.append("prune")
    if lowrank.blocker(module) is None:
        found.append("lowrank")
    return found


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not math.isfinite(ratio) or not 0 < ratio <= 1:
        raise KondenseError(f"ratio must be a number in (0, 1] (1 leaves the layer as it is), got {ratio!r}")
    return float(ratio)


def apply(model: nn.Module, name: str, transform: str, ratio: float, example_input: torch.Tensor) -> nn.Module:
    """Apply one transform to one layer, in place, and return the model.

    The resulting shapes depend only on the model's current shapes, `name`, `transform` and
    `ratio`, never on weight values, so a list of steps replays onto a fresh model exactly.
    ratio == 1.0 is a no-op (after checking the name, transform and ratio). 'prune' refuses a
    layer whose channels reach the model output or input; a classifier protected by the caller
    in candidates() is thereby refused here too when it produces the model output.
    """
    if transform not in TRANSFORMS:
        raise KondenseError(f"unknown transform '{transform}'; known: {', '.join(TRANSFORMS)}")
    ratio = _check_ratio(ratio)
    layer = get_layer(model, name)
    x = prepare_input(model, example_input)
    if ratio == 1.0:
        return model
    if transform == "lowrank":
        reason = lowrank.blocker(layer)
        if reason is not None:
            raise KondenseError(f"'lowrank' does not apply to '{name}': {reason}")
        set_module(model, name, lowrank.factorise(layer, ratio))
    else:
        pruning.prune(model, name, layer, ratio, x)
    return model


def layer_cost(model: nn.Module, name: str, example_input: torch.Tensor) -> dict:
    """{'params': int, 'macs': int} of the layer `name` for one sample.

    MACs need the layer's output size, which only a forward pass tells (strides, padding and
    pooling upstream), hence the example input. A layer that was factorised into a Sequential
    costs the sum of its parts; a layer that does not run on the input costs 0 MACs.
    """
    module = get_module(model, name)
    layers = [m for m in module.modules() if isinstance(m, LAYER_TYPES)]
    if not layers:
        raise KondenseError(f"'{name}' is a {type(module).__name__} with no Conv2d or Linear layer in it")
    x = prepare_input(model, example_input)
    macs = [0]

    def count(layer: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            per_output = kh * kw * (layer.in_channels // layer.groups)
            macs[0] += per_output * output[0].numel()  # output[0]: C_out * H_out * W_out of sample 0
        else:
            macs[0] += layer.in_features * output[0].numel() if output.dim() > 1 else layer.in_features * output.numel()

    hooks = [m.register_forward_hook(count) for m in layers]
    try:
        with inspecting(model), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    params = sum(p.numel() for m in layers for p in (m.weight, m.bias) if p is not None)
    return {"params": int(params), "macs": int(macs[0])}
