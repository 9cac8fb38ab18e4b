"""modReLU in plain PyTorch, and the closed-form pieces its backward needs.

    modReLU(z) = z * relu(r + b) / r,    r = sqrt(|z|^2 + eps)     (complex z)
    modReLU(z) = (z + b sign(z)) [|z| + b >= 0]                   (real z)

For complex ``z`` this is METHODS.md section 2; the ``eps`` inside the square root
removes the singularity of ``z / r`` at ``z = 0`` and is too small to change anything
elsewhere. For real ``z`` it is METHODS.md's ``sign(z) relu(|z| + b)`` exactly, with no
``eps`` (a mask from ``sqrt(z^2 + eps)`` once took ``|z| < 1e-6`` with a slightly negative
``b`` as active, and gave it the opposite sign); ``|z| + b = 0`` counts as active, so that
``b = 0`` is the identity at ``z = 0`` too. Its gradient is the closed form there: ``g``
where active, 0 elsewhere (``phi = sign(z)``, so ``(r + b) / r - (b / r) phi^2 = 1``);
the jump of ``b sign(z)`` at 0 is not differentiated
(``torch.sign``'s derivative is 0), as in the papers' code. The real state once took the
complex formula, whose smoothed ``z / r`` has the derivative ``1 + b eps / r^3``: ``1e4``
at ``z = 0`` with ``b = 0.01``, so a run of zero inputs from the zero initial state
multiplied the gradient by 1e4 a step (NaN in float32 after ten), and a unit passing near
0 spiked it. For a complex state the gain ``(r + b) / r`` across the direction of ``z`` is
no artefact but the map's own (a small ``z`` turned a little turns ``h``, of modulus
``r + b``, as much): near ``z = 0`` it stays large (``1 + b / sqrt(eps)`` at 0), the
reason for a trainable ``h_0``. With ``b = 0`` both are exactly the identity in floating
point (``relu(r) / r`` is 1.0, ``b sign(z)`` is 0), so a unitary recurrence preserves the
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
    if not z.is_complex():
        return _real_modrelu(z, bias)
    # |z|^2 from the planes: torch.abs has an infinite gradient at 0.
    r = torch.sqrt(z.real.square() + z.imag.square() + eps)
    return z * (torch.relu(r + bias) / r)


def _real_modrelu(z: torch.Tensor, bias: torch.Tensor):
    """``sign(z) relu(|z| + b)`` as ``(z + b sign(z)) [|z| + b >= 0]``, out of place and
    differentiable (the module docstring).

    The mask has derivative 0, so it comes from detached ``z`` and ``b`` and selects: a
    product with it, or any op between a forward-mode dual tensor and a plain one, runs
    through a slow decomposition in ``torch.func.jvp`` (PyTorch 2.13: 1.7x the whole
    forward-mode step of ScoRNN). Zeroing where ``|z| + b < 0`` keeps a NaN ``z`` or ``b``
    NaN (the comparison is false) and gives 0 for ``b = -inf``."""
    inactive = z.detach().abs() + bias.detach() < 0
    return torch.where(inactive, torch.zeros_like(z), z + bias * torch.sign(z))


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
    if not is_complex:  # as _real_modrelu: zeroed where |z| + b < 0, a NaN left NaN
        inactive = z.abs().add_(bias) < 0
        return z.addcmul_(torch.sign(z), bias).masked_fill_(inactive, 0.0)
    zr, zi = _split(z, is_complex)
    r = zr.square().addcmul_(zi, zi).add_(MODRELU_EPS).sqrt_()
    scale = torch.add(r, bias).relu_().div_(r)
    z.unflatten(-1, (2, -1)).mul_(scale.unsqueeze(-2))
    return z


def modrelu_of_planes(planes: list[torch.Tensor], bias: torch.Tensor) -> list[torch.Tensor]:
    """modReLU out of place on the planes as separate tensors: ``[z]`` (real) or
    ``[Re z, Im z]``, each ``(..., n)``; elementwise ops only (an exported loop body)."""
    if len(planes) == 1:
        return [_real_modrelu(planes[0], bias)]
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

        grad_z = s g - c Re(conj(phi) g) phi,

    For a real state ``phi = sign(z)``: ``P = active`` and ``Phi = active * sign(z)``
    (module docstring).

    Returns:
        ``(P, Q, Phi)``, each shaped like ``z`` (``Q`` is ``None`` for a real state).
    """
    if not is_complex:  # active where |z| + b >= 0 (_real_modrelu); a NaN z or b gives P
        # and Phi NaN (a bias gradient of 0 there would hide the NaN from a finite check)
        a = z.abs() + bias
        active = a >= 0
        inactive_or_nan = torch.where(a < 0, 0.0, a)
        return (torch.where(active, 1.0, inactive_or_nan), None,
                torch.where(active, torch.sign(z), inactive_or_nan))
    zr, zi = _split(z, is_complex)
    r = torch.sqrt(zr.square() + zi.square() + MODRELU_EPS)
    rb = r + bias
    active = rb > 0
    s = torch.relu(rb) / r
    c = torch.where(active, bias / r, 0.0)
    phir = zr / r
    phii = zi / r
    q = -c * phir * phii
    P = torch.cat([s - c * phir.square(), s - c * phii.square()], dim=-1)
    Q = torch.cat([q, q], dim=-1)
    inactive_or_nan = torch.where(rb <= 0, 0.0, rb)  # NaN where z or b is: Phi too
    Phi = torch.cat([torch.where(active, phir, inactive_or_nan),
                     torch.where(active, phii, inactive_or_nan)], dim=-1)
    return P, Q, Phi
