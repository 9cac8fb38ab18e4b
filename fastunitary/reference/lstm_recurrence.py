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
is the per-step loop differentiated by autograd, the test oracle.
"""

from __future__ import annotations

import torch


def _zeros_state(g: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
    T, B, G = g.shape
    return torch.zeros((B, G // 4), dtype=g.dtype, device=g.device) if s is None else s


def lstm_forward(
    g: torch.Tensor, W_hh: torch.Tensor, h0: torch.Tensor | None, c0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(h_t, c_t)``.

    Args:
        g: ``(T, B, 4n)`` gate input term.  W_hh: ``(4n, n)``.
        h0, c0: ``(B, n)`` or ``None`` for zeros.
    Returns:
        ``h``, ``c``: ``(T, B, n)`` each.
    """
    T, B, G = g.shape
    n = G // 4
    h_prev, c_prev = _zeros_state(g, h0), _zeros_state(g, c0)
    h = g.new_empty((T, B, n))
    c = g.new_empty((T, B, n))
    Wt = W_hh.t()
    for t in range(T):
        z = torch.addmm(g[t], h_prev, Wt)
        i, f, gg, o = z.chunk(4, dim=-1)
        c_t = torch.addcmul(f.sigmoid_() * c_prev, i.sigmoid_(), gg.tanh_(), out=c[t])
        torch.mul(o.sigmoid_(), c_t.tanh(), out=h[t])
        h_prev, c_prev = h[t], c[t]
    return h, c


def lstm_backward(grad_h, grad_c, g, W_hh, h0, c0, h, c):
    """``(grad_g, grad_W_hh, grad_h0, grad_c0)`` of :func:`lstm_forward`.

    Everything that does not depend on the carries is computed for all steps at once
    before the loop (the gates from the recomputed ``z``, and the coefficients
    ``K = [c~ i(1-i), c_{t-1} f(1-f), i(1-c~^2), tanh(c_t) o(1-o)]`` and
    ``A = o (1 - tanh(c_t)^2)``), so each sequential step is six small ops:
    ``dh``, ``dc``, ``dz = [dc, dc, dc, dh] * K``, ``dh_carry = dz W_hh``, ``dc_carry = dc f``.

    Args:
        grad_h, grad_c: ``(T, B, n)`` gradients of the outputs (may be broadcast views).
        g, W_hh, h0, c0: the forward's inputs;  h, c: its outputs.
    Returns:
        ``(T, B, 4n)``, ``(4n, n)``, ``(B, n)``, ``(B, n)``.
    """
    T, B, G = g.shape
    n = G // 4
    h0, c0 = _zeros_state(g, h0), _zeros_state(g, c0)
    h_prev = torch.cat([h0.unsqueeze(0), h[:-1]])  # (T, B, n)
    c_prev = torch.cat([c0.unsqueeze(0), c[:-1]])
    # Recompute all pre-activations at once, then turn them into the coefficients in place.
    K = torch.baddbmm(g.reshape(T, B, G), h_prev, W_hh.t().expand(T, n, G)).view(T, B, 4, n)
    i, f, cg, o = (K[:, :, k].sigmoid() if k != 2 else K[:, :, k].tanh() for k in range(4))
    tc = c.tanh()
    A = o * (1 - tc * tc)
    torch.mul(cg, i * (1 - i), out=K[:, :, 0])
    torch.mul(c_prev, f * (1 - f), out=K[:, :, 1])
    torch.mul(i, 1 - cg * cg, out=K[:, :, 2])
    torch.mul(tc, o * (1 - o), out=K[:, :, 3])
    del i, cg, o, tc, c_prev
    dz = torch.empty((T, B, G), dtype=g.dtype, device=g.device)
    dz4 = dz.view(T, B, 4, n)
    dh = torch.zeros((B, n), dtype=g.dtype, device=g.device)  # the carry dz_{t+1} W_hh
    dc = torch.zeros((B, n), dtype=g.dtype, device=g.device)  # the carry dc_{t+1} f_{t+1}
    for t in range(T - 1, -1, -1):
        dh = dh + grad_h[t]
        dc = torch.addcmul(dc + grad_c[t], dh, A[t])
        torch.mul(K[t, :, :3], dc.unsqueeze(1), out=dz4[t, :, :3])
        torch.mul(K[t, :, 3], dh, out=dz4[t, :, 3])
        dh = dz[t] @ W_hh
        dc = dc * f[t]
    grad_W = dz.reshape(T * B, G).t() @ h_prev.reshape(T * B, n)
    return dz, grad_W, dh, dc


def lstm_autograd(g, W_hh, h0=None, c0=None):
    """Per-step loop, differentiable by autograd: the oracle. Same shapes as :func:`lstm_forward`."""
    h_t, c_t = _zeros_state(g, h0), _zeros_state(g, c0)
    hs, cs = [], []
    for t in range(g.shape[0]):
        i, f, gg, o = (g[t] + h_t @ W_hh.t()).chunk(4, dim=-1)
        c_t = f.sigmoid() * c_t + i.sigmoid() * gg.tanh()
        h_t = o.sigmoid() * c_t.tanh()
        hs.append(h_t)
        cs.append(c_t)
    return torch.stack(hs), torch.stack(cs)
