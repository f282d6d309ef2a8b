"""torchvision's classification architectures, built for any number of classes and input channels.

Models keep torchvision's own state-dict layout, so a user's weights saved from
`torchvision.models.NAME(num_classes=...)` (with its first conv for their channel count) load as they are.
"""

from __future__ import annotations

import difflib
import re

import torch
import torchvision
from torch import nn

from kondense.errors import KondenseError

# Classification architectures only: torchvision.models' own namespace (detection, segmentation,
# video, optical flow and quantized models live in sub-modules and take other inputs or outputs).
_CLASSIFIERS: list[str] = sorted(torchvision.models.list_models(module=torchvision.models))

# googlenet and inception_v3 return (logits, aux...) tuples in training mode with auxiliary heads:
# fine-tuning expects one tensor, so their auxiliary heads are left out.
_NO_AUX = {"googlenet", "inception_v3"}

_TASKS = {
    "detection": "an object detection",
    "segmentation": "a semantic segmentation",
    "video": "a video classification",
    "optical_flow": "an optical flow",
    "quantization": "a quantized",
}


def _family(name: str) -> str:
    # resnet18 -> resnet, wide_resnet50_2 -> wide_resnet, efficientnet_v2_s -> efficientnet_v2, vit_b_16 -> vit
    for prefix in ("wide_resnet", "efficientnet_v2", "mobilenet_v2", "mobilenet_v3", "regnet_x", "regnet_y", "swin_v2"):
        if name.startswith(prefix):
            return prefix
    return re.match(r"[a-z]+", name).group(0)


def _families() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name in _CLASSIFIERS:
        found.setdefault(_family(name), []).append(name)
    return found


FAMILIES: dict[str, list[str]] = _families()


def names() -> list[str]:
    """Every torchvision classification architecture kondense builds, sorted."""
    return list(_CLASSIFIERS)


def _check_name(name: str) -> None:
    if name in _CLASSIFIERS:
        return
    for task, what in _TASKS.items():
        module = getattr(torchvision.models, task, None)
        if module is not None and name in torchvision.models.list_models(module=module):
            raise KondenseError(
                f"torchvision model '{name}' is {what} model, not an image classifier; kondense compresses "
                f"classifiers (see kondense.zoo.torchvision_models.names() or docs for the list)"
            )
    close = difflib.get_close_matches(name, _CLASSIFIERS, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise KondenseError(
        f"unknown torchvision model '{name}'; {hint}kondense.zoo.torchvision_models.names() and the docs list "
        f"every classification architecture"
    )


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The stem conv that reads the image (conv1, features.0.0, conv_proj, ...): every torchvision classifier
    registers it before any other conv."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise KondenseError("the model has no Conv2d to read the input channels")  # not reached for torchvision


def _with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        # the same per-weight spread torchvision's initialiser chose for this stem (kaiming, trunc-normal...),
        # rather than nn.Conv2d's default, which would differ from the rest of the network
        new.weight.normal_(conv.weight.mean().item(), conv.weight.std().item())
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def build(name: str, num_classes: int, in_channels: int, kwargs: dict | None = None) -> nn.Module:
    """A freshly initialised torchvision classifier `name` with `num_classes` outputs and `in_channels` inputs.

    `kwargs` go to torchvision's builder (e.g. image_size for ViT, dropout). googlenet and inception_v3 are
    built without their auxiliary heads. A channel count other than 3 replaces the stem conv by one with the
    same hyper-parameters and name, so state-dict keys stay torchvision's.
    """
    _check_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise KondenseError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise KondenseError(f"in_channels must be a positive integer, got {in_channels!r}")
    options = dict(kwargs or {})
    for fixed in ("weights", "num_classes"):
        if fixed in options:
            raise KondenseError(
                f"'{fixed}' cannot be given as a builder argument of torchvision:{name}; kondense sets it "
                f"(weights come from a state-dict file or published_state_dict)"
            )
    if name in _NO_AUX:
        options.setdefault("aux_logits", False)
        options.setdefault("init_weights", True)  # torchvision's default, which it warns about when left unset
        if options.get("aux_logits"):
            raise KondenseError(
                f"{name} with aux_logits=True returns a tuple while training; kondense needs one output"
            )
        if in_channels != 3 and options.get("transform_input"):
            raise KondenseError(f"{name}'s transform_input re-normalises 3 RGB channels; it needs in_channels=3")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except (TypeError, ValueError) as e:
        raise KondenseError(f"torchvision could not build '{name}' with arguments {options}: {e}") from e
    if in_channels != 3:
        stem, conv = _first_conv(model)
        _set(model, stem, _with_in_channels(conv, in_channels))
    return model


def published_state_dict(name: str, weights: str) -> dict:
    """torchvision's published weights for `name` by their enum name ("DEFAULT", "IMAGENET1K_V1"), in the
    layout build() makes (auxiliary heads of googlenet/inception_v3 left out). Downloads into torch's hub cache."""
    _check_name(name)
    enum = torchvision.models.get_model_weights(name)
    choices = ["DEFAULT", *enum.__members__]
    if weights not in choices:
        raise KondenseError(f"torchvision has no weights '{weights}' for {name}; published: {', '.join(choices)}")
    chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    try:
        state = chosen.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # noqa: BLE001 - URLError, timeouts, proxy and hash errors all mean the same to the user
        raise KondenseError(
            f"could not download torchvision's published weights {name} {weights} ({chosen.url}): {e}; "
            f"where the machine has no internet, give a state-dict file of the network instead"
        ) from e
    if name in _NO_AUX:
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    return state
