"""kondense: compress trained PyTorch models as far as an accuracy budget allows.

    import kondense
    result = kondense.compress("zoo:resnet18", "fashion-mnist", delta=1.0, out="out/",
                               budget=kondense.Budget(max_steps=4), finetune=kondense.FineTune(lr=0.01))
    model = kondense.load_compressed("out/model.pt")

The public API is `__all__`. Importing the package is light: torch loads only when one of the
engine's names is first used, so the torch-free job layer (kondense.job) can be shared with the
operator.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from kondense.errors import KondenseError

__version__ = "0.1.0"
__all__ = ["compress", "load_compressed", "Budget", "FineTune", "Result", "profile", "KondenseError", "__version__"]

# name -> (module, attribute), imported on first use
_LAZY = {
    "compress": ("kondense.api", "compress"),
    "Result": ("kondense.api", "Result"),
    "load_compressed": ("kondense.pipeline.artifacts", "load_compressed"),
    "Budget": ("kondense.pipeline.budget", "Budget"),
    "FineTune": ("kondense.pipeline.distill", "FineTune"),
    "profile": ("kondense.measure.profile", "profile"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kondense' has no attribute '{name}'")
    module, attribute = _LAZY[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # cached: later uses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
