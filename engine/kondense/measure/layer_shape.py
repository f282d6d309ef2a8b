"""A Conv2d's or Linear's shape, as far as its time depends on it: the key of a latency table
(kondense.measure.latency_table), and what a layer is rebuilt from to be timed alone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class LayerShape:
    """Everything a Conv2d's or Linear's time depends on (not its weights' values)."""

    kind: str  # "conv" or "linear"
    in_features: int
    out_features: int
    input: tuple[int, ...]  # the input's shape without the batch dimension
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True

    @classmethod
    def of(cls, layer: nn.Module, input_shape: tuple[int, ...]) -> LayerShape:
        bias = layer.bias is not None
        if isinstance(layer, nn.Conv2d):
            return cls(
                "conv",
                layer.in_channels,
                layer.out_channels,
                input_shape,
                tuple(layer.kernel_size),
                tuple(layer.stride),
                layer.padding if isinstance(layer.padding, str) else tuple(layer.padding),
                tuple(layer.dilation),
                layer.groups,
                bias,
            )
        return cls("linear", layer.in_features, layer.out_features, input_shape, bias=bias)

    def build(self) -> nn.Module:
        if self.kind == "conv":
            return nn.Conv2d(
                self.in_features,
                self.out_features,
                self.kernel,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
                self.bias,
            )
        return nn.Linear(self.in_features, self.out_features, self.bias)
