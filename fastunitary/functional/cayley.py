"""``cayley``: the scaled Cayley transform ``W = (I + A)^-1 (I - A) diag(d)``.

Public function, dispatch, ``torch.library`` registration and autograd of the op. The
registered op works on stacked real planes ``(P, ..., n, n)`` with ``P = 1`` for a real
and ``P = 2`` (``[Re, Im]``) for a complex matrix, so that a compiled graph holds no complex
arithmetic. It returns ``W`` and ``(I + A)^-1`` (float64); the backward is the closed form
of METHODS.md section 1 computed from that inverse (no second solve).
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from .._backend import resolve_backend
from .._checks import check_same_device, check_tensor
from ._dispatch import (autocast_off, differentiable, kernel_module, recomputed_gradients,
                        register_stacked_vmap)


def _to_natural(x: torch.Tensor) -> torch.Tensor:
    # not torch.complex(re, im): its derivative takes .imag of the incoming gradient, which
    # for a conjugate view (what solve's backward returns) is a _neg_view, which vmap cannot
    # batch ("Batching rule not implemented for aten::_neg_view"): a per-sample second
    # derivative (vmap of grad of grad) in a complex A or D raised. The same values, exactly.
    return x[0] if x.shape[0] == 1 else x[0] + 1j * x[1]


def _to_stacked(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.real, x.imag]) if x.is_complex() else x.unsqueeze(0)


@torch.library.custom_op("fastunitary::cayley", mutates_args=())
def _cayley_op(
    A: torch.Tensor, d: Optional[torch.Tensor], backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, (I + A)^-1)`` as planes; the inverse (float64) is kept for the backward."""
    with autocast_off(A):
        if backend == "triton":
            return kernel_module("cayley").forward(A, d)
        An = _to_natural(A)
        M_inv = reference.cayley_inverse(An)
        W = reference.cayley_from_inverse(M_inv, None if d is None else _to_natural(d), An.dtype)
        return _to_stacked(W).contiguous(), _to_stacked(M_inv).contiguous()


@_cayley_op.register_fake
def _(A, d, backend):
    contiguous = torch.contiguous_format
    return (torch.empty_like(A, memory_format=contiguous),
            torch.empty_like(A, dtype=torch.float64, memory_format=contiguous))


