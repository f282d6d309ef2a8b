"""A compression plan: the ordered transformation steps, and what they did to every layer.

Steps depend only on shapes, so replaying them on the freshly built original
architecture reproduces the compressed structure; that is how a compressed model is
rebuilt from a weights-only file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kondense import transforms
from kondense.device import in_mode


@dataclass(frozen=True)
class Step:
    layer: str
    transform: str
    ratio: float

    def to_list(self) -> list:
        return [self.layer, self.transform, self.ratio]


def replay(model: nn.Module, steps: list[Step], example: torch.Tensor) -> nn.Module:
    """Apply `steps` in order to `model` (in place) and return it. Consecutive prunings share one
    trace of the model; a factorisation changes the structure, so a pruning after it traces again."""
    for step in steps:
        transforms.apply(model, step.layer, step.transform, step.ratio, example)
    return model


def applied(
    model: nn.Module, steps: list[Step], example: torch.Tensor, judged: bool = False, later: list[Step] | None = None
) -> nn.Module:
    """A transformed copy; `model` is left as it was.

    The leading prunings of distinct channel groups (what one plan holds: prunings first, one per
    group) are planned on `model`'s own dependency graph, traced once per model state and shared by
    every trial the conductor composes, and carried out on the copy; the rest replays in order.

    `judged`: the copy will only be recalibrated and evaluated (the conductor's trials and probes), so where
    the steps allow it, it shares with `model` every module they leave alone and copies only those they change
    and those holding buffers (transforms.copied with `only` and `buffers`): where forward passes are cheap (a
    GPU), copying every weight is much of a trial's work. They allow it when everything after the prunings is a
    factorisation, which replaces its layer in the parent; `later`: the steps the caller will apply to the copy.
    """
    recipes, touched, head = [], set(), 0
    for step in steps:
        if step.transform != "prune":
            break
        recipe = transforms.prune_recipe(model, step.layer, step.ratio, example)
        if recipe.touches() & touched:  # the same group twice: the second depends on the first's result
            break
        recipes.append(recipe)
        touched |= recipe.touches()
        head += 1
    after = steps[head:] + (later or [])
    if judged and all(s.transform == "lowrank" for s in after):
        changed = {name for recipe in recipes for name in recipe.modules(model)} | {s.layer for s in after}
        trial = transforms.copied(model, only=changed, buffers=True)
    else:
        trial = transforms.copied(model)
    for recipe in recipes:
        recipe.apply(trial)
    return replay(trial, steps[head:], example)


def layer_costs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int]]:
    """(params, MACs) of every Conv2d and Linear for one sample, by qualified name.

    MACs need each layer's output size, which only a forward pass tells (strides, padding and
    pooling upstream); a layer that runs twice costs twice, one that does not run costs 0 MACs.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    macs = dict.fromkeys(layers, 0)

    def hook(name: str):
        def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            # weight[0]: C_in/groups * k_h * k_w per conv output element, in_features per linear one;
            # output[0]: the outputs of sample 0 (C_out * H_out * W_out, or out_features)
            macs[name] += module.weight[0].numel() * output[0].numel()

        return record

    hooks = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        with in_mode(model, training=False), torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return {name: (sum(p.numel() for p in m.parameters(recurse=False)), macs[name]) for name, m in layers.items()}


def cost_under(costs: dict[str, tuple[int, int]], name: str) -> tuple[int, int]:
    """The (params, MACs) of layer `name`, or the sum of the layers that replaced it (a factorised
    layer 'x' became 'x.0', 'x.1', ...)."""
    parts = [c for n, c in costs.items() if n == name or n.startswith(name + ".")]
    return sum(p for p, _ in parts), sum(m for _, m in parts)


@dataclass
class Plan:
    """Steps plus a per-layer account: which transforms at which ratios, params and MACs before and after."""

    objective: str
    steps: list[Step] = field(default_factory=list)
    layers: dict[str, dict] = field(default_factory=dict)

    def account(
        self, original: nn.Module, compressed: nn.Module, example: torch.Tensor, protected: set[str] | None = None
    ) -> None:
        """Fill `layers`, keyed by the original model's layer names (a factorised layer 'x'
        became 'x.0', 'x.1', ...: its cost is theirs together). A layer no transform could change has
        "skipped" with the reasons; `protected` as in transforms.candidates, by default the last layer."""
        before, after = layer_costs(original, example), layer_costs(compressed, example)
        if protected is None:
            protected = set(list(before)[-1:])  # the classifier, as kondense.api picks it
        reasons = transforms.skipped(original, protected, example_input=example)
        self.layers = {}
        for name, (params, macs) in before.items():
            params_after, macs_after = cost_under(after, name)
            self.layers[name] = {
                "transforms": [
                    {"layer": s.layer, "transform": s.transform, "ratio": s.ratio}
                    for s in self.steps
                    if s.layer == name or s.layer.startswith(name + ".")
                ],
                "paramsBefore": params,
                "paramsAfter": params_after,
                "macsBefore": macs,
                "macsAfter": macs_after,
            }
            if name in reasons:
                self.layers[name]["skipped"] = reasons[name]

    def to_dict(self) -> dict:
        return {"objective": self.objective, "steps": steps_to_json(self.steps), "layers": self.layers}


def steps_to_json(steps: list[Step]) -> list[list]:
    return [s.to_list() for s in steps]


def steps_from_json(items: list[list]) -> list[Step]:
    return [Step(str(a), str(b), float(c)) for a, b, c in items]
