"""Low-rank factorisation of Linear and Conv2d layers, initialised from the original weights.

Ranks depend only on the layer's shape and the ratio, never on weight values, so replaying
the same steps on a fresh model gives the same structure. The new layers start as the best
approximation the ranks allow (truncated SVD / HOSVD), so accuracy starts close to the original
and fine-tuning only has to recover the truncated part.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn


def _params(layer: nn.Conv2d | nn.Linear) -> int:
    return layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)


def _is_pointwise(layer: nn.Conv2d | nn.Linear) -> bool:
    return isinstance(layer, nn.Linear) or tuple(layer.kernel_size) == (1, 1)


def _dims(layer: nn.Conv2d | nn.Linear) -> tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


def matrix_rank(layer: nn.Conv2d | nn.Linear, ratio: float) -> int:
    """Largest k whose two factors, bias included, fit in ratio x the layer's params (at least 1).

    The bias counts on both sides so that "at most ratio x params" holds for the whole layer."""
    c_in, c_out = _dims(layer)
    bias = layer.bias.numel() if layer.bias is not None else 0
    k = math.floor((ratio * _params(layer) - bias) / (c_in + c_out) + 1e-9)
    return max(1, min(k, c_in, c_out))


def tucker_ranks(layer: nn.Conv2d, ratio: float) -> tuple[int, int]:
    """(r1, r2) for in -> r1 (1x1) -> r2 (kxk) -> out (1x1), with r1/in ~= r2/out, as large as fits.

    Stepping along the wider side and rounding the other keeps both ranks non-decreasing in
    the ratio, so a larger ratio never loses a subspace a smaller one kept."""
    c_in, c_out = layer.in_channels, layer.out_channels
    kh, kw = layer.kernel_size
    bias = layer.bias.numel() if layer.bias is not None else 0
    cap1, cap2 = min(c_in, c_out * kh * kw), min(c_out, c_in * kh * kw)
    budget = ratio * _params(layer)

    def pair(step: int) -> tuple[int, int]:
        if c_in >= c_out:
            r1, r2 = step, round(step * c_out / c_in)
        else:
            r1, r2 = round(step * c_in / c_out), step
        return max(1, min(r1, cap1)), max(1, min(r2, cap2))

    for step in range(max(c_in, c_out), 0, -1):
        r1, r2 = pair(step)
        if c_in * r1 + r1 * r2 * kh * kw + r2 * c_out + bias <= budget:
            return r1, r2
    return 1, 1


def blocker(layer: nn.Conv2d | nn.Linear, called: bool = True) -> str | None:
    """Why the layer cannot be factorised, or None if it can. `called`: whether the model's forward pass calls
    the layer as a module; one whose weight its parent reads instead would break if replaced by a Sequential."""
    if not called:
        return (
            "its weight is read directly by the module around it (as attention does with its projections), not "
            "through calling the layer, so a factorised replacement would not be used; or it does not run at all"
        )
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return "it is a grouped/depthwise conv (groups > 1), which has no channel mixing to factorise"
    if _is_pointwise(layer):
        c_in, c_out = _dims(layer)
        smallest = c_in + c_out
    else:
        kh, kw = layer.kernel_size
        smallest = layer.in_channels + kh * kw + layer.out_channels
    if smallest >= layer.weight.numel():
        return "even rank 1 would not have fewer parameters than the layer"
    return None


def _svd_dtype(weight: torch.Tensor) -> torch.dtype:
    # double wherever it is supported: the Gram matrix squares the spread of the singular values, and double
    # keeps the top vectors exact (and exactly-low-rank layers reproduced exactly); Apple's MPS has no double
    return torch.float32 if weight.device.type == "mps" else torch.float64


def _copy_into(param: torch.nn.Parameter, value: torch.Tensor, like: torch.nn.Parameter) -> None:
    with torch.no_grad():
        param.copy_(value.to(param.dtype))
    param.requires_grad_(like.requires_grad)


# Within kept_decompositions(): the decompositions of the weights factorised last, with a copy of each
# weight to know them by. The scan factorises one layer at every ratio, and an annealing step estimates
# a factorisation and then builds it, each time on another copy of the same weight; the SVDs do not
# depend on the ratio, and on a large layer they are most of a trial's time. Two entries hold what is
# reused (the scan's ratios of one layer come one after another) and bound the memory a large
# classifier's SVD holds; leaving the block lets them go.
_DECOMPOSED: list[tuple[torch.Tensor, bool, tuple[torch.Tensor, ...]]] | None = None
_KEPT = 2


@contextlib.contextmanager
def kept_decompositions() -> Iterator[None]:
    """Factorisations in this block reuse the SVDs of the last weights factorised (matched by value)."""
    global _DECOMPOSED
    if _DECOMPOSED is not None:  # already inside one: the outer block keeps them
        yield
        return
    _DECOMPOSED = []
    try:
        yield
    finally:
        _DECOMPOSED = None


def _decomposed(w: torch.Tensor, pointwise: bool) -> tuple[torch.Tensor, ...]:
    """(u, s, vh) of the weight as an out x in matrix for a pointwise layer; for a kxk conv the left
    singular vectors of its output and its input unfoldings (Tucker-2's factor matrices, all columns)."""
    for i, (seen, kind, result) in enumerate(_DECOMPOSED or ()):
        if kind == pointwise and seen.shape == w.shape and seen.dtype == w.dtype and seen.device == w.device:
            if torch.equal(seen, w):
                _DECOMPOSED.append(_DECOMPOSED.pop(i))
                return result
    work = w.to(_svd_dtype(w))
    c_out, c_in = w.shape[:2]
    if pointwise:
        result = _svd(work.reshape(c_out, c_in))
    else:
        result = (_left_vectors(work.reshape(c_out, -1))[0], _left_vectors(work.transpose(0, 1).reshape(c_in, -1))[0])
    if _DECOMPOSED is not None:
        _DECOMPOSED.append((w.clone(), pointwise, result))
        del _DECOMPOSED[: max(len(_DECOMPOSED) - _KEPT, 0)]
    return result


def _left_vectors(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, s) of the thin SVD of `a` (m x n, m <= n or not), every one of its m columns, from the eigenvectors
    of the m x m Gram matrix: a 3x3 conv's unfolding is short and wide (512 x 4608 in ResNet-18), where this
    is ten times faster than the SVD, and the top vectors a factorisation keeps are as accurate in float64.
    Columns beyond a's rank span the rest of the space, which truncation never reaches."""
    values, vectors = torch.linalg.eigh(a @ a.T)
    return vectors.flip(1), values.flip(0).clamp(min=0).sqrt()


def _svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, s, vh) of the thin SVD of `a`, through the Gram matrix of its shorter side (see _left_vectors).
    Directions of zero singular value get zero rows or columns on the other side: they carry nothing."""
    if a.shape[0] > a.shape[1]:
        v, s, uh = _svd(a.T)
        return uh.T, s, v.T
    u, s = _left_vectors(a)
    scale = torch.where(s > s[0] * 1e-12, 1 / s, torch.zeros_like(s))
    return u, s, (u.T @ a) * scale[:, None]


def _factors(layer: nn.Conv2d | nn.Linear, ratio: float) -> list[torch.Tensor]:
    """The factors' weights, in the layer's dtype: (first, second) for SVD, (first, core, last) for Tucker-2."""
    w = layer.weight.detach()
    if _is_pointwise(layer):
        k = matrix_rank(layer, ratio)
        u, s, vh = _decomposed(w, pointwise=True)
        root = s[:k].sqrt()
        first_w, second_w = root[:, None] * vh[:k], u[:, :k] * root  # (k, in), (out, k): balanced factors
        if isinstance(layer, nn.Conv2d):
            first_w, second_w = first_w[:, :, None, None], second_w[:, :, None, None]
        return [first_w.to(w.dtype), second_w.to(w.dtype)]
    r1, r2 = tucker_ranks(layer, ratio)
    u_out, u_in = _decomposed(w, pointwise=False)
    u_out, u_in = u_out[:, :r2], u_in[:, :r1]
    core = torch.einsum("oihw,or,is->rshw", w.to(u_out.dtype), u_out, u_in)
    return [t.to(w.dtype) for t in (u_in.t()[:, :, None, None], core, u_out[:, :, None, None])]


def approximation(layer: nn.Conv2d | nn.Linear, ratio: float) -> torch.Tensor:
    """The weight the factorised layer computes with, in the layer's weight shape: what factorising
    changes, without building the replacement (the annealing's estimates need only this)."""
    factors = _factors(layer, ratio)
    if len(factors) == 2:
        first, second = (f.flatten(1) for f in factors)
        return (second @ first).reshape(layer.weight.shape)
    first, core, last = factors
    return torch.einsum("rshw,or,si->oihw", core, last.flatten(1), first.flatten(1))


def factorise(layer: nn.Conv2d | nn.Linear, ratio: float) -> nn.Sequential:
    """The replacement for `layer`; the caller has checked blocker(layer) is None."""
    w = layer.weight.detach()
    kw_ = {"device": w.device, "dtype": w.dtype}
    has_bias = layer.bias is not None
    factors = _factors(layer, ratio)
    if _is_pointwise(layer):
        c_in, c_out = _dims(layer)
        k = factors[0].shape[0]
        if isinstance(layer, nn.Linear):
            first = nn.Linear(c_in, k, bias=False, **kw_)
            second = nn.Linear(k, c_out, bias=has_bias, **kw_)
        else:
            first = nn.Conv2d(
                c_in,
                k,
                1,
                layer.stride,
                layer.padding,
                layer.dilation,
                bias=False,
                padding_mode=layer.padding_mode,
                **kw_,
            )
            second = nn.Conv2d(k, c_out, 1, bias=has_bias, **kw_)
        seq = nn.Sequential(first, second)
    else:
        r1, r2 = factors[0].shape[0], factors[1].shape[0]
        c_out, c_in, kh, kw = w.shape
        first = nn.Conv2d(c_in, r1, 1, bias=False, **kw_)
        # zero/reflect/replicate padding commute with a bias-free 1x1 conv, so padding can move to the core
        middle = nn.Conv2d(
            r1,
            r2,
            (kh, kw),
            layer.stride,
            layer.padding,
            layer.dilation,
            bias=False,
            padding_mode=layer.padding_mode,
            **kw_,
        )
        last = nn.Conv2d(r2, c_out, 1, bias=has_bias, **kw_)
        seq = nn.Sequential(first, middle, last)
    for module, value in zip(seq, factors, strict=True):
        _copy_into(module.weight, value, layer.weight)

    if has_bias:
        _copy_into(seq[-1].bias, layer.bias.detach(), layer.bias)
    seq.train(layer.training)
    if w.dim() == 4 and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
        seq.to(memory_format=torch.channels_last)  # a model converted for speed stays converted
    return seq
