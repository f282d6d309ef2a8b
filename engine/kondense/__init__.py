"""kondense: compress trained PyTorch models as far as an accuracy budget allows.

Modules: profile (the six metrics), zoo (architectures and trained weights), data (data
sets and splits), train (training loops).
"""
from .errors import KondenseError

__version__ = "0.1.0"
__all__ = ["KondenseError", "__version__"]
