"""Plain-PyTorch implementations of every op: the oracle for tests and the CPU path.

Imports only torch. See DESIGN.md ("Backends").
"""

from .cayley import (
    cayley,
    cayley_autograd,
    cayley_backward,
    cayley_by_inverse,
    cayley_from_inverse,
    cayley_inverse,
)
from .modrelu import MODRELU_EPS, modrelu, modrelu_backward_coefficients
from .lstm_recurrence import lstm_autograd, lstm_backward, lstm_forward, lstm_hop
from .momentum_scan import (
    linear_scan,
    linear_scan_backward,
    linear_scan_hop,
    linear_scan_loop,
)
from .sbo_recurrence import (
    SBO_METHODS,
    sbo_autograd,
    sbo_backward,
    sbo_forward,
    sbo_hop,
    sbo_loop,
)
from .spectral_radius import (dominant_eigenpair, spectral_radius, spectral_radius_autograd,
                              spectral_radius_newton)
from .recurrence import (
    ACTIVATIONS,
    recurrence_autograd,
    recurrence_backward,
    recurrence_backward_from_states,
    recurrence_forward,
    recurrence_hop,
    recurrence_loop,
)

__all__ = [
    "ACTIVATIONS",
    "MODRELU_EPS",
    "cayley",
    "cayley_autograd",
    "cayley_backward",
    "cayley_by_inverse",
    "cayley_from_inverse",
    "cayley_inverse",
    "linear_scan",
    "linear_scan_backward",
    "linear_scan_hop",
    "linear_scan_loop",
    "lstm_autograd",
    "lstm_backward",
    "lstm_forward",
    "lstm_hop",
    "modrelu",
    "modrelu_backward_coefficients",
    "recurrence_autograd",
    "recurrence_backward",
    "recurrence_backward_from_states",
    "recurrence_forward",
    "recurrence_hop",
    "recurrence_loop",
    "SBO_METHODS",
    "sbo_autograd",
    "sbo_backward",
    "sbo_forward",
    "sbo_hop",
    "sbo_loop",
    "spectral_radius",
    "spectral_radius_autograd",
    "spectral_radius_newton",
    "dominant_eigenpair",
]
