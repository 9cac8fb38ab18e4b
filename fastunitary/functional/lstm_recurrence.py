"""``lstm_recurrence``: the LSTM recurrence over a whole sequence, as one op.

Public function, dispatch, ``torch.library`` registration and autograd for
``fastunitary::lstm_recurrence`` / ``fastunitary::lstm_recurrence_backward``. The input
term of the gates is precomputed for all steps (one large product outside); the op runs
only the sequential part, forward and backward (see
:mod:`fastunitary.reference.lstm_recurrence` for the equations), so that
``torch.compile(fullgraph=True)`` sees one node whatever ``T``.

A projection ``W_hr`` (LSTMP) runs in the registered op on the reference backend. The
Triton kernel has no projection: there the recurrence is the kernel's on ``W_hh W_hr``
(``W_hh r_{t-1} = (W_hh W_hr) h_{t-1}``, with ``W_hh r_0`` moved into ``g_1``), and the
projection one product after it, differentiated by autograd around the op.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from .._backend import resolve_backend
from .._checks import check_same_device, check_shape, check_tensor
from ._dispatch import (BATCH_MAJOR, PER_SAMPLE, PLACEHOLDER, SHARED, TIME_MAJOR, autocast_off,
                        differentiable, kernel_module, recomputed_gradients,
                        register_folded_vmap)


@torch.library.custom_op("fastunitary::lstm_recurrence", mutates_args=())
def _lstm_op(
    g: torch.Tensor, W_hh: torch.Tensor, h0: Optional[torch.Tensor], c0: Optional[torch.Tensor],
    W_hr: Optional[torch.Tensor], backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "triton" and W_hr is not None:
        raise ValueError("the Triton LSTM kernel has no projection: lstm_recurrence() runs "
                         "W_hr around it (call that, not the op)")
    with autocast_off(g):
        if backend == "triton":
            h, c = kernel_module("lstm_recurrence").forward(g, W_hh, h0, c0)
        else:
            h, c = reference.lstm_forward(g, W_hh, h0, c0, W_hr)
    return h.contiguous(), c.contiguous()


@_lstm_op.register_fake
def _(g, W_hh, h0, c0, W_hr, backend):
    T, B, G = g.shape
    return g.new_empty((T, B, W_hh.shape[1])), g.new_empty((T, B, G // 4))


@torch.library.custom_op("fastunitary::lstm_recurrence_backward", mutates_args=())
def _lstm_backward_op(
    grad_h: torch.Tensor, grad_c: torch.Tensor, g: torch.Tensor, W_hh: torch.Tensor,
    h0: Optional[torch.Tensor], c0: Optional[torch.Tensor], h: torch.Tensor, c: torch.Tensor,
    W_hr: Optional[torch.Tensor], backend: str, samples: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of g, W_hh, h0, c0 and W_hr (an empty tensor without W_hr: an op
    returns no None); with ``samples > 1`` (``vmap``'s batching rule) those of W_hh and
    W_hr per sample, ``(samples, ...)``."""
    with autocast_off(g):
        if backend == "triton":
            kernel = kernel_module("lstm_recurrence")
            out = (*kernel.backward(grad_h, grad_c, g, W_hh, h0, c0, h, c, samples), None)
        else:
            out = reference.lstm_backward(grad_h, grad_c, g, W_hh, h0, c0, h, c, W_hr, samples)
    return tuple(W_hh.new_empty(0) if t is None else t.contiguous() for t in out)


