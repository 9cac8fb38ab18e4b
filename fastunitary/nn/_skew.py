"""Skew-symmetric / skew-Hermitian matrices built exactly from free parameters.

The Cayley map gives a unitary W only for an exactly skew A, and an optimizer does not
preserve skewness by itself. So A is never a parameter: the parameters are the free
entries, and A is assembled from them on every forward call.

- real (scoRNN): ``A = X - X^T`` with ``X`` strictly upper triangular, ``n(n-1)/2`` entries;
- complex (scuRNN): ``Re A = X - X^T`` as above and ``Im A = Y + Y^T - diag(Y)`` with ``Y``
  upper triangular including the diagonal, ``n(n+1)/2`` entries (a purely imaginary
  diagonal). ``n^2`` real parameters in all, the dimension of the skew-Hermitian matrices.

By the chain rule the gradient of the packed entries is the upper triangle of
``M - M^H`` (``M`` the full gradient of A), which for the real case is the published
scoRNN update ``V^T - V``.
"""

from __future__ import annotations

import torch


def packed_sizes(n: int) -> tuple[int, int]:
    """Number of free entries of ``Re A`` (strict upper) and ``Im A`` (upper with diagonal)."""
    return n * (n - 1) // 2, n * (n + 1) // 2


def triu_indices(n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict and non-strict upper-triangle indices, each ``(2, k)``. Built where they are
    used rather than kept as buffers: a buffer that is not in the state dict stays
    uninitialized after ``to_empty`` (a module built on the meta device)."""
    return torch.triu_indices(n, n, 1, device=device), torch.triu_indices(n, n, 0, device=device)


def skew_planes(packed_re: torch.Tensor, packed_im: torch.Tensor | None, n: int) -> torch.Tensor:
    """Assemble A as stacked planes: ``(1, n, n)`` real or ``(2, n, n)`` ``[Re A, Im A]``."""
    idx_strict, idx_upper = triu_indices(n, packed_re.device)
    X = packed_re.new_zeros(n, n).index_put((idx_strict[0], idx_strict[1]), packed_re)
    A_re = X - X.t()
    if packed_im is None:
        return A_re.unsqueeze(0)
    Y = packed_im.new_zeros(n, n).index_put((idx_upper[0], idx_upper[1]), packed_im)
    A_im = Y + Y.t() - torch.diag_embed(torch.diagonal(Y))
    return torch.stack([A_re, A_im])


def pack(A: torch.Tensor):
    """Inverse of :func:`skew_planes` for an exactly skew ``A`` (real or complex ``(n, n)``)."""
    idx_strict, idx_upper = triu_indices(A.shape[-1], A.device)
    re = A.real if A.is_complex() else A
    packed_re = re[idx_strict[0], idx_strict[1]]
    packed_im = A.imag[idx_upper[0], idx_upper[1]] if A.is_complex() else None
    return packed_re, packed_im
