"""``recurrence``: ``h_t = act(W h_{t-1} + u_t)`` over a whole sequence, as one op.

Public function, dispatch, ``torch.library`` registration and autograd. The registered
pair ``fastunitary::recurrence`` / ``fastunitary::recurrence_backward`` works on real
planes (a complex state of size n is ``[Re h, Im h]``, width 2n; a complex W its real
embedding; see :mod:`fastunitary.functional.planes`), so that:

- ``torch.compile(fullgraph=True)`` sees the whole time loop as one node: no graph break,
  no complex arithmetic in the graph, and compile time that does not grow with ``T``;
- the backward is one reverse-time pass with the closed form of METHODS.md section 3 and
  the weight gradient as large products (see :mod:`fastunitary.reference.recurrence`).
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from .._backend import resolve_backend
from .._checks import check_fixed_float, check_same_device, check_shape, check_tensor
from ..reference.recurrence import ACTIVATIONS
from ._dispatch import (BATCH_MAJOR, PER_SAMPLE, PLACEHOLDER, SHARED, TIME_MAJOR, autocast_off,
                        differentiable, kernel_module, recomputed_gradients, register_folded_vmap)
from .planes import as_complex, real_embedding, to_planes


@torch.library.custom_op("fastunitary::recurrence", mutates_args=())
def _recurrence_op(
    u: torch.Tensor,
    W: torch.Tensor,
    bias: Optional[torch.Tensor],
    h0: Optional[torch.Tensor],
    activation: str,
    is_complex: bool,
    backend: str,
    leak: float,
) -> torch.Tensor:
    with autocast_off(u):
        if backend == "triton":  # only the plain form (leak 1): resolve_backend saw to it
            return kernel_module("recurrence").forward(u, W, bias, h0, activation, is_complex)
        return reference.recurrence_forward(u, W, bias, h0, activation, is_complex, leak)


@_recurrence_op.register_fake
def _(u, W, bias, h0, activation, is_complex, backend, leak):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


@torch.library.custom_op("fastunitary::recurrence_backward", mutates_args=())
def _recurrence_backward_op(
    grad_h: torch.Tensor,
    u: Optional[torch.Tensor],
    W: torch.Tensor,
    bias: Optional[torch.Tensor],
    h0: Optional[torch.Tensor],
    h: torch.Tensor,
    activation: str,
    is_complex: bool,
    backend: str,
    leak: float,
    samples: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of u, W, bias (empty without one) and h0; with ``samples > 1``
    (``vmap``'s batching rule) those of W and bias per sample, ``(samples, ...)``."""
    with autocast_off(h):
        if backend == "triton":
            impl = kernel_module("recurrence").backward
            gu, gW, gb, gh0 = impl(grad_h, u, W, bias, h0, h, activation, is_complex, samples)
        else:
            gu, gW, gb, gh0 = reference.recurrence_backward(
                grad_h, u, W, bias, h0, h, activation, is_complex, leak, samples)
    # contiguous, as the fake kernel promises (a W given transposed must not leak its strides)
    gb = h.new_empty(0) if gb is None else gb.contiguous()
    return gu.contiguous(), gW.contiguous(), gb, gh0.contiguous()


@_recurrence_backward_op.register_fake
def _(grad_h, u, W, bias, h0, h, activation, is_complex, backend, leak, samples):
    T, B, d = h.shape
    per_sample = () if samples == 1 else (samples,)
    gb = h.new_empty(0) if bias is None else bias.new_empty((*per_sample, *bias.shape))
    return (torch.empty_like(h, memory_format=torch.contiguous_format),
            W.new_empty((*per_sample, *W.shape)), gb, h.new_empty((B, d)))


def _setup_context(ctx, inputs, output):
    u, W, bias, h0, activation, is_complex, backend, leak = inputs
    ctx.config = (activation, is_complex, backend, leak)
    ctx.has_bias, ctx.has_h0 = bias is not None, h0 is not None
    # Only modReLU's backward and the leaky form need the pre-activations, recomputed from
    # u; plain tanh and relu read their derivative off h_t.
    keep_u = activation == "modrelu" or leak != 1.0
    ctx.save_for_backward(u if keep_u else None, W, bias, h0, output)


