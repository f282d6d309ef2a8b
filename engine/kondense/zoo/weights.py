"""Trained zoo weights: where they are cached, and how they are saved and safely loaded.

A weights file is a dict {arch, num_classes, in_channels, state_dict, meta}; it loads with
weights_only=True, so no code in it ever runs. A bare state_dict (what users often have)
is accepted too and checked against the model.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from kondense.errors import KondenseError
from kondense.files import save_json, save_torch


def home() -> Path:
    return Path(os.environ.get("KONDENSE_HOME", Path.home() / ".cache" / "kondense")).expanduser()


def cache_path(arch: str, dataset: str, num_classes: int, in_channels: int) -> Path:
    return home() / "zoo" / f"{arch}_{dataset}_{num_classes}c_{in_channels}ch.pt"


def save(path: Path, model: nn.Module, arch: str, num_classes: int, in_channels: int, meta: dict) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(
        {"arch": arch, "num_classes": num_classes, "in_channels": in_channels, "state_dict": state, "meta": meta}, path
    )
    save_json({"arch": arch, "num_classes": num_classes, "in_channels": in_channels, **meta}, path.with_suffix(".json"))


def read_meta(path: Path) -> dict | None:
    meta = path.with_suffix(".json")
    return json.loads(meta.read_text()) if meta.exists() else None


def read(path: str | Path) -> dict:
    """The raw content of a weights file, loaded without executing code."""
    path = Path(path)
    if not path.is_file():
        raise KondenseError(f"weights file '{path}' does not exist")
    with open(path, "rb") as f:
        # torch.save writes a zip archive; the legacy format is a raw pickle (protocol byte 0x80)
        if not (zipfile.is_zipfile(f) or f.seek(0) == 0 and f.read(1) == b"\x80"):
            raise KondenseError(f"'{path}' is not a PyTorch weights file (expected what torch.save writes)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise KondenseError(
            f"'{path}' holds more than weights (objects that would need code execution to load); "
            f"save model.state_dict() instead: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError) as e:
        raise KondenseError(f"'{path}' is not a PyTorch weights file: {str(e).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise KondenseError(f"'{path}' holds a {type(content).__name__}, not a state dict")
    return content


def load_into(model: nn.Module, path: str | Path, arch: str, num_classes: int, in_channels: int) -> nn.Module:
    """Load a weights file into `model`, saying clearly when it was made for another model."""
    content = read(path)
    if "state_dict" in content and "arch" in content:
        theirs = (content["arch"], content["num_classes"], content["in_channels"])
        if theirs != (arch, num_classes, in_channels):
            raise KondenseError(
                f"weights file '{path}' is for {theirs[0]} with {theirs[1]} classes and {theirs[2]} input channels, "
                f"not {arch} with {num_classes} classes and {in_channels} input channels"
            )
        state = content["state_dict"]
    else:
        state = content
    return fit(
        model, state, f"weights file '{path}'", f"{arch} with {num_classes} classes and {in_channels} input channels"
    )


def fit(model: nn.Module, state: dict, what: str, model_name: str) -> nn.Module:
    """Load `state` into `model`, saying clearly which keys or shapes do not fit and what each side is."""
    if isinstance(state.get("state_dict"), dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        state = state["state_dict"]  # {"state_dict": ..., "epoch": ...}, as many training scripts save
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise KondenseError(
            f"{what} does not fit {model_name}: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); is it for another architecture?"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        k, got, want = wrong[0]
        raise KondenseError(
            f"{what} does not fit {model_name}: {k} has shape {list(got)}, expected {list(want)} "
            "(the number of classes comes from the data, the input channels from the data's images)"
        )
    model.load_state_dict(state)
    return model
