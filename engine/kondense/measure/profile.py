"""The six metrics of a model, one function each; METRICS declares them once for every report.

accuracy   top-1 % on a loader (the test split when reporting)
sizeMB     trainable parameters x bytes per parameter / 2^20
macsG      multiply-accumulates of one batch-1 forward pass, conv and linear layers, in billions
paramsM    trainable parameters, millions
memoryMB   batch-1 inference: input + every distinct activation tensor the forward pass
           produces + parameters, in MB (2^20 bytes)
latencyMs  median time of a forward pass over a batch, after warm-up, divided by the batch size
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from kondense.device import batch_to, in_mode

MB = 2**20


@dataclass(frozen=True)
class Metric:
    """One of the six metrics, declared once: the Metrics field and JSON key, the report's row
    label, and how the compressed model's value compares with the original's.

    better  'lower' (a cost): enhancement = original / compressed, 'x times smaller'
            'higher' (accuracy): enhancement = original - compressed, the drop in points
    """

    key: str
    label: str
    enhancement: str
    better: str

    def enhance(self, before: float | None, after: float | None) -> float | None:
        if self.better == "higher":
            return (before or 0) - (after or 0)
        return before / after if before is not None and after else None


METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "Accuracy (%)", "accuracyDrop", "higher"),
    Metric("sizeMB", "Size (MB)", "size", "lower"),
    Metric("macsG", "MACs (G)", "macs", "lower"),
    Metric("paramsM", "Params (M)", "params", "lower"),
    Metric("memoryMB", "Memory (MB)", "memory", "lower"),
    Metric("latencyMs", "Latency (ms)", "latency", "lower"),
)


def _to_dict(self) -> dict:
    return dataclasses.asdict(self)


# The six metrics of one model, fields in METRICS order; the field names are the JSON keys used
# everywhere (CLI, reports, CR status). Accuracy is None when no data was given.
Metrics = dataclasses.make_dataclass(
    "Metrics", [(m.key, "float | None") for m in METRICS], namespace={"to_dict": _to_dict}
)
Metrics.__module__ = __name__  # pickled between ranks: pickle finds the class by module and name


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def params_m(model: nn.Module) -> float:
    return sum(p.numel() for p in _trainable(model)) / 1e6


def size_mb(model: nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in _trainable(model)) / MB


def _example(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> torch.Tensor:
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    return torch.zeros(batch, *input_shape, device=device, dtype=dtype)


@torch.no_grad()
def macs_g(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """torch's FLOP counter counts 2 per multiply-accumulate of convolutions and matrix products
    (C_in/groups * k_h * k_w per conv output, in*out per linear), which is the definition."""
    with in_mode(model, training=False), FlopCounterMode(display=False) as counter:
        model(_example(model, input_shape))
    return counter.get_total_flops() / 2 / 1e9


class _ActivationRecorder(TorchDispatchMode):
    """Records every distinct storage the forward pass creates. In-place ops and views share
    their input's storage, so they are counted once; references are held so that a freed
    buffer's address cannot be reused by a later tensor and be mistaken for it."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude
        self.storages: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > 0:
                ptr = t.untyped_storage().data_ptr()
                if ptr not in self.exclude and ptr not in self.storages:
                    self.storages[ptr] = t.untyped_storage().nbytes()
                    self.keep.append(t)
        return out


@torch.no_grad()
def memory_mb(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    x = _example(model, input_shape)
    state = [*model.parameters(), *model.buffers()]
    recorder = _ActivationRecorder({t.untyped_storage().data_ptr() for t in state} | {x.untyped_storage().data_ptr()})
    with in_mode(model, training=False), recorder:
        model(x)
    activations = sum(recorder.storages.values())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return (x.numel() * x.element_size() + activations + params) / MB


@torch.no_grad()
def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 32, warmup: int = 3, runs: int = 10
) -> float:
    x = _example(model, input_shape, batch_size)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    with in_mode(model, training=False):
        for i in range(warmup + runs):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times) / batch_size * 1e3


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy in percent."""
    device = next(model.parameters()).device
    correct = total = 0
    with in_mode(model, training=False):
        for x, y in loader:
            pred = model(batch_to(x, device)).argmax(dim=1)
            correct += (pred.cpu() == y).sum().item()
            total += len(y)
    return 100.0 * correct / max(total, 1)


def profile(
    model: nn.Module, input_shape: tuple[int, ...], loader: DataLoader | None = None, latency_batch: int = 32
) -> Metrics:
    """All six metrics; accuracy is None without a loader."""
    return Metrics(
        accuracy=accuracy(model, loader) if loader is not None else None,
        sizeMB=size_mb(model),
        macsG=macs_g(model, input_shape),
        paramsM=params_m(model),
        memoryMB=memory_mb(model, input_shape),
        latencyMs=latency_ms(model, input_shape, batch_size=latency_batch),
    )