def _backward(ctx, grad_h):
    u, W, bias, h0, h = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the gradient will be differentiated again
        gu, gW, gb, gh0 = _differentiable_backward(ctx, grad_h, u, W, bias, h0, h)
    else:
        gu, gW, gb, gh0 = _recurrence_backward_op(grad_h, u, W, bias, h0, h, *ctx.config, 1)
    return (
        gu,
        gW,
        gb if ctx.has_bias else None,
        gh0 if ctx.has_h0 else None,
        None,
        None,
        None,
        None,
    )


def _differentiable_backward(ctx, grad_h, u, W, bias, h0, h):
    """The gradients as differentiable tensor ops, for a double backward: autograd through
    the recurrence recomputed step by step (``reference.recurrence_loop``), or, where ``u``
    was not saved (tanh, relu or identity at leak 1), the closed form read off the states."""
    activation, is_complex, _, leak = ctx.config
    if u is None:
        with autocast_off(h):
            gu, gW, gh0 = reference.recurrence_backward_from_states(grad_h, W, h0, h, activation)
        return gu, gW, None, gh0
    loop = lambda u, W, bias, h0: reference.recurrence_loop(  # noqa: E731
        u, W, bias, h0, activation, is_complex, leak)
    return recomputed_gradients(loop, (u, W, bias, h0), ctx.needs_input_grad, (grad_h,))


def _recomputed(u, W, bias, h0, activation, is_complex, backend, leak):
    """The op by differentiable tensor ops: its route in forward mode."""
    return reference.recurrence_loop(u, W, bias, h0, activation, is_complex, leak)


_recurrence = differentiable(_recurrence_op, _backward, _setup_context,
                             _recomputed)
register_folded_vmap(_recurrence_op, (TIME_MAJOR, SHARED, SHARED, BATCH_MAJOR, None, None, None,
                                      None), (TIME_MAJOR,))
