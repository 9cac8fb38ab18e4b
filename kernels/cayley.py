"""Triton kernels of the Cayley map: ``(I + A)^-1`` by blocked Gauss-Jordan elimination.

``W = (I + A)^-1 (I - A) D = (2 (I + A)^-1 - I) D``, so the only O(n^3) work is the inverse
of ``M = I + A``, and the backward's ``(I + A)^-H`` is that same inverse's adjoint: it is
saved and reused (no second factorization, see ``fastunitary.reference.cayley_backward``).

Method: Gauss-Jordan elimination without pivoting, blocked by ``NB = 32``. No pivoting is
needed because ``M``'s Hermitian part is ``I`` (positive definite): elimination on such a
matrix is stable, and every pivot block stays invertible. A complex ``A`` is inverted as
its real ``2n x 2n`` embedding (whose symmetric part is also ``I``), from which the planes
of the complex inverse are read. For each block column ``k`` two launches run:

1. ``_pivot_row``: every program inverts the ``NB x NB`` pivot block in registers (unblocked
   Gauss-Jordan) and writes its tile of the scaled pivot row ``R = P M[k, :]`` (``P`` itself
   in the pivot tile) and its tile of the pivot column ``C = M[:, k]`` to side buffers;
2. ``_update``: every ``NB x NB`` tile of ``M`` is updated from ``R`` and ``C`` only
   (``M[i, j] -= C[i] R[j]``; the pivot row becomes ``R``, the pivot column ``-C P``),
   so no tile reads another tile that the same launch writes.

Products are ``tl.dot`` on float64 (DMMA tensor cores on sm_80/sm_90). Why float64: float32
elimination without pivoting reaches a relative error of 3e-4 against the float64 result
at n = 256 with ``||A||_2 = 1e3`` (measured with the same blocked algorithm in PyTorch),
far from the 1e-5 the map must meet for any A an optimizer can produce; on an H100 the
float64 tensor-core rate (67 TFLOP/s) equals the float32 FMA rate, so nothing is lost
there. No tf32 anywhere. Cost: ``2 N^3`` FLOPs (``N = n`` real, ``2n`` complex) and
``2 N / NB`` launches per inverse, batched over a leading dimension (layers, heads).
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl

#: Block size of the elimination (tile edge of every launch) and the warps per program:
#: with 4 warps triton 3.6 (the GPU machines) spills one register in _update on sm_90.
NB = 32
NUM_WARPS = 8

#: Tests set this to fill the side buffers R and C with NaN, so that any part a launch
#: reads before another has written it poisons the result.
FILL_OUTPUTS_WITH_NAN = False


@triton.jit
def _invert_block(T, NB: tl.constexpr):
    """Inverse of an ``NB x NB`` register tile by unblocked Gauss-Jordan (no pivoting)."""
    rows = tl.arange(0, NB)[:, None]
    cols = tl.arange(0, NB)[None, :]
    for p in range(NB):
        col_p = tl.sum(tl.where(cols == p, T, 0.0), axis=1)  # T[:, p]
        row_p = tl.sum(tl.where(rows == p, T, 0.0), axis=0)  # T[p, :]
        piv = tl.sum(tl.where(tl.arange(0, NB) == p, col_p, 0.0), axis=0)
        scaled = tl.where(tl.arange(0, NB) == p, 1.0, row_p) / piv  # new row p
        factor = tl.where(tl.arange(0, NB) == p, 0.0, col_p)
        T = tl.where(cols == p, 0.0, T) - factor[:, None] * scaled[None, :]
        T = tl.where(rows == p, scaled[None, :], T)
    return T


@triton.jit
def _pivot_row(m_ptr, r_ptr, c_ptr, N, k0, NB: tl.constexpr):
    """Program b * NT + j: R[b, :, tile j] = P M[b, k, tile j] (P in the pivot tile);
    C[b, tile j, :] = M[b, tile j, k]. (The batch is folded into grid axis 0: axis 1 is
    capped at 65535 programs on CUDA.)"""
    NT = tl.cdiv(N, NB)
    pid = tl.program_id(0)
    j = pid % NT
    b = (pid // NT).to(tl.int64)
    m = m_ptr + b * N * N
    idx = tl.arange(0, NB)
    rk = k0 + idx
    ok_k = rk < N
    cj = j * NB + idx
    ok_j = cj < N
    pivot = tl.load(m + rk[:, None] * N + rk[None, :], mask=ok_k[:, None] & ok_k[None, :], other=0.0)
    # pad a partial last block with the identity so that the block stays invertible
    pad = (idx[:, None] == idx[None, :]) & ~ok_k[:, None]
    P = _invert_block(tl.where(pad, 1.0, pivot), NB)
    if j == k0 // NB:
        R = P
    else:
        Mkj = tl.load(m + rk[:, None] * N + cj[None, :], mask=ok_k[:, None] & ok_j[None, :], other=0.0)
        R = tl.dot(P, Mkj)
    tl.store(r_ptr + b * NB * N + idx[:, None] * N + cj[None, :], R, mask=ok_j[None, :])
    Cj = tl.load(m + cj[:, None] * N + rk[None, :], mask=ok_j[:, None] & ok_k[None, :], other=0.0)
    tl.store(c_ptr + b * N * NB + cj[:, None] * NB + idx[None, :], Cj, mask=ok_j[:, None])


@triton.jit
def _update(m_ptr, r_ptr, c_ptr, N, k0, NT, NB: tl.constexpr):
    """Program (b * NT + i) * NT + j: the elimination step of block column k on tile (i, j)."""
    pid = tl.program_id(0)
    b = (pid // (NT * NT)).to(tl.int64)
    t = pid % (NT * NT)
    i = t // NT
    j = t % NT
    kb = k0 // NB
    idx = tl.arange(0, NB)
    ci = i * NB + idx
    cj = j * NB + idx
    ok = (ci < N)[:, None] & (cj < N)[None, :]
    m_tile = m_ptr + b * N * N + ci[:, None] * N + cj[None, :]
    Rj = tl.load(r_ptr + b * NB * N + idx[:, None] * N + cj[None, :], mask=(cj < N)[None, :], other=0.0)
    if i == kb:
        new = Rj  # the pivot row: P M[k, j], and P itself on the diagonal tile
    else:
        Ci = tl.load(c_ptr + b * N * NB + ci[:, None] * NB + idx[None, :], mask=(ci < N)[:, None], other=0.0)
        if j == kb:
            new = -tl.dot(Ci, Rj)  # the pivot column: -M[i, k] P
        else:
            new = tl.load(m_tile, mask=ok, other=0.0) - tl.dot(Ci, Rj)
    tl.store(m_tile, new, mask=ok)


def invert(M: torch.Tensor) -> torch.Tensor:
    """``M^-1`` for a batch ``(batch, N, N)`` float64 of matrices with positive definite
    symmetric part, computed in place (``M`` is overwritten when contiguous)."""
    if M.dtype != torch.float64:
        raise TypeError(f"the Triton Gauss-Jordan inverse runs in float64, got {M.dtype}")
    M = M.contiguous()  # callers pass a fresh tensor: it is overwritten with the inverse
    batch, N, _ = M.shape
    NT = triton.cdiv(N, NB)
    fill = float("nan") if FILL_OUTPUTS_WITH_NAN else 0.0
    R = torch.full((batch, NB, N), fill, dtype=M.dtype, device=M.device)
    C = torch.full((batch, N, NB), fill, dtype=M.dtype, device=M.device)
    with torch.cuda.device(M.device) if M.is_cuda else contextlib.nullcontext():
        for k0 in range(0, N, NB):
            _pivot_row[(batch * NT,)](M, R, C, N, k0, NB=NB, num_warps=NUM_WARPS)
            _update[(batch * NT * NT,)](M, R, C, N, k0, NT, NB=NB, num_warps=NUM_WARPS)
    return M


def forward(A: torch.Tensor, d: torch.Tensor | None):
    """``(W, (I + A)^-1)`` as planes; the arguments of ``fastunitary::cayley``.

    Args:
        A: ``(P, ..., n, n)`` float32 planes (``P = 1`` real, ``2`` complex).
        d: ``(P, ..., n)`` or ``None``.
    Returns:
        ``W`` ``(P, ..., n, n)`` float32 and the inverse's planes, float64.
    """
    if A.dtype != torch.float32:
        raise TypeError(f"the Triton Cayley map takes float32 planes, got {A.dtype}")
    P, n = A.shape[0], A.shape[-1]
    batch_shape = A.shape[1:-2]
    A64 = A.to(torch.float64).reshape(P, math.prod(batch_shape), n, n)  # -1 is ambiguous at n = 0
    if P == 2:  # real embedding [[Re, -Im], [Im, Re]]: skew-symmetric, 2n x 2n
        top = torch.cat([A64[0], -A64[1]], dim=-1)
        A64 = torch.cat([top, torch.cat([A64[1], A64[0]], dim=-1)], dim=-2)
    else:
        A64 = A64[0]
    eye = torch.eye(A64.shape[-1], dtype=torch.float64, device=A.device)
    inv = invert(A64 + eye)
    inv_planes = torch.stack([inv[:, :n, :n], inv[:, n:, :n]]) if P == 2 else inv.unsqueeze(0)
    inv_planes = inv_planes.reshape(P, *batch_shape, n, n).contiguous()
    # W = (2 M^-1 - I) D on the planes (complex product with d when P = 2)
    K = 2 * inv_planes
    K[0] -= torch.eye(n, dtype=torch.float64, device=A.device)
    if d is None:
        W = K
    elif P == 1:
        W = K * d.to(torch.float64).unsqueeze(-2)
    else:
        dr, di = (d[p].to(torch.float64).unsqueeze(-2) for p in (0, 1))
        W = torch.stack([K[0] * dr - K[1] * di, K[0] * di + K[1] * dr])
    return W.to(torch.float32).contiguous(), inv_planes


def aot_configs(explore: bool = False):
    """Every configuration the dispatch launches, for ci/compile_check.py.

    Yields ``(name, kernel attribute, signature, constexprs, num_warps, dispatched)``.
    """
    for kernel in ("_pivot_row", "_update"):
        fn = globals()[kernel]
        const = {"NB": NB}
        sig = {a: ("constexpr" if a in const else ("*fp64" if a.endswith("_ptr") else "i32"))
               for a in fn.arg_names}
        yield f"cayley.{kernel} NB={NB} warps={NUM_WARPS}", kernel, sig, const, NUM_WARPS, True
