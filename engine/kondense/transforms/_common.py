"""Helpers the transforms share: finding and replacing layers by name, and running a model
for inspection without leaving a trace on it (train/eval flags, BatchNorm statistics)."""
from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

import torch
from torch import nn

from kondense.errors import KondenseError

LAYER_TYPES = (nn.Conv2d, nn.Linear)

# the last example input shape seen per model, so candidates() can trace without being given one
_INPUT_SHAPES: "weakref.WeakKeyDictionary[nn.Module, tuple[int, ...]]" = weakref.WeakKeyDictionary()


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise KondenseError(f"the model has no layer '{name}'; see optimizable_layers(model) for the names") from None


def get_layer(model: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    module = get_module(model, name)
    if not isinstance(module, LAYER_TYPES):
        raise KondenseError(f"'{name}' is a {type(module).__name__}, not a Conv2d or Linear layer; "
                            f"see optimizable_layers(model) for the names")
    return module


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace in place so that the new module keeps the same qualified name (and state_dict prefix)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


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
    _INPUT_SHAPES[model] = tuple(x.shape)
    return x


@contextlib.contextmanager
def inspecting(model: nn.Module) -> Iterator[None]:
    """Eval mode while inside, so BatchNorm statistics stay untouched; every module's own flag restored after
    (model.train(flag) would overwrite sub-modules a caller froze on purpose)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def guess_input(model: nn.Module) -> torch.Tensor:
    """An input the model accepts, for callers that did not pass one: the last shape used with this model,
    else a few common image sizes fitted to the first layer."""
    device, dtype = device_dtype(model)
    if model in _INPUT_SHAPES:
        return torch.zeros(_INPUT_SHAPES[model], device=device, dtype=dtype)
    first = next((m for m in model.modules() if isinstance(m, LAYER_TYPES)), None)
    if isinstance(first, nn.Linear):
        shapes = [(1, first.in_features)]
    elif isinstance(first, nn.Conv2d):
        shapes = [(1, first.in_channels, s, s) for s in (32, 28, 64, 224)]
    else:
        shapes = []
    for shape in shapes:
        x = torch.zeros(shape, device=device, dtype=dtype)
        try:
            with inspecting(model), torch.no_grad():
                model(x)
        except Exception:  # noqa: BLE001 - any failure just means "not this shape"
            continue
        return x
    raise KondenseError("could not infer an input shape for this model; pass example_input")
