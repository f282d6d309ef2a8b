"""Where, in which precision and in which mode (train/eval) a model runs: one place decides for the whole engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from kondense.errors import KondenseError


def resolve(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA where there is none is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KondenseError(f"--device {name} was asked for, but torch sees no CUDA device here; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise KondenseError(f"unknown device '{name}': use cpu, cuda, cuda:N or auto")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' trains in bf16 autocast where the hardware runs it natively (about 2x on AVX-512 BF16 CPUs)."""
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if name not in ("fp32", "bf16"):
        raise KondenseError(f"unknown precision '{name}': use fp32, bf16 or auto")
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batch_to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an input batch; images go channels-last, which oneDNN and cuDNN convolutions run fastest."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


@contextlib.contextmanager
def in_mode(model: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """`model` in train or eval mode while inside; afterwards every module's own flag as it was
    (model.train(flag) would overwrite sub-modules a caller froze on purpose)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.train(training)
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