register_folded_vmap(
    _recurrence_backward_op,
    (TIME_MAJOR, TIME_MAJOR, SHARED, SHARED, BATCH_MAJOR, TIME_MAJOR) + (None,) * 5,
    # grad_u, grad_W, grad_bias (an empty placeholder without a bias), grad_h0
    lambda grad_h, u, W, bias, *_: (TIME_MAJOR, PER_SAMPLE,
                                    PLACEHOLDER if bias is None else PER_SAMPLE, BATCH_MAJOR),
    samples_arg=10)


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float32, or float64 when any input is float64: the state's accumulation dtype."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def recurrence_planes(
    u: torch.Tensor,
    W: torch.Tensor,
    bias: Optional[torch.Tensor],
    h0: Optional[torch.Tensor],
    *,
    activation: str,
    is_complex: bool,
    backend: str,
    leak: float = 1.0,
) -> torch.Tensor:
    """The registered op on the planes layout, for modules that already hold planes.

    Args:
        u: ``(T, B, d)``; ``d = 2n`` with ``[Re | Im]`` when ``is_complex``.
        W: ``(d, d)`` (the real embedding of a complex ``W``).
        bias: ``(n,)`` modReLU bias or ``None``.  h0: ``(B, d)`` or ``None``.
    Returns:
        ``(T, B, d)`` in float32 (float64 if any input is float64), whatever ``u``'s dtype.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    for name, t in (("u", u), ("W", W), ("bias", bias), ("h0", h0)):
        if t is not None:  # real planes: the kernel would read a complex tensor's bytes
            check_tensor(name, t, allow_complex=False)
    check_shape("u", u, (None, None, None), what="(T, B, d)")
    if 0 in u.shape:  # an empty u would reach the kernel, which reads u[0] before its loop
        raise ValueError(f"u must have T >= 1 steps, B >= 1 rows and d >= 1 features, got "
                         f"shape {tuple(u.shape)}")
    _, B, d = u.shape
    if is_complex and d % 2:
        raise ValueError(f"a complex state needs an even d = 2n (planes [Re | Im]), got u of "
                         f"shape {tuple(u.shape)}")
    if bias is not None and activation != "modrelu":
        raise ValueError(
            f"bias is the modReLU bias; with activation={activation!r} fold it into u"
        )
    # the kernel indexes W, bias and h0 by these shapes without bounds: check them all
    check_shape("W", W, (d, d), what="(d, d)")
    if bias is not None:
        check_shape("bias", bias, (d // 2 if is_complex else d,), what="(n,)")
    if h0 is not None:
        check_shape("h0", h0, (B, d), what="(B, d)")
    check_same_device("u", u, W=W, bias=bias, h0=h0)
    leak = check_fixed_float("leak", leak)
    dtype = compute_dtype(*(t.dtype for t in (u, W, bias, h0) if t is not None))
    if activation == "modrelu" and bias is None:
        n = u.shape[-1] // 2 if is_complex else u.shape[-1]
        # not u.new_zeros: under vmap that would be a vmapped bias, one per sample
        bias = torch.zeros(n, dtype=dtype, device=u.device)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"leak must be in (0, 1], got {leak!r}")
    unsupported = None
    if dtype == torch.float64:
        unsupported = "the Triton recurrence runs in float32, not float64"
    elif leak != 1.0:
        unsupported = "the Triton recurrence runs the plain form (leak = 1), not a leaky one"
    backend = resolve_backend("recurrence", backend, u.device, unsupported)
    return _recurrence(
        cast(u), cast(W), cast(bias), cast(h0), activation, is_complex, backend, leak
    )


def recurrence(
    u: torch.Tensor,
    W: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    h0: Optional[torch.Tensor] = None,
    *,
    activation: str = "modrelu",
    leak: float = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """All states of ``h_t = act(W h_{t-1} + u_t)``, real or complex; with ``leak``
    ``alpha < 1`` the leaky (rate) form ``h_t = (1 - alpha) h_{t-1} + alpha act(W h_{t-1} + u_t)``.

    Args:
        u: ``(T, B, n)`` input term (``U x_t + c``, precomputed for all t), real or complex.
        W: ``(n, n)`` recurrent matrix, complex exactly when ``u`` is.
        bias: ``(n,)`` real modReLU bias (``None``: zero). Only for ``"modrelu"``; fold any
            other bias into ``u``.
        h0: ``(B, n)`` initial state, complex exactly when ``u`` is; ``None`` for zeros.
        activation: ``"modrelu"``, ``"tanh"``, ``"relu"`` or ``"identity"``. For a complex
            state tanh and relu act on the real and imaginary parts separately.
        leak: in (0, 1]; 1 (the default) is the plain recurrence. The Triton kernel runs
            only the plain form: a leaky one runs the reference (``"auto"``) or raises
            (``"triton"``).
        backend: ``"auto"``, ``"reference"`` or ``"triton"``.
    Returns:
        ``(T, B, n)``: ``h_1 ... h_T``, float32 (complex64) whatever the input precision
        (float64/complex128 if any of ``u``, ``W``, ``bias``, ``h0`` is double), so that
        the state accumulates in at least float32 under autocast.
    """
    check_tensor("u", u)
    check_tensor("W", W)
    # the activation, the devices and T, B, n >= 1 are checked by recurrence_planes
    check_shape("u", u, (None, None, None), what="(T, B, n)")
    T, B, n = u.shape
    check_shape("W", W, (n, n), what="(n, n)")
    is_complex = u.is_complex()
    if W.is_complex() != is_complex:
        raise TypeError(f"u is {u.dtype} but W is {W.dtype}: both real or both complex")
    if bias is not None:
        check_tensor("bias", bias, allow_complex=False)
        check_shape("bias", bias, (n,), what="(n,)")
    if h0 is not None:
        check_tensor("h0", h0)
        check_shape("h0", h0, (B, n), what="(B, n)")
        if h0.is_complex() != is_complex:
            raise TypeError(f"u is {u.dtype} but h0 is {h0.dtype}: both real or both complex")
    if is_complex:
        u, W = to_planes(u), real_embedding(W.real, W.imag)
        h0 = None if h0 is None else to_planes(h0)
    h = recurrence_planes(
        u, W, bias, h0, activation=activation, is_complex=is_complex, backend=backend, leak=leak
    )
    return as_complex(h) if is_complex else h
