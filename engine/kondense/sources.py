"""Where the model to compress comes from: a module, the zoo's trained weights, or a file."""

from __future__ import annotations

import zipfile
from pathlib import Path

from torch import nn

from kondense import data as data_mod
from kondense import zoo
from kondense.errors import KondenseError
from kondense.zoo import weights


def load_model(
    model: nn.Module | str, arch: str | None, data_name: str, num_classes: int | None, input_shape: tuple[int, ...]
) -> tuple[nn.Module, dict, str]:
    """(module, base, source): `base` lets a compressed model be rebuilt ({} for a user's module);
    `source` names the input in run fingerprints and messages."""
    if isinstance(model, nn.Module):
        return model, {}, f"module:{type(model).__name__}"
    if model.startswith("zoo:"):
        arch = model[4:]
        zoo.build(arch)  # unknown arch: the error lists the known ones
        if num_classes is None:
            raise KondenseError("zoo models are trained per data set: give a data set, not only loaders")
        dataset_key = data_name if data_name in data_mod.NAMED_DATASETS else Path(data_name).name
        path = weights.cache_path(arch, dataset_key, num_classes, input_shape[0])
        if not path.exists():
            raise KondenseError(
                f"no trained {arch} for {dataset_key} in the zoo ({path}); train it first: "
                f"kondense zoo train {arch} --dataset {data_name}"
            )
        return (
            _from_weights(path, arch, num_classes, input_shape[0]),
            {"arch": arch, "num_classes": num_classes, "in_channels": input_shape[0]},
            model,
        )
    path = Path(model)
    if not path.is_file():
        raise KondenseError(f"model '{model}' is neither zoo:ARCH nor an existing file")
    if zipfile.is_zipfile(path) and any(
        n.endswith("constants.pkl") or "/code/" in n for n in zipfile.ZipFile(path).namelist()
    ):
        raise KondenseError(
            f"'{model}' is a TorchScript module, which cannot be restructured; pass its state dict "
            "(torch.save(model.state_dict(), PATH)) with --arch"
        )
    content = weights.read(path)
    if "arch" in content and "state_dict" in content:
        arch = arch or content["arch"]
        num_classes = num_classes or content["num_classes"]
    if arch is None:
        raise KondenseError(
            f"'{model}' is a plain state dict: say which architecture it is with --arch (see 'kondense zoo list')"
        )
    if num_classes is None:
        raise KondenseError("give a data set so the number of classes is known")
    return (
        _from_weights(path, arch, num_classes, input_shape[0]),
        {"arch": arch, "num_classes": num_classes, "in_channels": input_shape[0]},
        str(path.resolve()),
    )


def _from_weights(path: Path, arch: str, num_classes: int, in_channels: int) -> nn.Module:
    return weights.load_into(zoo.build(arch, num_classes, in_channels), path, arch, num_classes, in_channels)
