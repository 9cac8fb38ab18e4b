"""The scaled Cayley transform in plain PyTorch, with its closed-form gradient.

    K = (I + A)^-1 (I - A),    W = K D,    D = diag(d)

for a skew-symmetric (real) or skew-Hermitian (complex) ``A`` and a diagonal ``D`` with
entries of modulus one (METHODS.md section 1).

Precision: a float32 solve loses unitarity as ``I + A`` grows ill-conditioned (measured:
``|W^H W - I|`` reaches 3.5e-5 at n = 256, ``||A||_2 = 1e3``). Both the map and its
gradient are therefore computed in float64 (complex128) and rounded to the input dtype,
so ``W`` is unitary to the rounding of its dtype for any ``A``. The cost is one O(n^3)
solve per forward call, not per time step.
"""

from __future__ import annotations

import torch


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def _eye_like(A: torch.Tensor) -> torch.Tensor:
    return torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)


def _adjoint(X: torch.Tensor) -> torch.Tensor:
    """``X^H`` materialized. Lazy conjugate views (``.mH``, ``.conj()``) are avoided here:
    run inside a registered op under AOTAutograd (``torch.compile``), their conj bit was
    observed to be dropped (torch 2.13), silently giving ``X^T`` instead."""
    return torch.conj_physical(X.transpose(-2, -1))


def cayley(A: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
    """``W = (I + A)^-1 (I - A) diag(d)``, batched over leading dimensions.

    Args:
        A: ``(..., n, n)`` skew-symmetric or skew-Hermitian.
        d: ``(..., n)`` diagonal of ``D``, or ``None`` for ``D = I``. Same batch shape as ``A``.
    Returns:
        ``(..., n, n)`` in ``A``'s dtype.
    """
    Aw = A.to(_wide(A.dtype))
    eye = _eye_like(Aw)
    W = torch.linalg.solve(eye + Aw, eye - Aw)
    if d is not None:
        W = W * d.to(Aw.dtype).unsqueeze(-2)
    return W.to(A.dtype)


def cayley_backward(
    grad_W: torch.Tensor,
    A: torch.Tensor,
    d: torch.Tensor | None,
    W: torch.Tensor,
    *,
    want_grad_d: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Closed-form gradient of :func:`cayley` (METHODS.md section 1).

        grad A = -(I + A)^-H G (W^H + D^H)        (= -(I - A)^-1 G (W^H + D^H) for skew A)
        grad d = diag(K^H G),   K = W D^-1

    One extra solve with ``(I + A)^H``; nothing is differentiated through the
    factorization. ``grad A`` is the gradient with respect to every entry of ``A`` as if
    all were free, which equals autograd through ``torch.linalg.solve``; a skew
    parametrization ``A = X - X^H`` turns it into ``M - M^H`` by the chain rule.

    Args:
        grad_W: ``(..., n, n)`` gradient of the loss with respect to ``W``.
        A, d, W: the inputs and output of :func:`cayley`.
        want_grad_d: skip ``grad_d`` (e.g. scoRNN's fixed signs) when False.
    Returns:
        ``(grad_A, grad_d)``; ``grad_d`` is ``None`` when ``d`` is ``None`` or not wanted.
    """
    wide = _wide(A.dtype)
    Aw, Gw, Ww = A.to(wide), grad_W.to(wide), W.to(wide)
    eye = _eye_like(Aw)
    D_adj = eye if d is None else torch.diag_embed(torch.conj_physical(d.to(wide)))
    grad_A = -torch.linalg.solve(_adjoint(eye + Aw), Gw @ (_adjoint(Ww) + D_adj))
    grad_d = None
    if d is not None and want_grad_d:
        K = Ww / d.to(wide).unsqueeze(-2)
        grad_d = (torch.conj_physical(K) * Gw).sum(dim=-2).to(d.dtype)
    return grad_A.to(A.dtype), grad_d


def cayley_autograd(A: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
    """The same map differentiated by autograd through ``torch.linalg.solve``.

    The oracle for the closed-form gradient in tests; computes in ``A``'s own dtype.
    """
    eye = _eye_like(A)
    W = torch.linalg.solve(eye + A, eye - A)
    return W if d is None else W * d.unsqueeze(-2)
