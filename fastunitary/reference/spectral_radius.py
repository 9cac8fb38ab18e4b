"""The spectral radius and its closed-form gradient (METHODS.md section 4), in plain PyTorch.

``sigma(M) = |lambda_max(M)|``. With ``lambda = alpha + i beta`` the dominant eigenvalue,
``u`` its right and ``v`` its left eigenvector and ``P = conj(v) u^T / (v^H u)``,

    d sigma / d M = (alpha Re P + beta Im P) / sigma,

which gives the gradient of ``W2 = M / sigma`` in METHODS.md by the chain rule:
``grad M = G / sigma - <G, M> / sigma^3 (alpha Re P + beta Im P)``. Writing ``w = v^H``
(a row with ``w M = lambda w``), ``P[i, j] = w[i] u[j] / (w u)``. For a real ``M`` whose
dominant eigenvalues are a conjugate pair, either member gives the same result. Where the
dominant eigenvalue is not simple (two distinct eigenvalues of equal modulus, or a defective
one) the spectral radius is not differentiable; the formula then returns the derivative
along the eigenvalue it found.

Two routes, same result to float64 rounding:

- ``spectral_radius_eig``: one float64 eigendecomposition with all eigenvectors and one
  inverse of them (left eigenvectors = rows of ``U^-1``). ``~25 n^3`` flops for the
  eigenvectors plus the inverse; used for ``n <= FULL_EIG_MAX_N`` and as the fallback.
- ``spectral_radius`` for larger ``n``: only the *eigenvalues*, in float32 (Hessenberg QR
  without accumulating Schur vectors, at half the width: ~2.5x cheaper than the float64
  eigendecomposition at n = 1024 on the CPU), pick the dominant one, then refine it and
  get both eigenvectors in float64 by shifted inverse iteration: one complex LU of
  ``M - s I`` (``s`` the float32 estimate), a few triangular solves, and the two-sided
  Rayleigh quotient ``w M u / (w u)``. Float32 eigenvalues are within ~1e-7 ``||M||``
  times their condition number of the exact ones, so the shift sits next to the dominant
  eigenvalue and each inverse-iteration step shrinks every other component by
  ``|lambda - s| / |lambda_j - s|``. The result is accepted only if both eigen-residuals
  are at float64 level (``||M u - lambda u|| <= RESIDUAL_TOL ||M||_F ||u||``, same for
  ``w``); otherwise (a defective or nearly-colliding dominant eigenvalue, an overflowing
  float32 copy) the whole batch is recomputed by ``spectral_radius_eig``. So the answer
  is never the float32 estimate itself.

Picking the dominant eigenvalue from float32 moduli can only pick a different one when two
moduli agree to within the float32 error; the radius returned then differs from the
largest by no more than that error (~1e-7 relative for well-conditioned eigenvalues).
"""

from __future__ import annotations

import torch

# Below this size the full float64 eigendecomposition is cheap (about 1 to 3 ms on a 2-core CPU).
FULL_EIG_MAX_N = 64
# Inverse-iteration steps after the float32 shift; each gains |lambda - s| / gap.
INVERSE_ITERATIONS = 3
# Relative eigen-residual accepted from the refinement (float64 backward error is ~1e-15 n).
RESIDUAL_TOL = 1e-10


def _gradient(lam: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)`` from the dominant ``lam (...)``, right ``u`` and left ``w``
    (rows, ``w M = lam w``) eigenvectors, both ``(..., n)`` complex."""
    P = (w.unsqueeze(-1) * u.unsqueeze(-2)) / (w * u).sum(-1)[..., None, None]
    sigma = lam.abs()
    a, b = lam.real[..., None, None], lam.imag[..., None, None]
    return sigma, (a * P.real + b * P.imag) / sigma.clamp_min(1e-300)[..., None, None]


def spectral_radius_eig(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)`` from the full float64 eigendecomposition.

    Args:
        M: ``(..., n, n)`` real.
    Returns:
        ``sigma`` ``(...)`` and the gradient ``(..., n, n)``, both in ``M``'s dtype.
    """
    lam, U = torch.linalg.eig(M.to(torch.float64))
    k = lam.abs().argmax(dim=-1, keepdim=True)  # (..., 1)
    lam_k = lam.gather(-1, k).squeeze(-1)  # (...)
    u = U.gather(-1, k.unsqueeze(-2).expand(*U.shape[:-1], 1)).squeeze(-1)  # U[..., :, k]
    w = torch.linalg.inv(U).gather(-2, k.unsqueeze(-1).expand(*U.shape[:-2], 1, U.shape[-1]))
    sigma, grad = _gradient(lam_k, u, w.squeeze(-2))
    return sigma.to(M.dtype), grad.to(M.dtype)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-300)


