"""Annealing's quick sensitivity: how much each candidate would hurt, from one pass of gradients.

Stage 1's scan measures every candidate: it compresses a copy, re-estimates BatchNorm and
evaluates it, about a thousand forward passes each. Annealing rescans after every kept step, and
measured that way its scans cost more than the fine-tuning they steer. So a step estimates: with
the loss gradient g and its second moment F (the diagonal empirical Fisher, standing in for the
Hessian) at the current weights, a weight change dW costs about |g . dW| + 1/2 sum(F * dW^2).
Removing channels zeroes the weights that read them (removing attention heads, the output
projection's columns that read those heads); factorising replaces a weight by its
low-rank approximation. Only the composed probes that decide how far a step goes are measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from kondense import transforms
from kondense.device import batch_to, in_mode
from kondense.transforms import attention, lowrank

CHUNK = 16  # samples per gradient: small batches, so their squared gradients estimate the Fisher


@dataclass
class Moments:
    """Per Conv2d/Linear weight (by module name): the mean gradient and the mean squared gradient."""

    grad: dict[str, torch.Tensor]
    fisher: dict[str, torch.Tensor]

    def harm(self, name: str, change: torch.Tensor) -> float:
        """Predicted loss increase when the weight of layer `name` changes by `change`."""
        g, f = self.grad[name], self.fisher[name]
        return float((g * change).sum().abs() + 0.5 * (f * change.square()).sum())


def moments(model: nn.Module, loader: DataLoader, samples: int) -> Moments:
    """Gradient moments of the cross-entropy over `samples` training samples, the model in eval mode
    (BatchNorm as deployed), its weights untouched."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    grad = {n: torch.zeros_like(m.weight) for n, m in layers.items()}
    fisher = {n: torch.zeros_like(m.weight) for n, m in layers.items()}
    device = next(model.parameters()).device
    chunks = 0
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        with in_mode(model, training=False), torch.enable_grad():
            seen = 0
            for x, y in loader:
                for xc, yc in zip(torch.split(x, CHUNK), torch.split(y, CHUNK), strict=True):
                    model.zero_grad(set_to_none=True)
                    F.cross_entropy(model(batch_to(xc, device)).float(), yc.to(device)).backward()
                    for n, m in layers.items():
                        if m.weight.grad is not None:
                            grad[n] += m.weight.grad
                            fisher[n] += m.weight.grad.square()
                    chunks += 1
                seen += len(y)
                if seen >= samples:
                    break
    finally:
        for p, g in saved:  # whoever owns the model finds its gradients as they were
            p.grad = g
    chunks = max(chunks, 1)
    return Moments({n: g / chunks for n, g in grad.items()}, {n: f / chunks for n, f in fisher.items()})


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def prune_harm(model: nn.Module, est: Moments, recipe: transforms.Recipe) -> float:
    """Removing the channels a pruning `recipe` of `model` removes: zeroing every weight that reads them."""
    total = 0.0
    for cut in recipe.cuts:
        module = model.get_submodule(cut.name) if not cut.parameter else None
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or cut.name not in est.grad:
            continue
        w, idxs = module.weight.detach(), torch.tensor(cut.idxs, dtype=torch.long, device=module.weight.device)
        change = torch.zeros_like(w)
        if _depthwise(module):  # a depthwise conv reads channel c with its filter c
            change[idxs] = -w[idxs]
        elif cut.handler.__name__ == "prune_in_channels":
            change[:, idxs] = -w[:, idxs]
        else:
            continue  # the producers' outputs: once nothing reads them, they no longer matter
        total += est.harm(cut.name, change)
    return total


def lowrank_harm(model: nn.Module, est: Moments, layer: str, ratio: float) -> float:
    module = model.get_submodule(layer)
    return est.harm(layer, lowrank.approximation(module, ratio) - module.weight.detach())


def heads_harm(model: nn.Module, est: Moments, layer: str, ratio: float) -> float:
    """Removing the heads that pruning the attention whose output projection is `layer` removes: zeroing
    the projection's columns that read them."""
    owner, out = attention.owner(model, layer), model.get_submodule(layer)
    kept = set(attention.kept_heads(owner, ratio))
    d = owner.head_dim
    dropped = [h * d + i for h in range(owner.num_heads) if h not in kept for i in range(d)]
    w = out.weight.detach()
    change = torch.zeros_like(w)
    change[:, dropped] = -w[:, dropped]
    return est.harm(layer, change)
