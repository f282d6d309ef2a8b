"""Structured output-channel pruning through torch-pruning's dependency graph.

torch-pruning traces the model and finds every tensor dimension coupled to a layer's output
channels (BatchNorm, the next layers' inputs, residual additions, concatenations, depthwise
convs). Pruning a layer prunes that whole group, so with residuals the ratio applies to all
the coupled layers' channels at once. The number of channels kept depends only on the shape
and the ratio; which channels are kept depends on the weights (group L1 magnitude), which does
not change any shape, so replays on a fresh model reproduce the structure.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency import index_mapping
from torchvision.models import VisionTransformer

from kondense.device import in_mode
from kondense.errors import KondenseError
from kondense.transforms._common import LAYER_TYPES, copied


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


class _Shapes(TorchFunctionMode):
    """Records the shape of every tensor the traced forward pass makes, by the autograd node that made it:
    the graph's nodes know a reshape's input shape (saved for backward) but not its output shape."""

    def __init__(self) -> None:
        super().__init__()
        self.by_grad_fn: dict = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            self.by_grad_fn[out.grad_fn] = tuple(out.shape)
            if getattr(func, "__name__", "") == "linear" and out.dim() > 2:
                self._inside_linear(out.grad_fn, args)
        return out

    def _inside_linear(self, grad_fn, args) -> None:
        """A Linear on (..., C) input views it as (N, C) and back inside one aten call, out of this mode's sight:
        those views keep the last dim, the channels, so they are recorded as keeping it."""
        stop = {a.grad_fn for a in args if isinstance(a, torch.Tensor) and a.grad_fn is not None}
        todo = [grad_fn]
        while todo:
            fn = todo.pop()
            if fn is None or fn in stop or (fn in self.by_grad_fn and fn is not grad_fn):
                continue
            if "view" in fn.name().lower() or "reshape" in fn.name().lower():
                self.by_grad_fn.setdefault(fn, "linear")
            todo.extend(f for f, _ in fn.next_functions)


def _reshape_kind(node, shapes: dict) -> str:
    """'flatten' (N, C, H, W) -> (N, C*H*W), 'same' (batch and dim 1 kept, as ViT's (N, C, H*W); or a Linear's
    own view of channels-last input, as in ConvNeXt and Swin, which keeps the last dim), or
    'opaque': a reshape that moves channels (channel shuffle's (N, g, C/g, H, W), attention heads, windows)."""
    before = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    after = shapes.get(node.grad_fn)
    if after == "linear":
        return "same"
    if before is None or after is None:
        return "opaque"
    before = tuple(int(d) for d in before)
    if len(before) >= 2 and len(after) >= 2 and before[:2] == after[:2]:
        return "same"
    if len(before) >= 3 and len(after) == 2 and before[0] == after[0] and after[1] == math.prod(before[1:]):
        return "flatten"
    return "opaque"


_TP_RESHAPE_MAPPING = index_mapping.update_reshape_index_mapping


def _judged_reshape_mapping(graph, node) -> None:
    """torch-pruning maps every reshape as if it flattened features into a Linear (with this torch its size
    checks find no saved sizes), which mis-maps or crashes (division by zero) on channel shuffles and other
    reshapes that move channels. In kondense's graphs only flattens get its mapping, 'same' reshapes keep
    channel indices, and the rest are recorded so that a group through them is refused (Graph.blocker).
    Graphs kondense did not build keep torch-pruning's own mapping."""
    judge = getattr(graph, "_kondense_reshapes", None)
    if judge is None:
        _TP_RESHAPE_MAPPING(graph, node)
        return
    shapes, opaque = judge
    kind = _reshape_kind(node, shapes)
    if kind == "flatten":
        _TP_RESHAPE_MAPPING(graph, node)
    elif kind == "opaque":
        opaque.add(node)


# update_index_mapping looks the function up in its module on every call (graph building and every group)
index_mapping.update_reshape_index_mapping = _judged_reshape_mapping


_SINGLE = "it has a single output channel"


class Graph:
    """A dependency graph of the model (traced in eval mode, so BatchNorm statistics stay as they were)."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        probed = _Probed(model, x)
        shapes = _Shapes()
        self.opaque: set = set()  # reshape nodes whose channel mapping the graph cannot follow
        with in_mode(model, training=False), torch.enable_grad():
            self.dg = tp.DependencyGraph()
            self.dg._kondense_reshapes = (shapes.by_grad_fn, self.opaque)
            with shapes:
                # a tuple: torch-pruning first tries model(*example_inputs), which would unpack a bare tensor's batch
                self.dg.build_dependency(probed, example_inputs=(x,), verbose=False)
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
            return _SINGLE
        protected = protected or {}
        dg = self.dg
        try:
            group = self.group(layer, list(range(_out_size(layer))))
        except (IndexError, KeyError, ValueError, ZeroDivisionError) as e:
            # torch-pruning's index mappings through splits/concats that follow a reshape can fail to line up
            return f"torch-pruning cannot follow its channels through the model's graph ({type(e).__name__}: {e})"
        for dep, _ in group:
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
            if node in self.opaque:
                return (
                    "its channels pass through a reshape that moves them (channel shuffle, attention heads or "
                    "windows), which the dependency graph cannot follow"
                )
        return None

    def dropped(self, layer: nn.Module, ratio: float) -> list[int]:
        """The output channels pruning to `ratio` removes: all but the max(1, round(ratio * C)) largest by
        group L1 norm (ties go to the lower index). Which ones depends on the weights, how many only on the shape."""
        n = _out_size(layer)
        keep = max(1, round(ratio * n))
        if keep >= n:
            return []
        scorer = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None)
        scores = scorer(self.group(layer, list(range(n))))
        scores = torch.nan_to_num(torch.as_tensor(scores).detach().double().cpu(), nan=-float("inf"))
        order = torch.argsort(scores, descending=True, stable=True)
        return sorted(order[keep:].tolist())

    def prune(self, layer: nn.Module, ratio: float) -> None:
        """Prune in place; the graph stays valid for further prunings of the same model (torch-pruning's
        own pruners prune step after step through one graph)."""
        drop = self.dropped(layer, ratio)
        if drop:
            self.group(layer, drop).prune(record_history=False)
            synced(self.dg.model)


def synced(model: nn.Module) -> None:
    """Width attributes a model's own forward reads, brought in line with its pruned layers: torchvision's
    ViT reshapes its patches to `hidden_dim` channels, a number the dependency graph cannot see."""
    for m in model.modules():
        if isinstance(m, VisionTransformer):  # conv_proj may have been factorised into a Sequential of convs
            m.hidden_dim = [c for c in m.conv_proj.modules() if isinstance(c, nn.Conv2d)][-1].out_channels


@dataclass(frozen=True)
class Cut:
    """One tensor dimension a pruning shrinks: the module (or bare parameter) by qualified name,
    torch-pruning's handler for it, the dimension, and the indices removed."""

    name: str
    handler: Callable
    dim: int
    idxs: tuple[int, ...]
    parameter: bool = False


@dataclass(frozen=True)
class Recipe:
    """A pruning of one model state, planned on that state's graph and replayable onto any copy of it.

    A copy (`copy.deepcopy`) has the same module names, shapes and weights, so the same cuts give
    exactly what pruning the copy through a graph of its own would: without tracing it again.
    """

    cuts: tuple[Cut, ...]

    def touches(self) -> set[tuple[str, str]]:
        """(name, in or out channels): what another recipe of the same state must leave alone."""
        return {(c.name, c.handler.__name__) for c in self.cuts}

    def modules(self, model: nn.Module) -> set[str]:
        """The modules apply() changes: those cut, the owners of the bare parameters cut, and the models
        whose widths synced() brings in line."""
        cut = {c.name.rpartition(".")[0] if c.parameter else c.name for c in self.cuts}
        return cut | {n for n, m in model.named_modules() if isinstance(m, VisionTransformer)}

    def apply(self, model: nn.Module) -> None:
        for cut in self.cuts:
            cut.handler.__self__.pruning_dim = cut.dim  # torch-pruning's handlers read their dim from their pruner
            if cut.parameter:
                parent_name, _, attr = cut.name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, attr, cut.handler(getattr(parent, attr), list(cut.idxs)))
            else:
                cut.handler(model.get_submodule(cut.name), list(cut.idxs))
        synced(model)


