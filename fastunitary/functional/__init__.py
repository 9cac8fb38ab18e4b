"""Differentiable ops that every model of the library is built from (DESIGN.md).

Each takes ``backend="auto" | "reference" | "triton"``; see :mod:`fastunitary._backend`.
"""

from .cayley import cayley, cayley_planes
from .lstm_recurrence import lstm_recurrence
from .modrelu import modrelu
from .momentum_scan import momentum_scan
from .planes import as_complex, real_embedding, to_planes
from .recurrence import recurrence, recurrence_planes
from .sbo_recurrence import sbo_recurrence
from .spectral_radius import spectral_normalize, spectral_radius

__all__ = [
    "as_complex",
    "cayley",
    "cayley_planes",
    "lstm_recurrence",
    "modrelu",
    "momentum_scan",
    "real_embedding",
    "recurrence",
    "recurrence_planes",
    "sbo_recurrence",
    "spectral_normalize",
    "spectral_radius",
    "to_planes",
]
