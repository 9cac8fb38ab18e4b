"""``momentum_scan``: ``v_t = mu_t v_{t-1} + step u_t`` over time, as one op (MomentumRNN).

Public function, dispatch, ``torch.library`` registration and autograd. The registered
pair ``fastunitary::momentum_scan`` / ``fastunitary::momentum_scan_backward`` computes the
generic linear scan ``v_t = a_t v_{t-1} + b_t`` and its reverse (see
:mod:`fastunitary.reference.momentum_scan`); ``b = step * u`` and the broadcast of ``mu``
to ``a`` are ordinary tensor ops around it, so autograd reduces their gradients to the
shapes the user gave (a scalar ``mu``, a per-channel ``step``) by itself.
"""

from __future__ import annotations

import numbers
from typing import Optional

import torch

from .. import reference
from .._backend import resolve_backend
from .._checks import check_same_device, check_shape, check_tensor
from ._dispatch import (BATCH_MAJOR, TIME_MAJOR, autocast_off, differentiable, kernel_module,
                        register_folded_vmap)


@torch.library.custom_op("fastunitary::momentum_scan", mutates_args=())
def _scan_op(a: torch.Tensor, b: torch.Tensor, v0: Optional[torch.Tensor], backend: str) -> torch.Tensor:
    with autocast_off(b):
        if backend == "triton":
            return kernel_module("momentum_scan").forward(a, b, v0)
        return reference.linear_scan(a, b, v0)


@_scan_op.register_fake
def _(a, b, v0, backend):
    return torch.empty_like(b, memory_format=torch.contiguous_format)


@torch.library.custom_op("fastunitary::momentum_scan_backward", mutates_args=())
def _scan_backward_op(grad_v: torch.Tensor, a: torch.Tensor, backend: str) -> torch.Tensor:
    with autocast_off(grad_v):
        if backend == "triton":
            return kernel_module("momentum_scan").backward(grad_v, a)
        return reference.linear_scan_backward(grad_v, a)


@_scan_backward_op.register_fake
def _(grad_v, a, backend):
    return torch.empty_like(grad_v, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    a, b, v0, backend = inputs
    ctx.backend = backend
    ctx.has_v0 = v0 is not None
    need_a = ctx.needs_input_grad[0]
    # v_{t-1} is needed only for the gradient of a (a learnable mu)
    ctx.save_for_backward(a, output if need_a else None, v0 if need_a else None)


def _backward(ctx, grad_v):
    a, v, v0 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the gradient will be differentiated again
        # gbar_t = grad_t + a_{t+1} gbar_{t+1}: the differentiable loop on reversed inputs
        a_next = torch.cat([a.expand_as(grad_v)[1:], torch.zeros_like(grad_v[:1])])
        gbar = reference.linear_scan_loop(a_next.flip(0), grad_v.flip(0), None).flip(0)
    else:
        gbar = _scan_backward_op(grad_v, a, ctx.backend)
    grad_a = grad_v0 = None
    if ctx.needs_input_grad[0]:
        v_prev = torch.cat([(torch.zeros_like(v[0]) if v0 is None else v0).unsqueeze(0), v[:-1]])
        grad_a = gbar * v_prev
    if ctx.has_v0 and ctx.needs_input_grad[2]:
        grad_v0 = a[0] * gbar[0]
    return grad_a, gbar, grad_v0, None


_scan = differentiable(_scan_op, _backward, _setup_context,
                      lambda a, b, v0, backend: reference.linear_scan_loop(a, b, v0))


# The scan has no weights: any vmapped argument folds into the batch, one call of the op.
register_folded_vmap(_scan_op, (TIME_MAJOR, TIME_MAJOR, BATCH_MAJOR, None), (TIME_MAJOR,))
register_folded_vmap(_scan_backward_op, (TIME_MAJOR, TIME_MAJOR, None), (TIME_MAJOR,))


def _check_coefficient(name: str, c, T: int, B: int, d: int, per_step: bool) -> torch.Tensor | float:
    if isinstance(c, numbers.Real) and not isinstance(c, bool):  # numpy scalars too
        return float(c)
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(c).__name__} {c!r}")
    check_tensor(name, c, allow_complex=False)
    shapes = [(), (d,)] + ([(T, 1, 1), (T, B, d)] if per_step else [])
    # only shapes of c's rank are compared: comparing (T, 1, 1) with (d,) would compare T
    # with d, which torch.export records as a guard (T != d) on a dynamic length
    if not any(tuple(c.shape) == s for s in shapes if len(s) == c.dim()):
        raise ValueError(f"{name} must be a float or have shape one of {shapes}, got {tuple(c.shape)}")
    return c


def momentum_scan(
    u: torch.Tensor,
    mu,
    step=1.0,
    v0: Optional[torch.Tensor] = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """All momentum buffers ``v_t = mu_t v_{t-1} + step u_t``, computed as a parallel scan.

    Args:
        u: ``(T, B, d)`` real, the input term of every step.
        mu: float, or a tensor ``()`` / ``(d,)`` (constant over time), ``(T, 1, 1)`` or
            ``(T, B, d)`` (a per-step coefficient, e.g. the Nesterov restart schedule).
        step: float, or a tensor ``()`` / ``(d,)``: the scale ``s`` of the input.
        v0: ``(B, d)`` initial buffer, or ``None`` for zeros.
        backend: ``"auto"``, ``"reference"`` or ``"triton"``.
    Returns:
        ``(T, B, d)``: ``v_1 ... v_T``, float32 whatever the input precision (float64 if an
        input is double). Differentiable with respect to ``u``, ``mu``, ``step`` and ``v0``.
    """
    check_tensor("u", u, allow_complex=False)
    check_shape("u", u, (None, None, None), what="(T, B, d)")
    T, B, d = u.shape
    if T < 1 or B < 1 or d < 1:
        raise ValueError(f"u must have T, B, d >= 1, got shape {tuple(u.shape)}")
    mu = _check_coefficient("mu", mu, T, B, d, per_step=True)
    step = _check_coefficient("step", step, T, B, d, per_step=False)
    check_same_device("u", u, **{k: t for k, t in (("mu", mu), ("step", step), ("v0", v0))
                                if isinstance(t, torch.Tensor)})
    if v0 is not None:
        check_tensor("v0", v0, allow_complex=False)
        check_shape("v0", v0, (B, d), what="(B, d)")
    dtypes = [t.dtype for t in (u, mu, step, v0) if isinstance(t, torch.Tensor)]
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    unsupported = "the Triton scan runs in float32, not float64" if dtype == torch.float64 else None
    backend = resolve_backend("momentum_scan", backend, u.device, unsupported)
    u = u.to(dtype)
    if isinstance(step, float) and step == 1.0:
        b = u  # no pass over the sequence for a unit step
    else:
        b = u * (step.to(dtype) if isinstance(step, torch.Tensor) else step)
    if isinstance(mu, torch.Tensor):
        a = mu.to(dtype).expand(T, B, d)
    else:
        a = torch.full((), mu, dtype=dtype, device=u.device).expand(T, B, d)
    return _scan(a, b, None if v0 is None else v0.to(dtype), backend)