class Pruner:
    """Everything pruning needs to know about one model state, from one trace of it: which layers can
    be pruned (and why not), and recipes for pruning any of them. Built once per model state (the
    sensitivity scan asks it about every layer at every ratio) and dropped when the structure changes."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        try:
            self.graph = Graph(model, x)
        except Exception as e:  # noqa: BLE001 - a trace failure is the user's model/input, say so
            raise KondenseError(f"could not trace the model to find channel dependencies: {e}") from e
        self.model = model
        self.names = {id(m): n for n, m in reversed(list(model.named_modules()))}  # first name wins when shared
        self.example = x
        self._blockers: dict[frozenset[str], dict[str, str | None]] = {}
        self._breaks: dict[frozenset, str | None] = {}

    def blockers(self, protected: set[str]) -> dict[str, str | None]:
        key = frozenset(protected)
        if key not in self._blockers:
            modules = dict(self.model.named_modules())
            unknown = sorted(n for n in protected if n not in modules)
            if unknown:
                raise KondenseError(f"protected layers {unknown} are not in the model")
            # a protected layer that was factorised since is a Sequential: protect the layers inside it
            shielded = {
                id(m): n
                for n, m in modules.items()
                if isinstance(m, LAYER_TYPES) and any(n == p or n.startswith(p + ".") for p in protected)
            }
            self._blockers[key] = {
                name: (
                    "it is protected"
                    if id(m) in shielded
                    else self.graph.blocker(m, shielded) or self._breaks_forward(name)
                )
                for name, m in modules.items()
                if isinstance(m, LAYER_TYPES)
            }
        # the graph's couplings survive pruning through it; the channel count does not (blockers() is asked
        # again between the prunings of one model state, and a group pruned to one channel is done)
        return {
            name: reason or (_SINGLE if _out_size(self.model.get_submodule(name)) < 2 else None)
            for name, reason in self._blockers[key].items()
        }

    def _breaks_forward(self, name: str) -> str | None:
        """Why a copy pruned at layer `name` no longer runs, or None: a model's own code may hold a channel
        count the graph cannot see (a reshape to a stored width), and a candidate that breaks the forward
        pass would end the whole run when the scan tries it."""
        layer = self.model.get_submodule(name)
        # which channels go does not change whether the model runs: the upper half, without ranking them
        recipe = self._cuts(layer, list(range(_out_size(layer) // 2, _out_size(layer))))
        group = frozenset(recipe.touches())  # one check per channel group (a ViT's width couples ~50 layers)
        if group not in self._breaks:
            trial = copied(self.model, only=recipe.modules(self.model))
            try:
                recipe.apply(trial)
                with in_mode(trial, training=False), torch.no_grad():
                    trial(self.example)
                self._breaks[group] = None
            except Exception as e:  # noqa: BLE001 - whatever the user's forward raises, it is the reason
                self._breaks[group] = f"the model's forward pass fails once it is pruned ({type(e).__name__}: {e})"
        return self._breaks[group]

    def _checked(self, name: str, layer: nn.Module) -> None:
        reason = self.graph.blocker(layer) or self._breaks_forward(name)
        if reason is not None:
            raise KondenseError(f"'prune' does not apply to '{name}': {reason}")

    def recipe(self, name: str, ratio: float) -> Recipe:
        """The cuts pruning layer `name` to `ratio` makes, planned without changing the model."""
        layer = self.model.get_submodule(name)
        self._checked(name, layer)
        return self._cuts(layer, self.graph.dropped(layer, ratio))

    def _cuts(self, layer: nn.Module, drop: list[int]) -> Recipe:
        """The recipe removing output channels `drop` of `layer`, and with them what reads them."""
        if not drop:
            return Recipe(())
        params = self.graph.dg._param_to_name  # bare nn.Parameters the graph prunes (named within the probed model)
        cuts = []
        for dep, idxs in self.graph.group(layer, drop):
            target = dep.target.module
            if dep.target.type == tp.ops.OPTYPE.PARAMETER:
                cuts.append(
                    Cut(params[target].removeprefix("model."), dep.handler, dep.target.pruning_dim, _plain(idxs), True)
                )
            elif id(target) in self.names:  # not one of torch-pruning's bookkeeping nodes (concat offsets...)
                cuts.append(Cut(self.names[id(target)], dep.handler, dep.target.pruning_dim, _plain(idxs)))
        return Recipe(tuple(cuts))

    def prune(self, name: str, ratio: float) -> None:
        """Prune the model itself; this pruner stays valid for the pruned state."""
        layer = self.model.get_submodule(name)
        self._checked(name, layer)
        self.graph.prune(layer, ratio)


def _plain(idxs) -> tuple[int, ...]:
    return tuple(int(i) for i in tp._helpers.to_plain_idxs(idxs))


def _structure(model: nn.Module) -> tuple:
    return tuple(
        (name, id(m), type(m), tuple(tuple(p.shape) for p in m.parameters(recurse=False)))
        for name, m in model.named_modules()
    )


# The pruners of the few model states the engine is working on (the scanned model, the copies being
# composed). A pruner holds its model, so the cache is small and bounded rather than weak.
_PRUNERS: OrderedDict[int, tuple[tuple, Pruner]] = OrderedDict()
_CACHED = 4


def pruner(model: nn.Module, x: torch.Tensor) -> Pruner:
    """The pruner of `model` as it is now: built on first use, reused until its structure changes."""
    key = (_structure(model), tuple(x.shape), x.dtype, str(x.device))
    hit = _PRUNERS.get(id(model))
    if hit is not None and hit[1].model is model and hit[0] == key:
        _PRUNERS.move_to_end(id(model))
        return hit[1]
    made = Pruner(model, x)
    _PRUNERS[id(model)] = (key, made)
    _PRUNERS.move_to_end(id(model))
    while len(_PRUNERS) > _CACHED:
        _PRUNERS.popitem(last=False)
    return made


def blockers(model: nn.Module, protected: set[str], x: torch.Tensor) -> dict[str, str | None]:
    """{layer name: why it cannot be pruned, or None} for every Conv2d/Linear."""
    return pruner(model, x).blockers(protected)


def prune(model: nn.Module, name: str, ratio: float, x: torch.Tensor) -> None:
    """Prune layer `name` of `model` in place, through the model's cached pruner, which stays valid."""
    p = pruner(model, x)
    p.prune(name, ratio)
    _PRUNERS[id(model)] = ((_structure(model), tuple(x.shape), x.dtype, str(x.device)), p)
