"""Benchmark tasks of METHODS.md section 8.

The core of fastunitary imports nothing from here; loaders that need HuggingFace
``datasets`` import it inside themselves, so ``import fastunitary`` works without it.
"""

from .adding import BASELINE as ADDING_BASELINE
from .adding import adding_arrays, adding_batch
from .copying import CONVENTIONS, copying_arrays, copying_baseline, copying_batch

__all__ = [
    "ADDING_BASELINE",
    "CONVENTIONS",
    "adding_arrays",
    "adding_batch",
    "copying_arrays",
    "copying_baseline",
    "copying_batch",
]
