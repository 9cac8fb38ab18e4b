"""Benchmark tasks of METHODS.md section 8.

The core of fastunitary imports nothing from here; loaders that need HuggingFace
``datasets`` import it inside themselves, so ``import fastunitary`` works without it.
"""

from .copying import CONVENTIONS, copying_arrays, copying_baseline, copying_batch

__all__ = ["CONVENTIONS", "copying_arrays", "copying_baseline", "copying_batch"]
