"""Plain-PyTorch implementations of every op: the oracle for tests and the CPU path.

Imports only torch. See DESIGN.md ("Backends").
"""

from .cayley import (
    cayley,
    cayley_autograd,
    cayley_backward,
    cayley_from_inverse,
    cayley_inverse,
)
from .modrelu import MODRELU_EPS, modrelu, modrelu_backward_coefficients
from .spectral_radius import spectral_radius, spectral_radius_autograd
from .recurrence import ACTIVATIONS, recurrence_autograd, recurrence_backward, recurrence_forward

__all__ = [
    "ACTIVATIONS",
    "MODRELU_EPS",
    "cayley",
    "cayley_autograd",
    "cayley_backward",
    "cayley_from_inverse",
    "cayley_inverse",
    "modrelu",
    "modrelu_backward_coefficients",
    "recurrence_autograd",
    "recurrence_backward",
    "recurrence_forward",
    "spectral_radius",
    "spectral_radius_autograd",
]
