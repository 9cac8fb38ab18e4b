"""The scaled Cayley transform in plain PyTorch, with its closed-form gradient.

    K = (I + A)^-1 (I - A),    W = K D,    D = diag(d)

for a skew-symmetric (real) or skew-Hermitian (complex) ``A`` and a diagonal ``D`` with
entries of modulus one (METHODS.md section 1).

Precision: a float32 solve loses unitarity as ``I + A`` grows ill-conditioned (measured:
``|W^H W - I|`` reaches 3.5e-5 at n = 256, ``||A||_2 = 1e3``). Both the map and its
gradient are therefore computed in float64 (complex128) and rounded to the input dtype,
so ``W`` is unitary to the rounding of its dtype for any ``A``. The cost is one O(n^3)
inversion per forward call, not per time step; the backward reuses the inverse.
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


def cayley_inverse(A: torch.Tensor) -> torch.Tensor:
    """``(I + A)^-1`` in float64 (complex128): the factor the map and its gradient share.

    Args:
        A: ``(..., n, n)``.
    Returns:
        ``(..., n, n)``, float64 or complex128.
    """
    Aw = A.to(_wide(A.dtype))
    return torch.linalg.inv(_eye_like(Aw) + Aw)


def cayley_from_inverse(
    M_inv: torch.Tensor, d: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """``W = (2 (I + A)^-1 - I) diag(d)``, since ``(I + A)^-1 (I - A) = 2 (I + A)^-1 - I``."""
    W = 2 * M_inv - _eye_like(M_inv)
    if d is not None:
        W = W * d.to(M_inv.dtype).unsqueeze(-2)
    return W.to(dtype)


def cayley(A: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
    """``W = (I + A)^-1 (I - A) diag(d)``, batched over leading dimensions.

    Args:
        A: ``(..., n, n)`` skew-symmetric or skew-Hermitian.
        d: ``(..., n)`` diagonal of ``D``, or ``None`` for ``D = I``. Same batch shape as ``A``.
    Returns:
        ``(..., n, n)`` in ``A``'s dtype.
    """
    return cayley_from_inverse(cayley_inverse(A), d, A.dtype)


def cayley_backward(
    grad_W: torch.Tensor,
    M_inv: torch.Tensor,
    d: torch.Tensor | None,
    W: torch.Tensor,
    *,
    want_grad_d: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Closed-form gradient of :func:`cayley` (METHODS.md section 1) from the saved inverse.

        grad A = -(I + A)^-H G (W^H + D^H)        (= -(I - A)^-1 G (W^H + D^H) for skew A)
        grad d = diag(K^H G),   K = (I + A)^-1 (I - A) = 2 (I + A)^-1 - I

    The forward's inverse is reused: no solve, no factorization, nothing differentiated
    through an elimination; three matrix products in float64. ``grad A`` is the gradient
    with respect to every entry of ``A`` as if all were free, which equals autograd through
    ``torch.linalg.solve``; a skew parametrization ``A = X - X^H`` turns it into
    ``M - M^H`` by the chain rule.

    Args:
        grad_W: ``(..., n, n)`` gradient of the loss with respect to ``W``.
        M_inv: ``(..., n, n)`` ``(I + A)^-1`` from :func:`cayley_inverse` (float64).
        d: the forward's ``d`` or ``None``.  W: the forward's output.
        want_grad_d: skip ``grad_d`` (e.g. scoRNN's fixed signs) when False.
    Returns:
        ``(grad_A, grad_d)`` in the dtypes of ``W`` and ``d``; ``grad_d`` is ``None`` when
        ``d`` is ``None`` or not wanted.
    """
    wide = M_inv.dtype
    Gw, Ww = grad_W.to(wide), W.to(wide)
    eye = _eye_like(M_inv)
    D_adj = eye if d is None else torch.diag_embed(torch.conj_physical(d.to(wide)))
    grad_A = -(_adjoint(M_inv) @ Gw @ (_adjoint(Ww) + D_adj))
    grad_d = None
    if d is not None and want_grad_d:
        K = 2 * M_inv - eye
        grad_d = (torch.conj_physical(K) * Gw).sum(dim=-2).to(d.dtype)
    return grad_A.to(W.dtype), grad_d


def cayley_autograd(A: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
    """The same map differentiated by autograd through ``torch.linalg.solve``.

    The oracle for the closed-form gradient in tests; computes in ``A``'s own dtype.
    """
    eye = _eye_like(A)
    W = torch.linalg.solve(eye + A, eye - A)
    return W if d is None else W * d.unsqueeze(-2)


def cayley_by_inverse(A: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
    """The same map as ``inv(I + A) (I - A) D``, in ``A``'s own dtype: the form the op's
    forward-mode derivative runs through. Reverse over forward (``grad`` of ``jvp``)
    differentiates that derivative again, and PyTorch's forward-mode rule of
    ``torch.linalg.solve`` gives a wrong derivative there, silently (pytorch/pytorch#192540,
    torch 2.13); the inverse's rule is right."""
    eye = _eye_like(A)
    W = torch.linalg.inv(eye + A) @ (eye - A)
    return W if d is None else W * d.unsqueeze(-2)
