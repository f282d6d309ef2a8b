"""The model zoo: CIFAR-style architectures for any number of classes and input channels."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kondense.errors import KondenseError
from kondense.zoo.densenet import densenet121
from kondense.zoo.googlenet import googlenet
from kondense.zoo.lenet import lenet5
from kondense.zoo.mobilenet import mobilenet_v1, mobilenet_v2
from kondense.zoo.resnet import resnet18, resnet18_narrow, resnet50
from kondense.zoo.vgg import vgg19

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg19": vgg19,
    "densenet121": densenet121,
    "googlenet": googlenet,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "lenet5": lenet5,
    "resnet18_narrow": resnet18_narrow,
}


def list_archs() -> list[str]:
    return list(ARCHS)


def build(arch: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A freshly initialised zoo model."""
    if arch not in ARCHS:
        raise KondenseError(f"unknown architecture '{arch}'; known: {', '.join(ARCHS)}")
    if num_classes < 1 or in_channels < 1:
        raise KondenseError(f"num_classes and in_channels must be positive, got {num_classes} and {in_channels}")
    return ARCHS[arch](num_classes=num_classes, in_channels=in_channels)
