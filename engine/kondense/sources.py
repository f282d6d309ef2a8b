"""Where the network to compress comes from, and how a compressed one is rebuilt from that source.

Sources, as `kondense.compress`, the CLI and the CompressionJob name them:
- an nn.Module (the Python API only);
- 'zoo:ARCH': the zoo's architecture with its weights trained on the job's data;
- 'torchvision:NAME': a torchvision classification architecture, built for the data's classes
  and input channels, with a state dict in torchvision's layout (`weights`) or torchvision's
  published weights (`pretrained`);
- 'package.module:function': a user's factory returning the module, imported from the installed
  packages or from `code_dir`; optional `weights`;
- a path: a weights file (a kondense zoo file, or a state dict of the zoo architecture `arch`).

`base` records what rebuilds the uncompressed network without the user's objects (a zoo or
torchvision architecture with its classes and channels, or the factory and its arguments).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from kondense import data as data_mod
from kondense import zoo
from kondense.errors import KondenseError
from kondense.zoo import weights

TORCHVISION = "torchvision:"
ZOO = "zoo:"
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


# googlenet's and inception_v3's training-only classifiers: kondense builds them without (their tuple
# outputs would break fine-tuning), so a state dict saved with them loads without those keys
_AUXILIARY_HEADS = ("aux1.", "aux2.", "AuxLogits.")


@dataclass(frozen=True)
class ModelOptions:
    """What goes with a source: the weights file, published weights, builder arguments, code directory."""

    arch: str | None = None
    weights: str | None = None
    pretrained: str | None = None
    kwargs: dict = field(default_factory=dict)
    code_dir: str | None = None


def is_factory(text: str) -> bool:
    """'package.module:function', and not one of the prefixed sources."""
    return not text.startswith((ZOO, TORCHVISION)) and _FACTORY.fullmatch(text) is not None


def load_model(
    model: nn.Module | str, options: ModelOptions, data_name: str, num_classes: int | None, input_shape: tuple[int, ...]
) -> tuple[nn.Module, dict, str]:
    """(module, base, source): `base` lets a compressed model be rebuilt ({} for a user's module);
    `source` names the input in run fingerprints and messages."""
    _refuse_misplaced(model, options)
    source = kind(model)
    if source == "module":
        return model, {}, f"module:{type(model).__name__}"
    if source == "zoo":
        return _zoo(model[len(ZOO) :], data_name, num_classes, input_shape)
    if source == "torchvision":
        return _torchvision(model[len(TORCHVISION) :], options, num_classes, input_shape)
    if source == "factory":
        return _factory(model, options)
    return _weights_file(model, options.arch, num_classes, input_shape)


def rebuild(base: dict, code_dir: str | Path | None = None) -> nn.Module | None:
    """The freshly initialised uncompressed network `base` names, or None for a user's module object."""
    if base.get("arch"):
        return zoo.build(base["arch"], base["num_classes"], base["in_channels"])
    if base.get("torchvision"):
        from kondense.zoo import torchvision_models

        return torchvision_models.build(base["torchvision"], base["num_classes"], base["in_channels"], base["kwargs"])
    if base.get("factory"):
        return call_factory(base["factory"], base["kwargs"], code_dir)
    return None


def call_factory(path: str, kwargs: dict, code_dir: str | Path | None = None) -> nn.Module:
    """Import 'package.module:function' (from `code_dir` first, when given) and call it with `kwargs`."""
    if not _FACTORY.fullmatch(path):
        raise KondenseError(
            f"factory '{path}' must be package.module:function (a module, a colon, the function), e.g. mynets.small:build"
        )
    module_name, _, attribute = path.partition(":")
    where = f"in {code_dir} or the installed packages" if code_dir else "in the installed packages"
    with _on_path(code_dir):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise KondenseError(
                f"factory '{path}': cannot import module '{module_name}' {where} ({e}); "
                "give the directory holding it as the code directory (--code-dir, spec.model.codeUri)"
            ) from None
    target = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise KondenseError(f"factory '{path}': module '{module_name}' has no '{attribute}'")
    if not callable(target):
        raise KondenseError(f"factory '{path}' is a {type(target).__name__}, not a function that builds the model")
    try:
        built = target(**kwargs)
    except TypeError as e:
        raise KondenseError(f"factory '{path}' refused its keyword arguments {sorted(kwargs)}: {e}") from None
    if not isinstance(built, nn.Module):
        raise KondenseError(f"factory '{path}' returned a {type(built).__name__}, not a torch.nn.Module")
    return built


@contextlib.contextmanager
def _on_path(code_dir: str | Path | None) -> Iterator[None]:
    if code_dir is None:
        yield
        return
    directory = Path(code_dir)
    if not directory.is_dir():
        raise KondenseError(f"code directory '{code_dir}' does not exist or is not a directory")
    # the code directory comes first: a package of the same name imported earlier from elsewhere (another
    # run's code directory in the same process) would otherwise answer instead
    for name in [n for n, m in sys.modules.items() if _imported_from_elsewhere(m, directory)]:
        del sys.modules[name]
    importlib.invalidate_caches()  # files written since the last import (a fresh checkout) must be seen
    sys.path.insert(0, str(directory.resolve()))
    try:
        yield
    finally:
        sys.path.remove(str(directory.resolve()))


def kind(model: nn.Module | str) -> str:
    """Which source `model` names: module, zoo, torchvision, factory or file."""
    if isinstance(model, nn.Module):
        return "module"
    if model.startswith(ZOO):
        return "zoo"
    if model.startswith(TORCHVISION):
        return "torchvision"
    return "factory" if is_factory(model) and not Path(model).exists() else "file"


# the options each source takes; any other given option is a mistake the user should hear about
_TAKES = {
    "module": set(),
    "zoo": set(),
    "torchvision": {"weights", "pretrained", "kwargs"},
    "factory": {"weights", "kwargs", "code_dir"},
    "file": {"arch"},
}


def _imported_from_elsewhere(module: object, directory: Path) -> bool:
    """A module loaded from a file that a top-level package of `directory` would shadow, but from another place."""
    file = getattr(module, "__file__", None)
    name = getattr(module, "__name__", "")
    if file is None or not name:
        return False
    top = name.split(".")[0]
    own = directory / top
    if not (own.is_dir() or own.with_suffix(".py").is_file()):
        return False
    return not Path(file).resolve().is_relative_to(directory.resolve())


def _refuse_misplaced(model: nn.Module | str, options: ModelOptions) -> None:
    source = kind(model)
    given = {k for k in ("arch", "weights", "pretrained", "kwargs", "code_dir") if getattr(options, k)}
    wrong = sorted(given - _TAKES[source])
    if wrong:
        raise KondenseError(
            f"{', '.join(wrong)} cannot go with a {source} model: weights, pretrained and kwargs go with "
            "torchvision:NAME; weights, kwargs and code_dir with package.module:function; arch with a weights "
            "file of a zoo architecture"
        )


def _zoo(arch: str, data_name: str, num_classes: int | None, input_shape: tuple[int, ...]):
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
    base = {"arch": arch, "num_classes": num_classes, "in_channels": input_shape[0]}
    return _from_weights(path, arch, num_classes, input_shape[0]), base, f"{ZOO}{arch}"


def _torchvision(name: str, options: ModelOptions, num_classes: int | None, input_shape: tuple[int, ...]):
    from kondense.zoo import torchvision_models

    if num_classes is None:
        raise KondenseError("a torchvision model is built for the data's classes: give a data set, not only loaders")
    if (options.weights is None) == (options.pretrained is None):
        raise KondenseError(
            f"torchvision:{name} needs its trained weights, one of: a state dict in torchvision's layout "
            "(--weights FILE, spec.model.uri) or torchvision's published weights (--pretrained NAME)"
        )
    kwargs = dict(options.kwargs)
    # a ViT's positional embedding and MaxViT's attention windows are sized for one input size
    if name.startswith("vit_"):
        kwargs.setdefault("image_size", input_shape[1])
    elif name.startswith("maxvit_"):
        kwargs.setdefault("input_size", tuple(input_shape[1:]))
    model = torchvision_models.build(name, num_classes, input_shape[0], kwargs)
    described = f"torchvision {name} with {num_classes} classes and {input_shape[0]} input channels"
    if options.pretrained is not None:
        state = torchvision_models.published_state_dict(name, options.pretrained)
        weights.fit(model, state, f"torchvision's {options.pretrained} weights of {name}", described)
        source = f"{TORCHVISION}{name}@{options.pretrained}"
    else:
        path = _weights_path(options.weights)
        state = {k: v for k, v in weights.read(path).items() if not k.startswith(_AUXILIARY_HEADS)}
        weights.fit(model, state, f"weights file '{path}'", described)
        source = f"{TORCHVISION}{name}@{path.resolve()}"
    base = {"torchvision": name, "num_classes": num_classes, "in_channels": input_shape[0], "kwargs": kwargs}
    return model, base, source


def _factory(path: str, options: ModelOptions):
    model = call_factory(path, dict(options.kwargs), options.code_dir)
    source = path
    if options.weights is not None:
        file = _weights_path(options.weights)
        weights.fit(model, weights.read(file), f"weights file '{file}'", f"the module {path} builds")
        source = f"{path}@{file.resolve()}"
    return model, {"factory": path, "kwargs": dict(options.kwargs)}, source


def _weights_file(model: str, arch: str | None, num_classes: int | None, input_shape: tuple[int, ...]):
    path = _weights_path(
        model,
        described=f"model '{model}' is neither zoo:ARCH, torchvision:NAME, "
        "package.module:function nor an existing file",
    )
    content = weights.read(path)
    if "arch" in content and "state_dict" in content:
        arch = arch or content["arch"]
        num_classes = num_classes or content["num_classes"]
    if arch is None:
        raise KondenseError(
            f"'{model}' is a plain state dict: say which architecture it is with --arch (see 'kondense zoo list'), "
            "or give torchvision:NAME or package.module:function with --weights"
        )
    if num_classes is None:
        raise KondenseError("give a data set so the number of classes is known")
    base = {"arch": arch, "num_classes": num_classes, "in_channels": input_shape[0]}
    return _from_weights(path, arch, num_classes, input_shape[0]), base, str(path.resolve())


def _weights_path(text: str, described: str | None = None) -> Path:
    path = Path(text)
    if not path.is_file():
        raise KondenseError(described or f"weights file '{text}' does not exist")
    if zipfile.is_zipfile(path) and any(
        n.endswith("constants.pkl") or "/code/" in n for n in zipfile.ZipFile(path).namelist()
    ):
        raise KondenseError(
            f"'{text}' is a TorchScript module, which cannot be restructured; pass its state dict "
            "(torch.save(model.state_dict(), PATH))"
        )
    return path


def _from_weights(path: Path, arch: str, num_classes: int, in_channels: int) -> nn.Module:
    return weights.load_into(zoo.build(arch, num_classes, in_channels), path, arch, num_classes, in_channels)
