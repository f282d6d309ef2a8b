"""Attention-head pruning: removing whole heads of a multi-head attention.

nn.MultiheadAttention cannot lose a head in place: it holds its query/key/value projections as one
packed parameter and checks that their width equals the width of its input. So the first pruning of an
nn.MultiheadAttention replaces it by `Attention`, the same computation (the same outputs, to rounding)
with one Linear per projection, at the same name. Its inner width (heads x head size) is its own, so
heads can go while the model's width stays, and its projections are ordinary layers that low-rank
factorisation can reach (nn.MultiheadAttention reads them through their weights).

The 'heads' transform belongs to the attention's output projection, the one Conv2d/Linear every
multi-head attention has: pruning `...self_attention.out_proj` to a ratio keeps max(1, round(ratio x
heads)) heads, those whose projection weights weigh most (L1). How many heads stay depends only on the
count and the ratio, so a list of steps replays onto a freshly built model.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    """Multi-head attention with separate projections and an inner width of its own; called like
    nn.MultiheadAttention (query, key, value, masks, need_weights) and returning (output, weights or None)."""

    def __init__(
        self,
        embed_dim: int,
        kdim: int,
        vdim: int,
        num_heads: int,
        head_dim: int,
        bias: bool,
        dropout: float,
        batch_first: bool,
    ) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(kdim, inner, bias=bias)
        self.v_proj = nn.Linear(vdim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=True)
        self.num_heads, self.head_dim = num_heads, head_dim  # the model's width is what out_proj gives, pruned or not
        self.dropout, self.batch_first = dropout, batch_first
        # what nn.TransformerEncoderLayer looks at before taking its fused path, which reads the packed
        # projection this module does not have: these send it down the plain path that calls forward()
        self.in_proj_bias = None
        self._qkv_same_embed_dim = False

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            if attn_mask.dim() == 3:  # (N * heads, L, S), as nn.MultiheadAttention takes it
                attn_mask = attn_mask.reshape(-1, self.num_heads, *attn_mask.shape[1:])
            scores = _masked(scores, attn_mask)
        if key_padding_mask is not None:
            scores = _masked(scores, key_padding_mask[:, None, None, :])
        weights = torch.softmax(scores, dim=-1)
        out = F.dropout(weights, self.dropout, self.training) @ v
        out = self.out_proj(out.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.num_heads * self.head_dim))
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, weights.squeeze(0) if unbatched else weights


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A boolean mask marks what may not be attended to; a float mask is added (-inf for the same)."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


def blocker(attention: nn.Module) -> str | None:
    """Why the heads of `attention` (an nn.MultiheadAttention or Attention) cannot be pruned, or None."""
    if isinstance(attention, nn.MultiheadAttention):
        if attention.bias_k is not None or attention.add_zero_attn:
            return "its nn.MultiheadAttention adds learned key/value biases or a zero attention, which kondense does not rebuild"
    elif not isinstance(attention, Attention):
        return "it is not the output projection of a multi-head attention"
    elif not all(isinstance(getattr(attention, p), nn.Linear) for p in ("q_proj", "k_proj", "v_proj")):
        return "the attention's projections were factorised, so its heads can no longer be told apart"
    if attention.num_heads < 2:
        return "its attention has a single head"
    return None


def owner(model: nn.Module, name: str) -> nn.Module | None:
    """The attention whose output projection layer `name` is, or None."""
    parent_name, _, attr = name.rpartition(".")
    if attr != "out_proj" or not parent_name:  # an attention that is the whole model has no place to be replaced in
        return None
    parent = model.get_submodule(parent_name)
    return parent if isinstance(parent, (nn.MultiheadAttention, Attention)) else None


def unpacked(mha: nn.MultiheadAttention) -> Attention:
    """The Attention that computes what `mha` does, with its weights."""
    p = next(mha.parameters())
    made = Attention(
        mha.embed_dim,
        mha.kdim,
        mha.vdim,
        mha.num_heads,
        mha.head_dim,
        mha.in_proj_bias is not None,
        mha.dropout,
        mha.batch_first,
    ).to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.chunk(3)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
        for proj, w, b in zip((made.q_proj, made.k_proj, made.v_proj), weights, biases, strict=True):
            proj.weight.copy_(w)
            if b is not None:
                proj.bias.copy_(b)
        made.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None:
            made.out_proj.bias.copy_(mha.out_proj.bias)
        else:
            made.out_proj.bias.zero_()
    made.train(mha.training)
    return made


def kept_heads(attention: nn.Module, ratio: float) -> list[int]:
    """The max(1, round(ratio x heads)) heads whose projections weigh most (L1; ties keep the lower index),
    in their order."""
    if isinstance(attention, nn.MultiheadAttention):
        attention = unpacked(attention)
    heads, d = attention.num_heads, attention.head_dim
    keep = max(1, round(ratio * heads))
    with torch.no_grad():
        weight = sum(
            getattr(attention, p).weight.abs().reshape(heads, d, -1).sum(dim=(1, 2))
            for p in ("q_proj", "k_proj", "v_proj")
        ) + attention.out_proj.weight.abs().reshape(-1, heads, d).sum(dim=(0, 2))
    order = torch.argsort(weight.double().cpu(), descending=True, stable=True)
    return sorted(order[:keep].tolist())


def prune(attention: nn.Module, ratio: float) -> Attention:
    """`attention` with only its kept heads, as an Attention (the caller puts it in the model)."""
    if isinstance(attention, nn.MultiheadAttention):
        attention = unpacked(attention)
    keep = kept_heads(attention, ratio)
    if len(keep) == attention.num_heads:
        return attention
    d = attention.head_dim
    rows = torch.tensor([h * d + i for h in keep for i in range(d)], device=attention.out_proj.weight.device)
    with torch.no_grad():
        for p in ("q_proj", "k_proj", "v_proj"):
            setattr(attention, p, _rows(getattr(attention, p), rows))
        out = attention.out_proj
        smaller = nn.Linear(len(rows), out.out_features, bias=out.bias is not None).to(out.weight)
        smaller.weight.copy_(out.weight[:, rows])
        if out.bias is not None:
            smaller.bias.copy_(out.bias)
        attention.out_proj = smaller
    attention.num_heads = len(keep)
    return attention


def _rows(layer: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    smaller = nn.Linear(layer.in_features, len(rows), bias=layer.bias is not None).to(layer.weight)
    smaller.weight.copy_(layer.weight[rows])
    if layer.bias is not None:
        smaller.bias.copy_(layer.bias[rows])
    return smaller
