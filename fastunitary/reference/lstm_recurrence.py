"""The LSTM recurrence over a whole sequence in plain PyTorch: the CPU path and the oracle.

With ``g_t`` the precomputed input term of the gates (``W_ih x_t + b_ih + b_hh``, or a
momentum buffer plus ``b_hh``), in ``torch.nn.LSTM``'s gate order i, f, g, o:

    z_t = g_t + h_{t-1} W_hh^T                     (B, 4n)
    i, f, o = sigmoid(z_i, z_f, z_o),  c~ = tanh(z_g)
    c_t = f c_{t-1} + i c~,            h_t = o tanh(c_t)

:func:`lstm_forward` / :func:`lstm_backward` are one loop each way with the closed-form
backward (no autograd graph of T steps): the backward recomputes every ``z_t`` with one
large product (cheaper than storing the four gates), runs the sequential part

    dh = grad h_t + dz_{t+1} W_hh,      dc = grad c_t + dc_{t+1} f_{t+1} + dh o (1 - tanh(c_t)^2)
    dz_i = dc c~ i (1 - i),  dz_f = dc c_{t-1} f (1 - f),  dz_g = dc i (1 - c~^2),
    dz_o = dh tanh(c_t) o (1 - o)

and forms ``grad W_hh = sum_t dz_t^T h_{t-1}`` as one large product; the gate values and
the coefficients of that sequential part are computed for all steps before it, so the
loop itself is six small ops per step. :func:`lstm_autograd`
is the per-step loop differentiated by autograd, the test oracle; :func:`lstm_hop` the
forward as one ``scan`` higher-order op, for export.

With a projection ``W_hr`` ``(p, n)`` (``torch.nn.LSTM``'s ``proj_size``, LSTMP) the
output and carried state is ``r_t = W_hr h_t`` ``(B, p)``, so ``z_t = g_t + r_{t-1}
W_hh^T`` with ``W_hh`` ``(4n, p)``: one more small product per step each way (the
backward's ``dh = dr W_hr``), ``grad W_hr = sum_t dr_t^T h_t`` as one large product after
the loop, and the recurrent products shrink from ``4n x n`` to ``4n x p``.
"""

from __future__ import annotations

import torch

from ._scan import scan_over_time
from ._samples import per_sample_outer, previous_states


def _zeros_state(g: torch.Tensor, s: torch.Tensor | None, width: int) -> torch.Tensor:
    return g.new_zeros((g.shape[1], width)) if s is None else s


