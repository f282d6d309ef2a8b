"""Every compressed model kondense saves or loads: the steps that made it plus its weights.

One format serves the run's checkpoints (kept for resuming) and the final model.pt: the
transformation steps and the state dict, and for model.pt also the original's identity and the
input shape. Rebuilding = take the original architecture, replay the steps (shapes depend on
nothing else), load the weights. Files load with weights_only=True; no code runs. TorchScript
(model.ts) is written here too.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from kondense import sources
from kondense.errors import KondenseError
from kondense.files import atomic_write, save_torch
from kondense.pipeline.plan import Step, replay, steps_from_json, steps_to_json

FORMAT = "kondense.compressed/v1"


def save_state(
    path: str | Path,
    model: nn.Module,
    steps: list[Step],
    *,
    base: dict | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Path:
    """Write `model`'s weights and the `steps` that shaped it. model.pt adds `base`, naming the
    original (kondense.sources' base: a zoo or torchvision architecture, a factory; {} for a module object), and
    `input_shape`, so that load_compressed can rebuild it alone."""
    content = {
        "format": FORMAT,
        "steps": steps_to_json(steps),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    if base is not None:
        content.update(base=base, input_shape=list(input_shape or ()))
    return save_torch(content, path)


def load_state(path: str | Path, original: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[Step]]:
    """Rebuild a saved model from `original` (not modified), on the original's device and memory format."""
    content = _read(path)
    steps = steps_from_json(content["steps"])
    ref = next(original.parameters(), None)
    model = _rebuild(copy.deepcopy(original), steps, content["state_dict"], example)
    if ref is not None:
        model = model.to(ref.device).to(memory_format=torch.channels_last)
    return model, steps


def load_compressed(
    path: str | Path, base_model: nn.Module | None = None, code_dir: str | Path | None = None
) -> nn.Module:
    """Rebuild a compressed model.pt on the CPU, in eval mode. Models from the zoo, torchvision or a
    factory rebuild alone (a factory's package importable, or under `code_dir`); for a module object
    passed to compress(), pass that uncompressed module as `base_model` (not modified)."""
    content = _read(path)
    base = content.get("base")
    if base is None:
        raise KondenseError(
            f"'{path}' is a run checkpoint, not a finished model: load the model.pt of the run's output directory"
        )
    model = copy.deepcopy(base_model).cpu() if base_model is not None else sources.rebuild(base, code_dir)
    if model is None:
        raise KondenseError(
            f"'{path}' was compressed from a module object: pass that uncompressed module as base_model to rebuild it"
        )
    example = torch.zeros(1, *content["input_shape"])
    return _rebuild(model, steps_from_json(content["steps"]), content["state_dict"], example).eval()


def _read(path: str | Path) -> dict:
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise KondenseError(f"'{path}' is not a compressed model written by kondense")
    return content


def _rebuild(model: nn.Module, steps: list[Step], state_dict: dict, example: torch.Tensor) -> nn.Module:
    replay(model, steps, example)
    model.load_state_dict(state_dict)
    return model


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