def _refine(M: torch.Tensor, shift: torch.Tensor):
    """Shifted inverse iteration for the right and left eigenvectors next to ``shift``.

    ``M`` ``(..., n, n)`` float64, ``shift`` ``(...)`` complex128. Returns
    ``(lam, u, w, ok)``; ``ok`` ``(...)`` bool says whether both residuals are at float64
    level.
    """
    n = M.shape[-1]
    Mc = M.to(torch.complex128)
    eye = torch.eye(n, dtype=Mc.dtype, device=M.device)
    # Nudge the shift off the float32 value so that M - s I is never exactly singular
    # (a float32 eigenvalue can be exact, e.g. for diagonal M); the nudge is far below
    # the float32 error, so convergence is unchanged.
    s = shift * (1 + 1e-12) + 1e-12j * shift.abs().clamp_min(1.0)
    LU, piv, _ = torch.linalg.lu_factor_ex(Mc - s[..., None, None] * eye)
    # A fixed pseudo-random start: ones can be orthogonal to an eigenvector (e.g. for
    # permutation-like M); a seeded vector is not, except with probability zero.
    g = torch.Generator().manual_seed(0)
    start = torch.randn(n, dtype=torch.float64, generator=g).to(M.device, Mc.dtype)
    u = start.expand(*M.shape[:-2], n).unsqueeze(-1)
    wt = u.clone()  # w^T as a column
    for _ in range(INVERSE_ITERATIONS):
        u = _unit(torch.linalg.lu_solve(LU, piv, u).squeeze(-1)).unsqueeze(-1)
        # (M - sI)^-T c = conj((M - sI)^-H conj(c)): reuse the same LU for the left vector.
        wt = _unit(torch.linalg.lu_solve(LU, piv, wt.conj(), adjoint=True).conj().squeeze(-1)).unsqueeze(-1)
    u, w = u.squeeze(-1), wt.squeeze(-1)
    Mu = (Mc @ u.unsqueeze(-1)).squeeze(-1)
    wM = (w.unsqueeze(-2) @ Mc).squeeze(-2)
    wu = (w * u).sum(-1)
    lam = (w * Mu).sum(-1) / wu
    scale = torch.linalg.matrix_norm(M) * RESIDUAL_TOL
    ok = (
        (torch.linalg.vector_norm(Mu - lam[..., None] * u, dim=-1) <= scale)
        & (torch.linalg.vector_norm(wM - lam[..., None] * w, dim=-1) <= scale)
        & (wu.abs() > 1e-13)  # w u -> 0 is a defective (Jordan) eigenvalue
        & torch.isfinite(lam)
    )
    return lam, u, w, ok


def spectral_radius(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)`` for real ``M``, in float64 arithmetic.

    Args:
        M: ``(..., n, n)`` real.
    Returns:
        ``sigma`` ``(...)`` and the gradient ``(..., n, n)``, both in ``M``'s dtype.
    """
    if M.shape[-1] <= FULL_EIG_MAX_N or M.numel() == 0:
        return spectral_radius_eig(M)
    Mw = M.to(torch.float64)
    lam32 = torch.linalg.eigvals(Mw.to(torch.float32))
    if not bool(torch.isfinite(lam32).all()):
        return spectral_radius_eig(M)
    k = lam32.abs().argmax(dim=-1, keepdim=True)
    lam, u, w, ok = _refine(Mw, lam32.gather(-1, k).squeeze(-1).to(torch.complex128))
    # One host sync per call (this runs inside an opaque op, once per optimizer step).
    if not bool(ok.all()):
        return spectral_radius_eig(M)
    sigma, grad = _gradient(lam, u, w)
    return sigma.to(M.dtype), grad.to(M.dtype)


def spectral_radius_autograd(M: torch.Tensor) -> torch.Tensor:
    """``max |eigvals(M)|`` differentiated by autograd through ``torch.linalg.eigvals``.

    An oracle only where the dominant eigenvalue is simple (autograd through ``eigvals`` is
    undefined at repeated eigenvalues).
    """
    return torch.linalg.eigvals(M).abs().max(dim=-1).values
