"""modReLU in plain PyTorch, and the closed-form pieces its backward needs.

    modReLU(z) = z * relu(r + b) / r,    r = sqrt(|z|^2 + eps)

For complex ``z`` this is METHODS.md section 2; for real ``z`` it is
``sign(z) relu(|z| + b)``. The ``eps`` inside the square root removes the singularity of
``z / r`` at ``z = 0`` (the gradient there is finite: ``(1 + b / sqrt(eps)) g``) and is too
small to change anything elsewhere. With ``b = 0`` the scale ``relu(r) / r`` is exactly
1.0 in floating point, so modReLU is the identity and a unitary recurrence preserves the
norm of the state exactly, which the tests check over 16k steps.

Complex vectors in the fused ops live as real "planes" ``[Re z, Im z]`` concatenated on
the last axis (width ``2n``); :func:`modrelu_planes` and :func:`modrelu_backward_coefficients`
work on that layout.
"""

from __future__ import annotations

import torch

from .._precision import plus_epsilon

#: Added to |z|^2 before the square root. See the module docstring.
MODRELU_EPS = 1e-12


def modrelu(z: torch.Tensor, bias: torch.Tensor, eps: float = MODRELU_EPS) -> torch.Tensor:
    """modReLU of a real or complex tensor, differentiable by autograd.

    Args:
        z: ``(..., n)`` real or complex pre-activation.
        bias: ``(n,)`` real bias ``b``.
    Returns:
        ``(..., n)``, same dtype as ``z``.
    """
    bias = bias.to(z.real.dtype)  # a wider bias would promote the result
    if z.is_complex():
        # |z|^2 from the planes: torch.abs has an infinite gradient at 0.
        r = torch.sqrt(z.real.square() + z.imag.square() + eps)
    else:
        r = torch.sqrt(z.square() + eps)
    return z * (torch.relu(r + bias) / r)


def _split(x: torch.Tensor, is_complex: bool):
    if not is_complex:
        return x, None
    n = x.shape[-1] // 2
    return x[..., :n], x[..., n:]


def modrelu_planes_(z: torch.Tensor, bias: torch.Tensor, is_complex: bool) -> torch.Tensor:
    """In-place modReLU on the planes layout; returns ``z``.

    Args:
        z: ``(..., d)`` real; ``d = n`` (real state) or ``d = 2n`` with ``[Re | Im]``.
        bias: ``(n,)``.
    """
    zr, zi = _split(z, is_complex)
    r2 = zr.square()
    if zi is not None:
        r2.addcmul_(zi, zi)
    r = r2.add_(MODRELU_EPS).sqrt_()
    scale = torch.add(r, bias).relu_().div_(r)
    if zi is None:
        return z.mul_(scale)
    z.unflatten(-1, (2, -1)).mul_(scale.unsqueeze(-2))
    return z


def modrelu_of_planes(planes: list[torch.Tensor], bias: torch.Tensor) -> list[torch.Tensor]:
    """modReLU out of place on the planes as separate tensors: ``[z]`` (real) or
    ``[Re z, Im z]``, each ``(..., n)``; elementwise ops only (an exported loop body)."""
    r2 = planes[0].square()
    for plane in planes[1:]:
        r2 = r2 + plane.square()
    r = plus_epsilon(r2, MODRELU_EPS).sqrt()
    scale = (r + bias).relu() / r
    return [plane * scale for plane in planes]


def modrelu_backward_coefficients(z: torch.Tensor, bias: torch.Tensor, is_complex: bool):
    """Coefficients of the (linear) modReLU backward at pre-activation ``z``.

    With ``g`` the gradient of the output (planes layout), the gradient of ``z`` is

        real:     grad_z = P * g
        complex:  grad_z = P * g + Q * swap(g),   swap([gr | gi]) = [gi | gr]

    and the gradient of the bias is ``sum(Phi * g)`` over the real and imaginary planes
    (``Phi = active * z / r``). This is METHODS.md section 2 written per plane: with
    ``phi = z / r``, ``s = relu(r + b) / r`` and ``c = active * b / r``,

        grad_z = s g - c Re(conj(phi) g) phi.

    Returns:
        ``(P, Q, Phi)``, each shaped like ``z`` (``Q`` is ``None`` for a real state).
    """
    zr, zi = _split(z, is_complex)
    r2 = zr.square() if zi is None else zr.square() + zi.square()
    r = torch.sqrt(r2 + MODRELU_EPS)
    rb = r + bias
    active = rb > 0
    s = torch.relu(rb) / r
    c = torch.where(active, bias / r, 0.0)
    phir = zr / r
    if zi is None:
        return s - c * phir.square(), None, torch.where(active, phir, 0.0)
    phii = zi / r
    q = -c * phir * phii
    P = torch.cat([s - c * phir.square(), s - c * phii.square()], dim=-1)
    Q = torch.cat([q, q], dim=-1)
    Phi = torch.cat([torch.where(active, phir, 0.0), torch.where(active, phii, 0.0)], dim=-1)
    return P, Q, Phi
