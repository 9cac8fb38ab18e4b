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

Three routes:

- ``spectral_radius_eig``: one float64 eigendecomposition with all eigenvectors and one
  inverse of them (left eigenvectors = rows of ``U^-1``). ``~25 n^3`` flops for the
  eigenvectors plus the inverse; used for ``n <= FULL_EIG_MAX_N`` and as the last fallback.
- A float32 (or lower precision) ``M`` with ``n > FULL_EIG_MAX_N``: powers, in the
  precision of the training step (``_dominant_by_powers``). ``P = M^64`` by six squarings
  (float32 GEMMs, the fastest dense operation there is), then ``P`` applied to a fixed
  random block of 32 columns (drawn from a seed derived from ``M``) until ``M^640`` (or
  more) has mapped it onto the dominant invariant subspace; Rayleigh-Ritz in float64 on
  that span and on the matching left span, and the two-sided Rayleigh quotient. The
  candidate is the Ritz value of largest modulus among the directions the powers really
  produced; it is accepted only if it is an eigenpair to float32 rounding (relative
  residual ``<= SUBSPACE_RESIDUAL_TOL``) and no other Ritz value could, within its
  first-order error bound (condition number times residual), be a larger eigenvalue: a
  near-tie that float32 cannot resolve is refused rather than guessed, and so is a
  candidate whose eigenvector a close non-normal neighbour would spoil. Accepted, the radius
  is float64-accurate before the cast; the gradient is accurate to about ``1e-6 kappa`` of
  its largest entry (``kappa`` the dominant eigenvalue's condition number), to ~1e-3 at
  worst next to a non-normal neighbour within 1e-3 in modulus. Refused (more than 32
  eigenvalues tied at the top modulus as for an orthogonal ``M``, such near-ties, a
  defective or nilpotent ``M``), that matrix alone takes the next route. ``O(n^3)`` like
  the others, but ~6 GEMMs instead of a Hessenberg QR: on a 2-core CPU about 6 times
  cheaper than the next route for a dense ``M`` at n = 512 and 1024, 1 to 2 times for
  ENRNN's initial ``M`` (``bench/spectral_radius.py``).
- A float64 ``M`` (or a refused float32 one) with ``n > FULL_EIG_MAX_N``: only the
  *eigenvalues*, in float32 (Hessenberg QR without accumulating Schur vectors, at half the
  width), pick the dominant one, then refine it and get both eigenvectors in float64 by
  shifted inverse iteration: one complex LU of ``M - s I`` (``s`` the float32 estimate), a
  few triangular solves, and the two-sided Rayleigh quotient ``w M u / (w u)``. Float32
  eigenvalues are within ~1e-7 ``||M||`` times their condition number of the exact ones,
  so the shift sits next to the dominant eigenvalue and each inverse-iteration step shrinks
  every other component by ``|lambda - s| / |lambda_j - s|``. The result is accepted only
  if both eigen-residuals are at float64 level (``||M u - lambda u|| <= RESIDUAL_TOL
  ||M||_F ||u||``, same for ``w``); otherwise (a defective or nearly-colliding dominant
  eigenvalue) the whole batch is recomputed by ``spectral_radius_eig``. ``M`` is first
  divided by a power of two near its largest entry (exact), so that its float32 copy
  neither overflows nor underflows and the residual test works at any scale. This route equals the full eigendecomposition to float64
  rounding; picking the dominant eigenvalue from float32 moduli can only pick a different
  one when two moduli agree to within the float32 error (~1e-7 relative for
  well-conditioned eigenvalues).
"""

from __future__ import annotations

import hashlib

import torch

from .._precision import ieee_float32_matmul

# Below this size the full float64 eigendecomposition is cheap (about 1 to 3 ms on a 2-core CPU).
FULL_EIG_MAX_N = 64
# Inverse-iteration steps after the float32 shift; each gains |lambda - s| / gap.
INVERSE_ITERATIONS = 3
# Relative eigen-residual accepted from the refinement (float64 backward error is ~1e-15 n).
RESIDUAL_TOL = 1e-10
# The float32 route: P = M^64 by squaring, then applied to the block 10, 16, ... times in
# all (M^640 ... M^4096), checked after each; the block width; the relative residual
# accepted (float32 rounding leaves 3e-8 to 1.1e-7 of ||M||_F for n = 80 ... 2048, and
# the gradient's error is about 40 times the residual).
SQUARINGS = 6
BLOCK_POWERS = (10, 16, 32, 64)
SUBSPACE_DIM = 32
SUBSPACE_RESIDUAL_TOL = 3e-7
# A Ritz direction lighter than this (relative to the heaviest) is float32 noise in the span.
SUBSPACE_WEIGHT_FLOOR = 1e-4
# Refused above this first-order eigenvector mixing (bounds over separation): a non-normal
# neighbour within ~1e-3 of the top leaves the gradient with >1e-4 relative error (Gaussian
# M reach ~1e-2; near-ties that spoil the gradient, 5e-2 and more).
SUBSPACE_MIXING_MAX = 3e-2


def _gradient(lam: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)`` from the dominant ``lam (...)``, right ``u`` and left ``w``
    (rows, ``w M = lam w``) eigenvectors, both ``(..., n)`` complex.

    ``alpha Re P + beta Im P = Re(conj(lam) P)`` and ``P`` is the rank-one ``w u^T / (w u)``,
    so the gradient is two real outer products (no complex ``n x n`` temporary).
    """
    sigma = lam.abs()
    # conj_physical, not the lazy .conj(): inside a custom op run from a compiled graph,
    # torch 2.13 drops the lazy conjugate bit in the division below (eager keeps it).
    scale = torch.conj_physical(lam) / ((w * u).sum(-1) * sigma.clamp_min(1e-300))  # (...)
    ws = w * scale[..., None]
    grad = ws.real.unsqueeze(-1) * u.real.unsqueeze(-2) - ws.imag.unsqueeze(-1) * u.imag.unsqueeze(-2)
    return sigma, grad


def _gather_last(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[..., index]`` for ``x`` ``(..., k)`` and ``index`` ``(...)``."""
    return x.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def _gather_column(X: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``X[..., :, index]`` for ``X`` ``(..., n, k)`` and ``index`` ``(...)``."""
    return X.gather(-1, index[..., None, None].expand(*X.shape[:-1], 1)).squeeze(-1)


def spectral_radius_eig(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)`` from the full float64 eigendecomposition.

    Args:
        M: ``(..., n, n)`` real.
    Returns:
        ``sigma`` ``(...)`` and the gradient ``(..., n, n)``, both in ``M``'s dtype.
    """
    lam, U = torch.linalg.eig(M.to(torch.float64))
    k = lam.abs().argmax(dim=-1)  # (...)
    lam_k, u = _gather_last(lam, k), _gather_column(U, k)
    # The eigenvector matrix is exactly singular only for a defective M whose Jordan
    # structure survives rounding (M = 0, a strictly triangular M): there the radius is not
    # differentiable and the derivative is returned as zero rather than an error.
    U_inv, info = torch.linalg.inv_ex(U)
    w = _gather_column(U_inv.mT, k)  # row k of U^-1
    sigma, grad = _gradient(lam_k, u, w)
    grad = torch.where((info == 0)[..., None, None], grad, torch.zeros_like(grad))
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
        wt = _unit(torch.linalg.lu_solve(LU, piv, torch.conj_physical(wt), adjoint=True).conj_physical().squeeze(-1)).unsqueeze(-1)
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


def _unit_frobenius(P: torch.Tensor) -> torch.Tensor:
    return P / torch.linalg.matrix_norm(P)[..., None, None]


def _ritz_pairs(M: torch.Tensor, Y: torch.Tensor):
    """Rayleigh-Ritz of ``M`` ``(..., n, n)`` float64 on the span of ``Y`` ``(..., n, k)``.

    Returns the Ritz values ``theta`` ``(..., k)``, unit Ritz vectors ``X`` and ``M X``
    ``(..., n, k)`` (complex128), each pair's relative residual
    ``||M x - theta x|| / ||M||_F`` and its weight in ``Y`` (the norm of ``Y``'s coordinates
    along it), both ``(..., k)``. The weights tell the directions the powers converged to
    from those that only float32 noise put into the span: Rayleigh-Ritz on a noise direction
    samples the field of values of ``M``, which for a non-normal ``M`` reaches beyond its
    spectral radius. The ``k x k`` eigenproblem is solved on the host (it is tiny; CUDA
    would route it there anyway).
    """
    Q, R = torch.linalg.qr(Y.to(torch.float64))
    MQ = M @ Q
    theta, Z = torch.linalg.eig((Q.mT @ MQ).cpu())
    theta, Z = theta.to(M.device), Z.to(M.device)
    X, MX = Q.to(Z.dtype) @ Z, MQ.to(Z.dtype) @ Z
    residual = torch.linalg.vector_norm(MX - X * theta.unsqueeze(-2), dim=-2) / torch.linalg.matrix_norm(M)[..., None]
    coordinates, info = torch.linalg.solve_ex(Z, R.to(Z.dtype))  # Y = X coordinates
    weight = torch.linalg.vector_norm(coordinates, dim=-1)
    weight = torch.where((info == 0)[..., None], weight, torch.nan)  # defective H: refused below
    return theta, X, MX, residual, weight


def _two_sided_ritz(M: torch.Tensor, right: torch.Tensor, left: torch.Tensor):
    """The dominant eigenpair of ``M`` ``(..., n, n)`` float64 seen from two subspaces.

    Rayleigh-Ritz of ``M`` on the span of ``right`` ``(..., n, k)`` and of ``M^T`` on
    ``left``; each right pair is matched to the left pair of nearest value, which gives its
    condition number ``kappa = ||u|| ||w|| / |w u|`` and a first-order bound
    ``kappa ||M u - theta u||`` on how far ``theta`` may lie from an eigenvalue. The
    candidate is the right pair of largest modulus among those with real weight in the span
    (``SUBSPACE_WEIGHT_FLOOR``: lighter ones are float32 noise). Accepted only if

    - the candidate and its left partner are accurate (relative residual at float32 level,
      ``SUBSPACE_RESIDUAL_TOL``), and so is the heaviest pair (the powers converged);
    - no other accurate pair could, within the two bounds, be an eigenvalue larger than the
      candidate's by more than ``1e-6`` relative (its conjugate excepted): a near-tie that
      float32 cannot resolve is refused, not guessed;
    - the candidate's eigenvector is not mixed with a close neighbour's beyond
      ``SUBSPACE_MIXING_MAX`` (first order: the two bounds over their separation);
    - ``w u`` is not ~0 (a defective eigenvalue).

    The eigenvalue is the two-sided Rayleigh quotient ``w M u / (w u)`` (error of the order
    of the product of the two residuals). Returns ``(lam, u, w, ok)`` as ``_refine``.
    """
    theta, U, MU, residual, weight = _ritz_pairs(M, right)
    theta_left, W, _, residual_left, _ = _ritz_pairs(M.mT, left)
    partner = (theta_left.unsqueeze(-2) - theta.unsqueeze(-1)).abs().argmin(dim=-1)  # (..., k)
    W = W.gather(-1, partner.unsqueeze(-2).expand_as(W))  # left vector for each right pair
    wu_all = (W * U).sum(-2)  # (..., k); unit columns
    bound = residual * torch.linalg.matrix_norm(M)[..., None] / wu_all.abs()  # kappa * ||r||
    accurate = (residual <= SUBSPACE_RESIDUAL_TOL) & (residual_left.gather(-1, partner) <= SUBSPACE_RESIDUAL_TOL)
    real_weight = weight >= SUBSPACE_WEIGHT_FLOOR * weight.amax(dim=-1, keepdim=True)
    i = torch.where(real_weight, theta.abs(), -1.0).argmax(dim=-1)
    theta_i, bound_i = _gather_last(theta, i), _gather_last(bound, i)
    lower = (theta_i.abs() - bound_i) * (1 + 1e-6)  # what sigma is at least, with the slack
    conjugate = ((theta - theta_i.conj().unsqueeze(-1)).abs() <= bound + bound_i.unsqueeze(-1)) \
        & (theta_i.imag.abs() > bound_i).unsqueeze(-1)
    others = real_weight & ~torch.nn.functional.one_hot(i, theta.shape[-1]).bool() & ~conjugate
    tie = (others & (theta.abs() + bound > lower.unsqueeze(-1))).any(dim=-1)
    # first-order size of the candidate eigenvector's error: its residual seen through the
    # nearest other eigenvalue (bounds over separation); the gradient inherits it
    mixing = torch.where(others, (bound + bound_i.unsqueeze(-1)) / (theta - theta_i.unsqueeze(-1)).abs(), 0.0).amax(dim=-1)
    u, Mu, w = _gather_column(U, i), _gather_column(MU, i), _gather_column(W, i)
    wu = _gather_last(wu_all, i)
    lam = (w * Mu).sum(-1) / wu
    ok = (
        _gather_last(accurate, i) & _gather_last(accurate, weight.argmax(dim=-1)) & ~tie
        & (mixing <= SUBSPACE_MIXING_MAX)
        & (wu.abs() > 1e-13)
        & torch.isfinite(lam)
    )
    return lam, u, w, ok


def _unit_columns(Y: torch.Tensor) -> torch.Tensor:
    # unlike _unit, no floor: a column that reached zero (nilpotent M) must turn NaN, which
    # _dominant_by_powers reads as "refuse"
    return Y / torch.linalg.vector_norm(Y, dim=-2, keepdim=True)


def _dominant_by_powers(M: torch.Tensor):
    """The dominant eigenpair of a float32 ``M`` from a high power of it applied to a block.

    ``M`` ``(..., n, n)`` float64 (the float32 input, widened). ``P = M^(2^SQUARINGS)`` by
    repeated squaring in float32 (each square rescaled to unit Frobenius norm), then ``P``
    applied ``q`` times to a random block of ``SUBSPACE_DIM`` columns (and ``P^T`` to
    a second copy, for the left subspace): ``M^(q 2^SQUARINGS)`` maps the block onto the
    dominant invariant subspace, the components along every other eigenvector shrunk by
    ``(|lambda_(k+1)| / |lambda_1|)^(q 2^SQUARINGS)``. A square costs ``2 n^3`` flops and
    an application ``4 n^2 k``, so the last doublings are cheaper as applications. After
    each ``q`` of ``BLOCK_POWERS``, ``_two_sided_ritz`` in float64 and its acceptance test;
    each matrix of a batch keeps the first answer accepted for it. The block is drawn from
    a seed derived from ``M`` (``_generator_from``). Returns ``((lam, u, w), done)``:
    ``lam (...)``, ``u``, ``w`` ``(..., n)`` as ``_refine``, meaningful where ``done (...)``
    (bool) is set.
    """
    n = M.shape[-1]
    block = torch.randn(n, min(SUBSPACE_DIM, n), generator=_generator_from(M)).to(M.device, torch.float32)
    # normalized in float64 first: a float32 Frobenius norm overflows above ~1e19
    P = _unit_frobenius(M).to(torch.float32)
    with ieee_float32_matmul():
        for _ in range(SQUARINGS):
            P = _unit_frobenius(P @ P)
        right, left, applied = block, block, 0
        found, done = None, torch.zeros(M.shape[:-2], dtype=torch.bool, device=M.device)
        for q in BLOCK_POWERS:
            for _ in range(q - applied):
                right, left = _unit_columns(P @ right), _unit_columns(P.mT @ left)
            applied = q
            finite = torch.isfinite(right).all(-1).all(-1) & torch.isfinite(left).all(-1).all(-1)
            lam, u, w, ok = _two_sided_ritz(M, torch.nan_to_num(right), torch.nan_to_num(left))
            # each matrix of a batch keeps the first answer it gets: none depends on the others
            new = ok & finite & ~done
            found = (lam, u, w) if found is None else tuple(
                torch.where(new.reshape(new.shape + (1,) * (x.dim() - new.dim())), x, y)
                for x, y in zip((lam, u, w), found))
            done = done | new
            if bool(done.all()) or not bool(finite.any()):  # one host sync per check
                break
    return found, done


def _generator_from(M: torch.Tensor) -> torch.Generator:
    """A CPU generator seeded from ``M``'s entries: the same ``M`` always gets the same
    block (eager equals compiled, runs repeat), while no fixed block exists that a matrix
    could be built to be orthogonal to."""
    digest = torch.stack((M.sum(), M.abs().sum(), M.diagonal(dim1=-2, dim2=-1).sum())).cpu().numpy().tobytes()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(digest, digest_size=8).digest(), "little"))


def spectral_radius(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)`` for real ``M``, by the route its size and dtype select
    (module docstring): float64-exact for a float64 ``M``, float32-accurate for a float32 one.

    Args:
        M: ``(..., n, n)`` real.
    Returns:
        ``sigma`` ``(...)`` and the gradient ``(..., n, n)``, both in ``M``'s dtype.
    """
    if M.numel() == 0:
        return spectral_radius_eig(M)
    # the radius of a matrix with NaN or Inf is undefined; LAPACK's float32 eigenvalues of
    # one ended the process (SGEBAL: "Parameter 3 was incorrect")
    if not bool(torch.isfinite(M).all()):
        raise ValueError("M contains NaN or Inf: its spectral radius is undefined")
    if M.shape[-1] <= FULL_EIG_MAX_N:
        return spectral_radius_eig(M)
    Mw = M.to(torch.float64)
    if M.dtype != torch.float64:
        (lam, u, w), done = _dominant_by_powers(Mw)
        sigma, grad = _gradient(lam, u, w)
        if not bool(done.all()):  # the refused matrices alone take the float64 route
            n = M.shape[-1]
            sigma, grad, refused = sigma.reshape(-1).clone(), grad.reshape(-1, n, n).clone(), ~done.reshape(-1)
            sigma[refused], grad[refused] = _spectral_radius_float64(Mw.reshape(-1, n, n)[refused])
            sigma, grad = sigma.reshape(M.shape[:-2]), grad.reshape(M.shape)
        return sigma.to(M.dtype), grad.to(M.dtype)
    return _spectral_radius_float64(M)


def _spectral_radius_float64(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 route: float32 eigenvalues, float64 inverse iteration, else the full
    eigendecomposition (module docstring). ``M`` ``(..., n, n)``; results in its dtype."""
    Mw = M.to(torch.float64)
    # Divided by a power of two (exact) near its largest entry: sigma(M) = c sigma(M / c)
    # and the gradient is the same. Unscaled, the float32 copy overflowed past 3.4e38, and
    # below ~1e-162 the residual test's squares underflowed to 0 <= 0, passing a wrong pair.
    peak = Mw.abs().amax(dim=(-2, -1))
    c = torch.where(peak > 0, torch.exp2(torch.floor(torch.log2(peak))), torch.ones_like(peak))
    Mw = Mw / c[..., None, None]
    lam32 = torch.linalg.eigvals(Mw.to(torch.float32))
    if not bool(torch.isfinite(lam32).all()):
        sigma, grad = spectral_radius_eig(Mw)
    else:
        lam, u, w, ok = _refine(Mw, _gather_last(lam32, lam32.abs().argmax(dim=-1)).to(torch.complex128))
        # One host sync per call (this runs inside an opaque op, once per optimizer step).
        sigma, grad = _gradient(lam, u, w) if bool(ok.all()) else spectral_radius_eig(Mw)
    return (sigma * c).to(M.dtype), grad.to(M.dtype)


def spectral_radius_autograd(M: torch.Tensor) -> torch.Tensor:
    """``max |eigvals(M)|`` differentiated by autograd through ``torch.linalg.eigvals``.

    An oracle only where the dominant eigenvalue is simple (autograd through ``eigvals`` is
    undefined at repeated eigenvalues).
    """
    return torch.linalg.eigvals(M).abs().max(dim=-1).values


# A dominant eigenvalue whose modulus is within this (relative to ||M||_F) of another
# eigenvalue's (its conjugate partner excepted) is treated as not simple: the radius has no
# second derivative there (a tie in modulus: no first either), or one of size ~1 / gap.
SIMPLE_GAP = 1e-8
# ... and so is one whose condition number ||u|| ||w|| / |w u| exceeds this: a defective
# (Jordan) eigenvalue, which rounding splits by only ~eps^(1/k) ||M||, looks separated.
SIMPLE_CONDITION_MAX = 1e6


def dominant_eigenpair(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The dominant eigenvalue of ``M`` and a unit right eigenvector, from the full float64
    eigendecomposition, and whether that eigenvalue is simple enough to differentiate twice.

    Args:
        M: ``(..., n, n)`` real (not differentiated).
    Returns:
        ``lam`` ``(...)`` and ``u`` ``(..., n)`` complex128; ``simple`` ``(...)`` bool: no
        other eigenvalue has a modulus within ``SIMPLE_GAP ||M||_F`` of ``|lam|`` (its
        conjugate partner excepted, which shares it exactly), the eigenvalue is not
        ill-conditioned (``SIMPLE_CONDITION_MAX``), and ``lam != 0``. Where any of this
        fails the radius has no (reliable) second derivative, and where moduli tie the
        forward's route may have picked another eigenvalue: the callers keep the forward's
        first derivative there.
    """
    Mw = M.detach().to(torch.float64)
    lam, U = torch.linalg.eig(Mw)
    k = lam.abs().argmax(dim=-1)
    lam_k, u = _gather_last(lam, k), _gather_column(U, k)
    tol = SIMPLE_GAP * torch.linalg.matrix_norm(Mw)
    modulus_gap = (lam.abs() - lam_k.abs().unsqueeze(-1)).abs()
    partner = ((lam - lam_k.conj().unsqueeze(-1)).abs() <= tol.unsqueeze(-1)) \
        & (lam_k.imag.abs() > tol).unsqueeze(-1)
    # not one_hot, whose size check syncs (data-dependent under vmap)
    itself = torch.arange(lam.shape[-1], device=lam.device) == k.unsqueeze(-1)
    gap = torch.where(itself | partner, torch.inf, modulus_gap).amin(dim=-1)
    # left eigenvector: row k of U^-1 (w u = 1), so the condition number is ||u|| ||w||
    U_inv, info = torch.linalg.inv_ex(U)
    w = _gather_column(U_inv.mT, k)
    condition = torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(w, dim=-1)
    simple = (gap > tol) & (lam_k.abs() > 0) & (info == 0) & (condition <= SIMPLE_CONDITION_MAX)
    return lam_k, _unit(u), simple


def spectral_radius_newton(M: torch.Tensor, lam: torch.Tensor, u: torch.Tensor,
                           steps: int = 2) -> torch.Tensor:
    """``|lambda(M)|`` as a differentiable function of ``M``: ``steps`` Newton steps on the
    bordered eigen-system ``[(M - lambda I) x; u0^H x - 1] = 0`` from ``(lam, u)``, an
    eigenpair of (a matrix equal in value to) ``M``, the one whose modulus is ``sigma``.

    At ``M`` itself the steps move nothing (the residual is rounding), so the value is
    ``sigma``; their derivatives are those of the eigenvalue: Newton's error after ``k``
    steps is of order ``|dM|^(2^k)``, so two steps give the first and second derivatives
    exactly (what a double backward takes). Unlike autograd through ``torch.linalg.eigvals``
    (whose backward divides by every eigenvalue gap), only the dominant eigenvalue needs to
    be simple: the bordered matrix is invertible exactly then, repeated eigenvalues
    elsewhere (a low-rank ``M``) are fine.

    Args:
        M: ``(..., n, n)`` real, differentiable (computed in float64).
        lam: ``(...)`` complex, the dominant eigenvalue (simple).
        u: ``(..., n)`` complex, its unit right eigenvector.
    Returns:
        ``sigma`` ``(...)`` float64.
    """
    n = M.shape[-1]
    Mc = M.to(torch.float64).to(torch.complex128)
    lam, u = lam.to(torch.complex128), u.to(torch.complex128)
    eye = torch.eye(n, dtype=Mc.dtype, device=M.device)
    normal = torch.cat([u.conj(), torch.zeros_like(u[..., :1])], dim=-1).unsqueeze(-2)
    x = u
    for _ in range(steps):
        J = torch.cat([torch.cat([Mc - lam[..., None, None] * eye, -x.unsqueeze(-1)], dim=-1),
                       normal], dim=-2)  # (..., n + 1, n + 1)
        residual = torch.cat([(Mc @ x.unsqueeze(-1)).squeeze(-1) - lam.unsqueeze(-1) * x,
                              ((u.conj() * x).sum(-1) - 1).unsqueeze(-1)], dim=-1)
        # inv, not solve: a grad of a jvp differentiates this step's forward-mode
        # derivative, which PyTorch's solve gets wrong (pytorch/pytorch#192540, torch 2.13)
        step = (torch.linalg.inv(J) @ residual.unsqueeze(-1)).squeeze(-1)
        x, lam = x - step[..., :n], lam - step[..., n]
    return lam.abs()
