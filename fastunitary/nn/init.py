"""Initializations of METHODS.md (section 1 and 3), as plain functions of a generator."""

from __future__ import annotations

import math

import torch


def cayley_skew_init(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Block-diagonal skew-symmetric ``A`` whose Cayley transform spreads eigenvalues on the circle.

    2x2 blocks ``[[0, s_k], [-s_k, 0]]`` with ``s_k = sqrt((1 - cos t_k) / (1 + cos t_k))``,
    ``t_k`` uniform in ``[0, pi/2]``; for odd ``n`` the last row and column are zero.
    (scoRNN/scuRNN practice; the eigenvalues of ``cayley(A)`` are ``exp(±i t_k)``.)

    Returns:
        ``(n, n)`` float32.
    """
    A = torch.zeros(n, n)
    k = n // 2
    t = torch.rand(k, generator=generator) * (math.pi / 2)
    s = torch.sqrt((1 - torch.cos(t)) / (1 + torch.cos(t)))
    idx = torch.arange(k) * 2
    A[idx, idx + 1] = s
    A[idx + 1, idx] = -s
    return A


def glorot_uniform_(
    weight: torch.Tensor, fan_in: int, fan_out: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fill ``weight`` in place from ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-a, a, generator=generator)


def scaling_signs(n: int, rho: int) -> torch.Tensor:
    """Diagonal of scoRNN's ``D``: ``n - rho`` ones followed by ``rho`` minus ones."""
    if not 0 <= rho <= n:
        raise ValueError(f"rho (number of -1 entries of D) must be in [0, {n}], got {rho}")
    return torch.cat([torch.ones(n - rho), -torch.ones(rho)])
