"""``modrelu``: the modReLU activation, ``z * relu(|z| + b) / |z|`` (METHODS.md section 2).

A pointwise op: plain PyTorch, differentiated by autograd (which gives exactly the
closed form of METHODS.md, tested), and fused by TorchInductor when compiled on a real
input. Inside the recurrences it is fused into the recurrence op instead.
"""

from __future__ import annotations

import torch

from .. import reference
from .._checks import check_same_device, check_shape, check_tensor


def modrelu(z: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """modReLU of a real or complex tensor.

    Complex ``z``: ``h = z * relu(r + b) / r`` with ``r = sqrt(|z|^2 + 1e-12)``, whose tiny
    ``eps`` keeps the gradient finite at ``z = 0`` (it grows as ``b / |z|`` near 0). Real
    ``z``: ``h = sign(z) relu(|z| + b)`` exactly, with METHODS.md's gradient: ``g`` where
    active and 0 elsewhere, also at ``z = 0`` (the jump of ``b sign(z)`` there is not
    differentiated). With ``b = 0`` the op is exactly the identity
    (``fastunitary.reference.modrelu``).

    Args:
        z: ``(..., n)`` real or complex.
        bias: ``(n,)`` real.
    Returns:
        ``(..., n)``, the dtype of ``z``.
    """
    check_tensor("z", z)
    check_tensor("bias", bias, allow_complex=False)
    check_same_device("z", z, bias=bias)
    if z.dim() < 1:
        raise ValueError("z must have shape (..., n), got a 0-d tensor")
    check_shape("bias", bias, (z.shape[-1],), what="(n,)")
    return reference.modrelu(z, bias)
