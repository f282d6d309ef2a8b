"""Helpers the transforms share: finding and replacing layers by name, and an example input fit for the model."""

from __future__ import annotations

import torch
from torch import nn

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
