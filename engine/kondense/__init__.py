"""kondense: compress trained PyTorch models as far as an accuracy budget allows.

    result = kondense.compress(model, "fashion-mnist", delta=1.0, stage=2, out="out/")

Modules: profile (the six metrics), zoo (architectures and trained weights), data (data
sets and splits), transforms (per-layer transformations), conductor (sensitivity and
plans), exploration and annealing (the two stages), export (saved models), report.
Importing the package itself is light (no torch), so the spec can be shared.
"""
from kondense.errors import KondenseError

__version__ = "0.1.0"
__all__ = ["KondenseError", "compress", "load_compressed", "__version__"]


def __getattr__(name: str):
    if name == "compress":
        from kondense.api import compress

        return compress
    if name == "load_compressed":
        from kondense.artifacts import load_state

        return load_state
    raise AttributeError(name)
