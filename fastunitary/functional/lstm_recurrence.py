"""``lstm_recurrence``: the LSTM recurrence over a whole sequence, as one op.

Public function, dispatch, ``torch.library`` registration and autograd for
``fastunitary::lstm_recurrence`` / ``fastunitary::lstm_recurrence_backward``. The input
term of the gates is precomputed for all steps (one large product outside); the op runs
only the sequential part, forward and backward (see
:mod:`fastunitary.reference.lstm_recurrence` for the equations), so that
``torch.compile(fullgraph=True)`` sees one node whatever ``T``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from .._backend import resolve_backend
from .._checks import check_same_device, check_shape, check_tensor
from ._dispatch import autocast_off, kernel_module


@torch.library.custom_op("fastunitary::lstm_recurrence", mutates_args=())
def _lstm_op(
    g: torch.Tensor, W_hh: torch.Tensor, h0: Optional[torch.Tensor], c0: Optional[torch.Tensor],
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast_off(g):
        if backend == "triton":
            h, c = kernel_module("lstm_recurrence").forward(g, W_hh, h0, c0)
        else:
            h, c = reference.lstm_forward(g, W_hh, h0, c0)
    return h.contiguous(), c.contiguous()


@_lstm_op.register_fake
def _(g, W_hh, h0, c0, backend):
    T, B, G = g.shape
    return g.new_empty((T, B, G // 4)), g.new_empty((T, B, G // 4))


@torch.library.custom_op("fastunitary::lstm_recurrence_backward", mutates_args=())
def _lstm_backward_op(
    grad_h: torch.Tensor, grad_c: torch.Tensor, g: torch.Tensor, W_hh: torch.Tensor,
    h0: Optional[torch.Tensor], c0: Optional[torch.Tensor], h: torch.Tensor, c: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    impl = kernel_module("lstm_recurrence").backward if backend == "triton" else reference.lstm_backward
    with autocast_off(g):
        out = impl(grad_h, grad_c, g, W_hh, h0, c0, h, c)
    return tuple(t.contiguous() for t in out)


@_lstm_backward_op.register_fake
def _(grad_h, grad_c, g, W_hh, h0, c0, h, c, backend):
    T, B, G = g.shape
    return (g.new_empty((T, B, G)), W_hh.new_empty(W_hh.shape), g.new_empty((B, G // 4)),
            g.new_empty((B, G // 4)))


def _setup_context(ctx, inputs, output):
    g, W_hh, h0, c0, backend = inputs
    ctx.backend = backend
    ctx.save_for_backward(g, W_hh, h0, c0, *output)


def _backward(ctx, grad_h, grad_c):
    g, W_hh, h0, c0, h, c = ctx.saved_tensors
    # an output that did not reach the loss has no gradient: zeros (broadcast, not stored)
    grad_h = torch.zeros_like(h) if grad_h is None else grad_h
    grad_c = torch.zeros_like(c) if grad_c is None else grad_c
    gg, gW, gh0, gc0 = _lstm_backward_op(grad_h, grad_c, g, W_hh, h0, c0, h, c, ctx.backend)
    return gg, gW, gh0 if h0 is not None else None, gc0 if c0 is not None else None, None


_lstm_op.register_autograd(_backward, setup_context=_setup_context)


def lstm_recurrence(
    g: torch.Tensor,
    W_hh: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    c0: Optional[torch.Tensor] = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All states of the LSTM recurrence with a precomputed gate input term.

    ``z_t = g_t + W_hh h_{t-1}``; gates in ``torch.nn.LSTM``'s order i, f, g, o;
    ``c_t = sigmoid(z_f) c_{t-1} + sigmoid(z_i) tanh(z_g)``, ``h_t = sigmoid(z_o) tanh(c_t)``.

    Args:
        g: ``(T, B, 4n)`` input term of the gates (``x_t W_ih^T + b_ih + b_hh`` for a plain
            LSTM; a momentum buffer plus ``b_hh`` for the MomentumRNN family).
        W_hh: ``(4n, n)``.
        h0, c0: ``(B, n)`` initial states, or ``None`` for zeros.
        backend: ``"auto"``, ``"reference"`` or ``"triton"``.
    Returns:
        ``(h, c)``: ``(T, B, n)`` each, ``h_1..h_T`` and ``c_1..c_T``, float32 whatever the
        input precision (float64 if an input is double).
    """
    check_tensor("g", g, allow_complex=False)
    check_tensor("W_hh", W_hh, allow_complex=False)
    check_shape("g", g, (None, None, None), what="(T, B, 4n)")
    T, B, G = g.shape
    if T < 1 or B < 1 or G < 4 or G % 4:
        raise ValueError(f"g must have shape (T, B, 4n) with T, B, n >= 1, got {tuple(g.shape)}")
    n = G // 4
    check_shape("W_hh", W_hh, (G, n), what="(4n, n)")
    check_same_device("g", g, W_hh=W_hh, h0=h0, c0=c0)
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None:
            check_tensor(name, s, allow_complex=False)
            check_shape(name, s, (B, n), what="(B, n)")
    dtypes = [t.dtype for t in (g, W_hh, h0, c0) if t is not None]
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    unsupported = "the Triton LSTM runs in float32, not float64" if dtype == torch.float64 else None
    backend = resolve_backend("lstm_recurrence", backend, g.device, unsupported)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return _lstm_op(cast(g), cast(W_hh), cast(h0), cast(c0), backend)