@_lstm_backward_op.register_fake
def _(grad_h, grad_c, g, W_hh, h0, c0, h, c, W_hr, backend, samples):
    T, B, G = g.shape
    per_sample = () if samples == 1 else (samples,)
    return (g.new_empty((T, B, G)), W_hh.new_empty((*per_sample, *W_hh.shape)),
            g.new_empty((B, W_hh.shape[1])), g.new_empty((B, G // 4)),
            W_hh.new_empty(0) if W_hr is None else W_hr.new_empty((*per_sample, *W_hr.shape)))


def _setup_context(ctx, inputs, output):
    g, W_hh, h0, c0, W_hr, backend = inputs
    ctx.backend = backend
    ctx.save_for_backward(g, W_hh, h0, c0, W_hr, *output)


def _backward(ctx, grad_h, grad_c):
    g, W_hh, h0, c0, W_hr, h, c = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the gradient will be differentiated again
        gg, gW, gh0, gc0, gWr = _differentiable_backward(ctx, grad_h, grad_c, g, W_hh, h0, c0,
                                                         W_hr)
    else:
        # an output that did not reach the loss has no gradient: zeros (broadcast, not stored)
        grad_h = torch.zeros_like(h) if grad_h is None else grad_h
        grad_c = torch.zeros_like(c) if grad_c is None else grad_c
        gg, gW, gh0, gc0, gWr = _lstm_backward_op(grad_h, grad_c, g, W_hh, h0, c0, h, c, W_hr,
                                                  ctx.backend, 1)
    return (gg, gW, gh0 if h0 is not None else None, gc0 if c0 is not None else None,
            gWr if W_hr is not None else None, None)


def _differentiable_backward(ctx, grad_h, grad_c, g, W_hh, h0, c0, W_hr):
    """The gradients as differentiable tensor ops, for a double backward: autograd through
    the recurrence recomputed step by step (``reference.lstm_autograd``)."""
    return recomputed_gradients(reference.lstm_autograd, (g, W_hh, h0, c0, W_hr),
                                ctx.needs_input_grad, (grad_h, grad_c))


_lstm = differentiable(
    _lstm_op, _backward, _setup_context,
    lambda g, W_hh, h0, c0, W_hr, backend: reference.lstm_autograd(g, W_hh, h0, c0, W_hr))
register_folded_vmap(_lstm_op, (TIME_MAJOR, SHARED, BATCH_MAJOR, BATCH_MAJOR, SHARED, None),
                     (TIME_MAJOR, TIME_MAJOR))
register_folded_vmap(
    _lstm_backward_op,
    (TIME_MAJOR, TIME_MAJOR, TIME_MAJOR, SHARED, BATCH_MAJOR, BATCH_MAJOR, TIME_MAJOR, TIME_MAJOR,
     SHARED, None, None),
    # grad_g, grad_W_hh, grad_h0, grad_c0, grad_W_hr (an empty placeholder without W_hr)
    lambda grad_h, grad_c, g, W_hh, h0, c0, h, c, W_hr, *_: (
        TIME_MAJOR, PER_SAMPLE, BATCH_MAJOR, BATCH_MAJOR,
        PLACEHOLDER if W_hr is None else PER_SAMPLE),
    samples_arg=10)


def lstm_recurrence(
    g: torch.Tensor,
    W_hh: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    c0: Optional[torch.Tensor] = None,
    *,
    W_hr: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All states of the LSTM recurrence with a precomputed gate input term.

    ``z_t = g_t + W_hh h_{t-1}``; gates in ``torch.nn.LSTM``'s order i, f, g, o;
    ``c_t = sigmoid(z_f) c_{t-1} + sigmoid(z_i) tanh(z_g)``, ``h_t = sigmoid(z_o) tanh(c_t)``;
    with ``W_hr`` (``torch.nn.LSTM``'s ``proj_size``) ``h_t = W_hr (sigmoid(z_o) tanh(c_t))``.

    Args:
        g: ``(T, B, 4n)`` input term of the gates (``x_t W_ih^T + b_ih + b_hh`` for a plain
            LSTM; a momentum buffer plus ``b_hh`` for the MomentumRNN family).
        W_hh: ``(4n, p)``, ``p = n`` without a projection.
        h0: ``(B, p)``, c0: ``(B, n)`` initial states, or ``None`` for zeros.
        W_hr: ``(p, n)`` projection (any ``p >= 1``), or ``None``.
        backend: ``"auto"``, ``"reference"`` or ``"triton"``.
    Returns:
        ``(h, c)``: ``(T, B, p)`` and ``(T, B, n)``, ``h_1..h_T`` and ``c_1..c_T``, float32
        whatever the input precision (float64 if an input is double).
    """
    check_tensor("g", g, allow_complex=False)
    check_tensor("W_hh", W_hh, allow_complex=False)
    check_shape("g", g, (None, None, None), what="(T, B, 4n)")
    T, B, G = g.shape
    if T < 1 or B < 1 or G < 4 or G % 4:
        raise ValueError(f"g must have shape (T, B, 4n) with T, B, n >= 1, got {tuple(g.shape)}")
    n = G // 4
    if W_hr is None:
        p = n
    else:
        check_tensor("W_hr", W_hr, allow_complex=False)
        check_shape("W_hr", W_hr, (None, n), what="(p, n)")
        p = W_hr.shape[0]
        if p < 1:
            raise ValueError(f"W_hr must have p >= 1 rows, got shape {tuple(W_hr.shape)}")
    check_shape("W_hh", W_hh, (G, p), what="(4n, p)" if W_hr is not None else "(4n, n)")
    check_same_device("g", g, W_hh=W_hh, h0=h0, c0=c0, W_hr=W_hr)
    for name, s, width in (("h0", h0, p), ("c0", c0, n)):
        if s is not None:
            check_tensor(name, s, allow_complex=False)
            check_shape(name, s, (B, width), what="(B, p)" if width != n else "(B, n)")
    dtypes = [t.dtype for t in (g, W_hh, h0, c0, W_hr) if t is not None]
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    unsupported = "the Triton LSTM runs in float32, not float64" if dtype == torch.float64 else None
    backend = resolve_backend("lstm_recurrence", backend, g.device, unsupported)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    g, W_hh, h0, c0, W_hr = map(cast, (g, W_hh, h0, c0, W_hr))
    if W_hr is not None and backend == "triton":
        with autocast_off(g):  # its products are outside the op: keep them float32
            return _projected_on_kernel(g, W_hh, h0, c0, W_hr)
    return _lstm(g, W_hh, h0, c0, W_hr, backend)


def _projected_on_kernel(g, W_hh, h0, c0, W_hr):
    """LSTMP on the Triton kernel, which has no projection: the kernel's recurrence on
    ``W_hh W_hr`` ``(4n, n)`` from ``h_0 = 0``, ``W_hh r_0`` moved into ``g_1``, then all
    ``r_t = W_hr h_t`` as one product (autograd differentiates around the op)."""
    if h0 is not None:
        g = torch.cat([(g[0] + h0 @ W_hh.t()).unsqueeze(0), g[1:]])
    h, c = _lstm(g, W_hh @ W_hr, None, c0, None, "triton")
    return h @ W_hr.t(), c
