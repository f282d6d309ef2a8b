"""Compressed models on disk: a weights-only state file kondense can rebuild, and TorchScript.

The state file holds the original model's identity, the transformation steps and the
weights. Rebuilding = build the original architecture, replay the steps (shapes depend
on nothing else), load the weights. It loads with weights_only=True; no code runs.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from kondense import zoo
from kondense.errors import KondenseError
from kondense.files import atomic_write, save_torch
from kondense.pipeline.plan import Step, replay, steps_from_json, steps_to_json

FORMAT = "kondense.compressed/v1"


def save_state(path: str | Path, model: nn.Module, base: dict, steps: list[Step], input_shape: tuple[int, ...]) -> Path:
    """`base` names the original: {'arch', 'num_classes', 'in_channels'} for zoo models, or {} for a user's module."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_torch({"format": FORMAT, "base": base, "input_shape": list(input_shape), "steps": steps_to_json(steps),
                       "state_dict": state}, path)


def load_state(path: str | Path, base_model: nn.Module | None = None) -> nn.Module:
    """Rebuild a compressed model. Zoo-based files rebuild alone; for a user's own model,
    pass the uncompressed module it started from as `base_model` (it is not modified)."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise KondenseError(f"'{path}' is not a compressed model written by kondense")
    base = content["base"]
    if base_model is not None:
        model = copy.deepcopy(base_model).cpu()
    elif base.get("arch"):
        model = zoo.build(base["arch"], base["num_classes"], base["in_channels"])
    else:
        raise KondenseError(f"'{path}' was compressed from a user's own model: pass that model as base_model to rebuild it")
    example = torch.zeros(1, *content["input_shape"])
    replay(model, steps_from_json(content["steps"]), example)
    model.load_state_dict(content["state_dict"])
    return model.eval()


def save_torchscript(path: str | Path, model: nn.Module, example: torch.Tensor) -> Path:
    """A traced module: runs with torch alone, without kondense installed."""
    model = copy.deepcopy(model).cpu().eval()
    example = example[:1].cpu().contiguous()
    # torch 2.14 marks TorchScript deprecated in favour of torch.export, but TorchScript is
    # still what loads anywhere without Python code (C++, mobile), so it stays the format
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
    return atomic_write(path, lambda tmp: traced.save(str(tmp)))