def lstm_forward(
    g: torch.Tensor, W_hh: torch.Tensor, h0: torch.Tensor | None, c0: torch.Tensor | None,
    W_hr: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(h_t, c_t)`` (``h_t`` projected, ``W_hr h_t``, when ``W_hr`` is given).

    Args:
        g: ``(T, B, 4n)`` gate input term.  W_hh: ``(4n, p)`` (``p = n`` without ``W_hr``).
        h0: ``(B, p)``, c0: ``(B, n)``, or ``None`` for zeros.
        W_hr: ``(p, n)`` projection, or ``None``.
    Returns:
        ``h``: ``(T, B, p)``, ``c``: ``(T, B, n)``.
    """
    T, B, G = g.shape
    n, p = G // 4, W_hh.shape[1]
    h_prev, c_prev = _zeros_state(g, h0, p), _zeros_state(g, c0, n)
    h = g.new_empty((T, B, p))
    c = g.new_empty((T, B, n))
    # contiguous transposes: MKL's small products run ~1.4x faster on them than on views
    Wt = W_hh.t().contiguous()
    Wrt = None if W_hr is None else W_hr.t().contiguous()
    unprojected = None if W_hr is None else g.new_empty((B, n))
    for t in range(T):
        z = torch.addmm(g[t], h_prev, Wt)
        i, f, gg, o = z.chunk(4, dim=-1)
        c_t = torch.addcmul(f.sigmoid_() * c_prev, i.sigmoid_(), gg.tanh_(), out=c[t])
        if Wrt is None:
            torch.mul(o.sigmoid_(), c_t.tanh(), out=h[t])
        else:
            torch.mm(torch.mul(o.sigmoid_(), c_t.tanh(), out=unprojected), Wrt, out=h[t])
        h_prev, c_prev = h[t], c[t]
    return h, c


def _one_minus_square(x: torch.Tensor) -> torch.Tensor:
    """``1 - x^2`` in one pass."""
    return torch.addcmul(x.new_ones(()), x, x, value=-1)


def lstm_backward(grad_h, grad_c, g, W_hh, h0, c0, h, c, W_hr=None, samples: int = 1):
    """``(grad_g, grad_W_hh, grad_h0, grad_c0, grad_W_hr)`` of :func:`lstm_forward`
    (``grad_W_hr`` ``None`` without ``W_hr``).

    Everything that does not depend on the carries is computed for all steps at once
    before the loop (the gates from the recomputed ``z``, and the coefficients
    ``K = [c~ i(1-i), c_{t-1} f(1-f), i(1-c~^2), tanh(c_t) o(1-o)]`` and
    ``A = o (1 - tanh(c_t)^2)``), so each sequential step is six small ops:
    ``dh``, ``dc``, ``dz = [dc, dc, dc, dh] * K``, ``dh_carry = dz W_hh``, ``dc_carry = dc f``
    (a seventh with ``W_hr``: ``dh = dr W_hr``, where ``dr`` is the gradient of the
    projected state).

    Args:
        grad_h, grad_c: ``(T, B, p)``, ``(T, B, n)`` gradients of the outputs (may be
            broadcast views).
        g, W_hh, h0, c0, W_hr: the forward's inputs;  h, c: its outputs.
        samples: ``S``, how many samples the batch holds, stacked sample-major (``vmap``'s
            per-sample gradients, :mod:`fastunitary.reference._samples`): ``grad_W_hh`` and
            ``grad_W_hr`` are then summed per sample, ``(S, 4n, p)`` and ``(S, p, n)``.
    Returns:
        ``(T, B, 4n)``, ``(4n, p)``, ``(B, p)``, ``(B, n)``, ``(p, n)`` or ``None``.
    """
    T, B, G = g.shape
    n, p = G // 4, W_hh.shape[1]
    h0, c0 = _zeros_state(g, h0, p), _zeros_state(g, c0, n)
    h_prev, c_prev = previous_states(h0, h), previous_states(c0, c)  # (T, B, p), (T, B, n)
    # Recompute all pre-activations at once, then turn them into the coefficients in place.
    # one (T B, p) x (p, 4n) product: 2.2x faster than T batched small ones (B = 16, n = 128)
    K = torch.addmm(g.reshape(T * B, G), h_prev.view(T * B, p), W_hh.t()).view(T, B, 4, n)
    i, f, cg, o = (K[:, :, k].sigmoid() if k != 2 else K[:, :, k].tanh() for k in range(4))
    tc = c.tanh()
    A = o * _one_minus_square(tc)
    unprojected = None if W_hr is None else o * tc  # h_t before W_hr, for grad W_hr
    # x (1 - x) as one addcmul: each pass over (T, B, n) counts, the backward is memory-bound
    torch.mul(cg, torch.addcmul(i, i, i, value=-1), out=K[:, :, 0])
    torch.mul(c_prev, torch.addcmul(f, f, f, value=-1), out=K[:, :, 1])
    torch.mul(i, _one_minus_square(cg), out=K[:, :, 2])
    torch.mul(tc, torch.addcmul(o, o, o, value=-1), out=K[:, :, 3])
    del i, cg, o, tc, c_prev
    dz = torch.empty((T, B, G), dtype=g.dtype, device=g.device)
    dz4 = dz.view(T, B, 4, n)
    dr = torch.zeros((B, p), dtype=g.dtype, device=g.device)  # the carry dz_{t+1} W_hh
    dc = torch.zeros((B, n), dtype=g.dtype, device=g.device)  # the carry dc_{t+1} f_{t+1}
    # with W_hr, every dr_t is kept for grad W_hr = sum_t dr_t^T h_t
    d_state = None if W_hr is None else g.new_empty((T, B, p))
    for t in range(T - 1, -1, -1):
        dr = dr + grad_h[t] if d_state is None else torch.add(dr, grad_h[t], out=d_state[t])
        dh = dr if W_hr is None else dr @ W_hr
        dc = torch.addcmul(dc + grad_c[t], dh, A[t])
        torch.mul(K[t, :, :3], dc.unsqueeze(1), out=dz4[t, :, :3])
        torch.mul(K[t, :, 3], dh, out=dz4[t, :, 3])
        dr = dz[t] @ W_hh
        dc = dc * f[t]
    if samples > 1:  # vmap's per-sample gradients
        grad_W = per_sample_outer(dz, h_prev, samples)
        grad_W_hr = None if W_hr is None else per_sample_outer(d_state, unprojected, samples)
        return dz, grad_W, dr, dc, grad_W_hr
    grad_W = dz.reshape(T * B, G).t() @ h_prev.reshape(T * B, p)
    grad_W_hr = None
    if W_hr is not None:
        grad_W_hr = d_state.reshape(T * B, p).t() @ unprojected.reshape(T * B, n)
    return dz, grad_W, dr, dc, grad_W_hr


def _lstm_step(g_t, h, c, W_hh, W_hr):
    """One step out of place, from the equations: ``(h_t, c_t)`` from ``(h_{t-1}, c_{t-1})``."""
    i, f, gg, o = (g_t + h @ W_hh.t()).chunk(4, dim=-1)
    c = f.sigmoid() * c + i.sigmoid() * gg.tanh()
    h = o.sigmoid() * c.tanh()
    return (h if W_hr is None else h @ W_hr.t()), c


def lstm_autograd(g, W_hh, h0=None, c0=None, W_hr=None):
    """Per-step loop, differentiable by autograd to any order: the oracle, and the op's double
    backward differentiates through it. Same shapes as :func:`lstm_forward`."""
    n = g.shape[-1] // 4
    h_t, c_t = _zeros_state(g, h0, W_hh.shape[1]), _zeros_state(g, c0, n)
    hs, cs = [], []
    for g_t in g.unbind(0):  # not g[t]: see reference.recurrence_loop
        h_t, c_t = _lstm_step(g_t, h_t, c_t, W_hh, W_hr)
        hs.append(h_t)
        cs.append(c_t)
    return torch.stack(hs), torch.stack(cs)


def lstm_hop(g, W_hh, h0=None, c0=None, W_hr=None):
    """:func:`lstm_forward` as one ``scan`` over time (the form ``torch.export`` captures
    as a single loop, see :mod:`fastunitary.onnx`): same arguments and result."""
    state = [_zeros_state(g, h0, W_hh.shape[1]), _zeros_state(g, c0, g.shape[-1] // 4)]

    def step(h, c, g_t, W_hh, *W_hr):  # a trace counts the parameters: no defaults
        h, c = _lstm_step(g_t, h, c, W_hh, W_hr[0] if W_hr else None)
        return [h, c, h.clone(), c.clone()]  # a carry and an output may not alias

    _, _, h, c = scan_over_time(step, state, [g], [W_hh] if W_hr is None else [W_hh, W_hr])
    return h, c