@torch.library.custom_op("fastunitary::cayley_backward", mutates_args=())
def _cayley_backward_op(
    grad_W: torch.Tensor,
    M_inv: torch.Tensor,
    d: Optional[torch.Tensor],
    W: torch.Tensor,
    want_grad_d: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad A, grad d)`` as planes; ``grad d`` is empty unless ``want_grad_d``.

    Three matrix products on the saved inverse, the same on every backend (cuBLAS on CUDA).
    """
    with autocast_off(W):
        dn = None if d is None else _to_natural(d)
        gA, gd = reference.cayley_backward(
            _to_natural(grad_W), _to_natural(M_inv), dn, _to_natural(W), want_grad_d=want_grad_d
        )
        gd = W.new_empty(0) if gd is None else _to_stacked(gd).contiguous()
        return _to_stacked(gA).contiguous(), gd


@_cayley_backward_op.register_fake
def _(grad_W, M_inv, d, W, want_grad_d):
    contiguous = torch.contiguous_format
    gd = torch.empty_like(d, memory_format=contiguous) if (d is not None and want_grad_d) \
        else W.new_empty(0)
    return torch.empty_like(W, memory_format=contiguous), gd


def _setup_context(ctx, inputs, output):
    A, d, backend = inputs
    W, M_inv = output
    ctx.has_d = d is not None
    ctx.mark_non_differentiable(M_inv)
    # A itself only for a double backward (n x n: nothing beside the inverse kept anyway)
    ctx.save_for_backward(M_inv, d, W, A)


def _backward(ctx, grad_W, _grad_M_inv):
    M_inv, d, W, A = ctx.saved_tensors
    want_d = ctx.has_d and ctx.needs_input_grad[1]  # scoRNN's D is a buffer: no gradient
    if torch.is_grad_enabled():  # create_graph: the gradient will be differentiated again
        gA, gd = recomputed_gradients(_differentiable_cayley, (A, d),
                                      (ctx.needs_input_grad[0], want_d), (grad_W,))
        return gA, gd, None
    gA, gd = _cayley_backward_op(grad_W.contiguous(), M_inv, d, W, want_d)
    return gA, (gd if want_d else None), None


def _differentiable_cayley(A: torch.Tensor, d: Optional[torch.Tensor]) -> torch.Tensor:
    """The map on planes by autograd through ``torch.linalg.solve`` in float64 (the op's
    precision): what a double backward differentiates."""
    An = _to_natural(A)
    wide = torch.complex128 if An.is_complex() else torch.float64
    W = reference.cayley_autograd(An.to(wide), None if d is None else _to_natural(d).to(wide))
    return _to_stacked(W).to(A.dtype)


def _cayley_for_forward_mode(A: torch.Tensor, d: Optional[torch.Tensor], backend: str):
    """The op's outputs in forward mode: ``W`` through ``reference.cayley_by_inverse`` in
    float64 (whose forward-mode derivative can be differentiated again), and ``None`` for
    the inverse, which only the backward reads."""
    An = _to_natural(A)
    wide = torch.complex128 if An.is_complex() else torch.float64
    W = reference.cayley_by_inverse(An.to(wide), None if d is None else _to_natural(d).to(wide))
    return _to_stacked(W).to(A.dtype), None


_cayley = differentiable(_cayley_op, _backward, _setup_context,
                         _cayley_for_forward_mode)


# The ops take batches of matrices, (P, ..., n, n): the vmapped dimension is one more.
register_stacked_vmap(_cayley_op, 1)
register_stacked_vmap(_cayley_backward_op, 1)


def cayley_planes(A: torch.Tensor, d: Optional[torch.Tensor], backend: str) -> torch.Tensor:
    """The registered op on stacked planes, for modules that already hold planes.

    Args:
        A: ``(P, ..., n, n)`` real, ``P = 1`` (real) or ``2`` (``[Re A, Im A]``).
        d: ``(P, ..., n)`` or ``None``.
        backend: a name accepted by :func:`cayley`.
    Returns:
        ``(P, ..., n, n)``: the planes of ``W``.
    """
    if A.dim() < 3 or A.shape[0] not in (1, 2) or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must have shape (P, ..., n, n) with P = 1 (real) or 2 (complex "
                         f"planes), got {tuple(A.shape)}")
    if d is not None and tuple(d.shape) != tuple(A.shape[:-1]):
        raise ValueError(f"d must have shape {tuple(A.shape[:-1])} = (P, ..., n) like A, "
                         f"got {tuple(d.shape)}")
    unsupported = "the Triton Cayley map takes float32 planes" if A.dtype != torch.float32 else None
    W, _ = _cayley(A, d, resolve_backend("cayley", backend, A.device, unsupported))
    return W


def cayley(
    A: torch.Tensor, d: Optional[torch.Tensor] = None, *, backend: str = "auto"
) -> torch.Tensor:
    """Scaled Cayley transform ``W = (I + A)^-1 (I - A) diag(d)``.

    Unitary (orthogonal) for skew-Hermitian (skew-symmetric) ``A`` and ``|d| = 1``.
    Differentiable with the closed-form gradient of METHODS.md section 1; the gradient
    of ``A`` treats every entry as free (what autograd through ``torch.linalg.solve``
    gives). The reference backend solves in float64 and rounds, so ``W`` is unitary to
    the rounding of its dtype for any ``A``.

    Args:
        A: ``(..., n, n)`` real skew-symmetric or complex skew-Hermitian. Skewness is the
            caller's contract and is not checked (it would cost a device sync).
        d: ``(..., n)`` diagonal of ``D``: ``±1`` (real) or unit modulus (complex); ``None``
            for ``D = I``. Its batch dimensions broadcast with those of ``A``.
        backend: ``"auto"``, ``"reference"`` or ``"triton"``.
    Returns:
        ``W``: ``(..., n, n)``, the dtype of ``A``.
    """
    check_tensor("A", A)
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must have shape (..., n, n) (square), got {tuple(A.shape)}")
    n = A.shape[-1]
    if d is not None:
        check_tensor("d", d)
        check_same_device("A", A, d=d)
        if d.dim() < 1 or d.shape[-1] != n:
            raise ValueError(f"d must have shape (..., n) with n = {n}, got {tuple(d.shape)}")
        if d.is_complex() and not A.is_complex():
            raise TypeError("d is complex but A is real; use a complex A (scuRNN) or a real d")
        try:
            batch = torch.broadcast_shapes(A.shape[:-2], d.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"batch dimensions of A {tuple(A.shape[:-2])} and d {tuple(d.shape[:-1])} "
                f"do not broadcast"
            ) from None
        A = A.expand(*batch, n, n)
        d = d.to(A.dtype).expand(*batch, n)
    Wp = cayley_planes(_to_stacked(A), None if d is None else _to_stacked(d), backend)
    return _to_natural(Wp)
