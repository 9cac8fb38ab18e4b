"""Benchmark tasks of METHODS.md section 8.

The core of fastunitary imports nothing from here; loaders that need HuggingFace
``datasets`` or scikit-learn import them inside themselves, so ``import fastunitary``
works without either.
"""

from .adding import BASELINE as ADDING_BASELINE
from .adding import adding_arrays, adding_batch
from .copying import CONVENTIONS, copying_arrays, copying_baseline, copying_batch
from .digits import digits_arrays, digits_tensors

__all__ = [
    "ADDING_BASELINE",
    "CONVENTIONS",
    "adding_arrays",
    "adding_batch",
    "copying_arrays",
    "copying_baseline",
    "copying_batch",
    "digits_arrays",
    "digits_tensors",
]
