"""Structured output-channel pruning through torch-pruning's dependency graph.

torch-pruning traces the model and finds every tensor dimension coupled to a layer's output
channels (BatchNorm, the next layers' inputs, residual additions, concatenations, depthwise
convs). Pruning a layer prunes that whole group, so with residuals the ratio applies to all
the coupled layers' channels at once. The number of channels kept depends only on the shape
and the ratio; which channels are kept depends on the weights (group L1 magnitude), which does
not change any shape, so replays on a fresh model reproduce the structure.
"""

from __future__ import annotations

import weakref

import torch
import torch_pruning as tp
from torch import nn

from kondense.device import in_mode
from kondense.errors import KondenseError
from kondense.transforms._common import LAYER_TYPES


class _Probed(nn.Module):
    """The model behind an identity layer, so the dependency graph has a node for the input's
    channels: torch-pruning does not trace plain inputs, and a group reaching them (say
    `x + conv(x)` on the input) cannot be pruned without changing what the model accepts."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.probe: nn.Module | None = None  # inputs that are not float images/features (token ids...) go unprobed
        if x.dim() == 4 and x.is_floating_point():
            self.probe = nn.Conv2d(x.shape[1], x.shape[1], 1, bias=False, device=x.device, dtype=x.dtype)
        elif x.dim() == 2 and x.is_floating_point():
            self.probe = nn.Linear(x.shape[1], x.shape[1], bias=False, device=x.device, dtype=x.dtype)
        if self.probe is not None:
            with torch.no_grad():
                self.probe.weight.copy_(torch.eye(x.shape[1]).reshape(self.probe.weight.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.probe(x) if self.probe is not None else x)


def _out_fn(layer: nn.Module):
    return tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels


def _out_size(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


class Graph:
    """A dependency graph of the model (traced in eval mode, so BatchNorm statistics stay as they were)."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        probed = _Probed(model, x)
        with in_mode(model, training=False), torch.enable_grad():
            # a tuple: torch-pruning first tries model(*example_inputs), which would unpack a bare tensor's batch
            self.dg = tp.DependencyGraph().build_dependency(probed, example_inputs=(x,), verbose=False)
        self.probe = probed.probe

    def group(self, layer: nn.Module, idxs: list[int]):
        return self.dg.get_pruning_group(layer, _out_fn(layer), idxs)

    def blocker(self, layer: nn.Module, protected: dict[int, str] | None = None) -> str | None:
        """Why the layer's output channels cannot be pruned, or None if they can; `protected` maps
        id(module) to the name of each layer whose outputs must keep their size."""
        if isinstance(layer, nn.Conv2d) and layer.groups > 1:
            if _is_depthwise(layer):
                return "it is a depthwise conv: its channels follow its input; prune the layer that feeds it"
            return "it is a grouped conv, whose channels can only be pruned in whole groups"
        if layer not in self.dg.module2node:
            return "it does not run in the model's forward pass on the example input"
        if _out_size(layer) < 2:
            return "it has a single output channel"
        protected = protected or {}
        dg = self.dg
        for dep, _ in self.group(layer, list(range(_out_size(layer)))):
            node, module, handler = dep.target, dep.target.module, dep.handler
            if self.probe is not None and module is self.probe:
                return "its channels are tied to the model input (e.g. a residual addition with the input)"
            if id(module) in protected and dg.is_out_channel_pruning_fn(handler):
                return f"its channels are tied to the outputs of the protected layer '{protected[id(module)]}'"
            if not node.outputs:  # this node's result is a model output
                consumes_only = (
                    dg.is_in_channel_pruning_fn(handler)
                    and isinstance(module, LAYER_TYPES)
                    and not _is_depthwise(module)
                )
                if not consumes_only:
                    return "its channels are tied to the model output"
            if isinstance(module, nn.Conv2d) and module.groups > 1 and not _is_depthwise(module):
                return "its channels are tied to a grouped conv, which can only be pruned in whole groups"
        return None

    def prune(self, layer: nn.Module, ratio: float) -> None:
        """Keep max(1, round(ratio * C)) channels, the largest by group L1 norm; ties go to the lower index."""
        n = _out_size(layer)
        keep = max(1, round(ratio * n))
        if keep >= n:
            return
        scorer = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None)
        scores = scorer(self.group(layer, list(range(n))))
        scores = torch.nan_to_num(torch.as_tensor(scores).detach().double().cpu(), nan=-float("inf"))
        order = torch.argsort(scores, descending=True, stable=True)
        drop = sorted(order[keep:].tolist())
        self.group(layer, drop).prune()


# candidates() is asked about one layer at a time, but a trace answers for all of them; cache
# the answers (names and reasons only, so the cache never keeps a model alive) until the structure changes
_ANSWERS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, str | None]]] = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    return tuple(
        (name, id(m), type(m), tuple(tuple(p.shape) for p in m.parameters(recurse=False)))
        for name, m in model.named_modules()
    )


def blockers(model: nn.Module, protected: set[str], x: torch.Tensor) -> dict[str, str | None]:
    """{layer name: why it cannot be pruned, or None} for every Conv2d/Linear."""
    key = (_structure(model), frozenset(protected), tuple(x.shape), x.dtype, str(x.device))
    cached = _ANSWERS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    modules = dict(model.named_modules())
    unknown = sorted(n for n in protected if n not in modules)
    if unknown:
        raise KondenseError(f"protected layers {unknown} are not in the model")
    # a protected layer that was factorised since is a Sequential: protect the layers inside it
    shielded = {
        id(m): n
        for n, m in modules.items()
        if isinstance(m, LAYER_TYPES) and any(n == p or n.startswith(p + ".") for p in protected)
    }
    try:
        graph = Graph(model, x)
    except Exception as e:  # noqa: BLE001 - a trace failure is the user's model/input, say so
        raise KondenseError(f"could not trace the model to find channel dependencies: {e}") from e
    answers = {
        name: ("it is protected" if id(m) in shielded else graph.blocker(m, shielded))
        for name, m in modules.items()
        if isinstance(m, LAYER_TYPES)
    }
    _ANSWERS[model] = (key, answers)
    return answers


def prune(model: nn.Module, name: str, layer: nn.Module, ratio: float, x: torch.Tensor) -> None:
    try:
        graph = Graph(model, x)
    except Exception as e:  # noqa: BLE001
        raise KondenseError(f"could not trace the model to find channel dependencies: {e}") from e
    reason = graph.blocker(layer)
    if reason is not None:
        raise KondenseError(f"'prune' does not apply to '{name}': {reason}")
    graph.prune(layer, ratio)
