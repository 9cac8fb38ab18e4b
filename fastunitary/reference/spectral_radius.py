"""The spectral radius and its closed-form gradient (METHODS.md section 4), in plain PyTorch.

``sigma(M) = |lambda_max(M)|``. With ``lambda = alpha + i beta`` the dominant eigenvalue,
``u`` its right and ``v`` its left eigenvector and ``P = conj(v) u^T / (v^H u)``,

    d sigma / d M = (alpha Re P + beta Im P) / sigma,

which gives the gradient of ``W2 = M / sigma`` in METHODS.md by the chain rule:
``grad M = G / sigma - <G, M> / sigma^3 (alpha Re P + beta Im P)``. The left eigenvectors
are the rows of ``U^-1`` (``U`` the right eigenvectors), for which ``v^H u = 1`` already,
so ``P[i, j] = (U^-1)[k, i] U[j, k]``. For a real ``M`` whose dominant eigenvalues are a
conjugate pair, either member gives the same result. Where the dominant eigenvalue is not
simple (two distinct eigenvalues of equal modulus, or a defective one) the spectral radius
is not differentiable; the formula then returns the derivative along the eigenvalue
``torch.linalg.eig`` lists first among them.

Computed in float64 (complex128): one eigendecomposition and one inverse of size n per
call, batched over leading dimensions.
"""

from __future__ import annotations

import torch


def spectral_radius(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)`` for real ``M``.

    Args:
        M: ``(..., n, n)`` real.
    Returns:
        ``sigma`` ``(...)`` and the gradient ``(..., n, n)``, both in ``M``'s dtype.
    """
    Mw = M.to(torch.float64)
    lam, U = torch.linalg.eig(Mw)
    k = lam.abs().argmax(dim=-1, keepdim=True)  # (..., 1)
    lam_k = lam.gather(-1, k).squeeze(-1)  # (...)
    u = U.gather(-1, k.unsqueeze(-2).expand(*U.shape[:-1], 1)).squeeze(-1)  # U[..., :, k]
    v_h = torch.linalg.inv(U).gather(-2, k.unsqueeze(-1).expand(*U.shape[:-2], 1, U.shape[-1]))
    P = v_h.squeeze(-2).unsqueeze(-1) * u.unsqueeze(-2)  # P[i, j] = (U^-1)[k, i] U[j, k]
    sigma = lam_k.abs()
    a, b = lam_k.real[..., None, None], lam_k.imag[..., None, None]
    grad = (a * P.real + b * P.imag) / sigma.clamp_min(1e-300)[..., None, None]
    return sigma.to(M.dtype), grad.to(M.dtype)


def spectral_radius_autograd(M: torch.Tensor) -> torch.Tensor:
    """``max |eigvals(M)|`` differentiated by autograd through ``torch.linalg.eigvals``.

    An oracle only where the dominant eigenvalue is simple (autograd through ``eigvals`` is
    undefined at repeated eigenvalues).
    """
    return torch.linalg.eigvals(M).abs().max(dim=-1).values
