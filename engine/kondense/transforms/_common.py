"""Helpers the transforms share: finding and replacing layers by name, and an example input fit for the model."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from kondense.device import in_mode
from kondense.errors import KondenseError

LAYER_TYPES = (nn.Conv2d, nn.Linear)


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise KondenseError(f"the model has no layer '{name}'; see optimizable_layers(model) for the names") from None


def get_layer(model: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    module = get_module(model, name)
    if not isinstance(module, LAYER_TYPES):
        raise KondenseError(
            f"'{name}' is a {type(module).__name__}, not a Conv2d or Linear layer; "
            f"see optimizable_layers(model) for the names"
        )
    return module


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace in place so that the new module keeps the same qualified name (and state_dict prefix)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def copied(model: nn.Module, only: Iterable[str] | None = None, buffers: bool = False) -> nn.Module:
    """A copy of `model` that knows which of its layers the forward pass calls (see uncalled) when `model`
    already did: a deep copy, or with `only` one that copies just the named modules and their ancestors
    (each its own attribute, parameter, buffer and child dicts, over the same tensors) and shares every
    other module with `model`. Pricing a candidate needs nothing more where the transform only reassigns
    attributes of the named modules (a pruning's cuts) or replaces them in their parents (a
    factorisation): deep copies of the whole model were most of an annealing step's estimates. Such a
    copy must not be trained or transformed any further. With `buffers`, every module that holds buffers
    is copied too, with its own copy of each: the copy may then also be recalibrated and evaluated
    (BatchNorm writes its statistics in place; the modes a forward pass sets are restored by in_mode)."""
    memo: dict[int, object] = {}
    if only is None:
        dup = copy.deepcopy(model, memo)
    else:
        holders = (
            [n for n, m in model.named_modules() if any(b is not None for b in m._buffers.values())] if buffers else []
        )
        only = [*only, *holders]
        dup = memo[id(model)] = _shallow(model)
        for name in only:
            parent, original = dup, model
            for part in name.split(".") if name else ():
                child = original._modules[part]
                if id(child) not in memo:
                    memo[id(child)] = _shallow(child)
                parent._modules[part] = memo[id(child)]
                parent, original = memo[id(child)], child
        if buffers:
            for name in holders:
                held = dup.get_submodule(name)._buffers
                held.update({k: b.clone() for k, b in held.items() if b is not None})
    hit = _CALLS.get(id(model))
    if hit is not None and hit[0] is model:  # the copy's layers are called where the original's are
        _remember(model, *hit[1:])
        _remember(dup, *({id(memo[i]) if i in memo else i for i in ids} for ids in hit[1:]))  # shared: same ids
    return dup


def _shallow(module: nn.Module) -> nn.Module:
    # what copy.copy does for a module, without its generic pickling protocol (six times slower here)
    dup = type(module).__new__(type(module))
    dup.__dict__ = {k: v.copy() if isinstance(v, (dict, set, list)) else v for k, v in module.__dict__.items()}
    return dup


def device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def prepare_input(model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    """One sample on the model's device and in its floating dtype: the structure never depends on batch size."""
    if not isinstance(example_input, torch.Tensor) or example_input.dim() == 0 or len(example_input) == 0:
        raise KondenseError("example_input must be a non-empty batched tensor, e.g. torch.randn(1, 3, 32, 32)")
    device, dtype = device_dtype(model)
    x = example_input[:1].detach()
    x = x.to(device=device, dtype=dtype) if x.is_floating_point() and dtype.is_floating_point else x.to(device)
    return x


# id(model) -> (model, ids of every Conv2d/Linear seen, ids of those the forward pass did not call).
# A layer a module uses only through its weight (nn.MultiheadAttention's out_proj, Swin's qkv/proj) is not
# called; which layers are called never changes by the transforms, which keep objects (pruning) or replace
# a called layer by a Sequential of called ones (factorisation, which registers them with `called()`).
_CALLS: dict[int, tuple[nn.Module, set[int], set[int]]] = {}
_CACHED = 8


def _forward_calls(model: nn.Module, x: torch.Tensor) -> tuple[set[int], set[int]]:
    layers = {id(m): m for m in model.modules() if isinstance(m, LAYER_TYPES)}
    seen: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, _i, _o: seen.add(id(mod))) for m in layers.values()]
    try:
        with in_mode(model, training=False), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return set(layers), set(layers) - seen


def uncalled(model: nn.Module, x: torch.Tensor) -> set[int]:
    """ids of the model's Conv2d/Linear layers that its forward pass on `x` does not call as modules."""
    hit = _CALLS.get(id(model))
    current = {id(m) for m in model.modules() if isinstance(m, LAYER_TYPES)}
    if hit is None or hit[0] is not model or not current <= hit[1]:
        return _remember(model, *_forward_calls(model, x))[2]
    return _remember(model, *hit[1:])[2]  # the most recently used stays longest


def _remember(model: nn.Module, known: set[int], missing: set[int]) -> tuple[nn.Module, set[int], set[int]]:
    """Cache what the forward pass of `model` calls, as its most recent entry (the oldest goes first)."""
    _CALLS.pop(id(model), None)
    _CALLS[id(model)] = hit = (model, known, missing)
    while len(_CALLS) > _CACHED:
        _CALLS.pop(next(iter(_CALLS)))
    return hit


def called(model: nn.Module, replacement: nn.Module) -> None:
    """Record that the layers of `replacement`, which took a called layer's place, are called too."""
    hit = _CALLS.get(id(model))
    if hit is not None and hit[0] is model:
        hit[1].update(id(m) for m in replacement.modules() if isinstance(m, LAYER_TYPES))
