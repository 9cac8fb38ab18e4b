"""SBO-RNN's recurrence in plain PyTorch: the CPU path and the oracle (METHODS.md section 6).

The hidden state is the iterate of an optimizer on the lower-level objective of each step,

    f_t(h) = 1/2 || h - relu(W h + u_t) ||^2,      u_t = U x_t + b,

whose gradient (almost everywhere, with ``D = diag(W h + u_t > 0)``) is

    g_t(h) = (I - W^T D) (h - relu(W h + u_t)).

Each time step runs ``steps`` (K) iterations of one of three optimizers, the state of the
optimizer carried across steps as in the official code (Zhang et al., NeurIPS 2021):

- ``"gd"``:          ``h <- h - eta g(h)``
- ``"heavy_ball"``:  ``m <- mu m - eta g(h);  h <- h + m``          (m starts at 0)
- ``"nesterov"``:    ``y <- h - eta g(h);  h <- y + mu (y - y_prev)``  (m = y; starts at h0)

``h_t`` is the state after the K iterations of step t.

The fast pair runs on rows (``h`` is ``(B, n)``, so ``W h`` is ``h @ W^T``):

- :func:`sbo_forward` stores the state after every iteration (the backward needs the
  pre-iteration state of each, and recomputing K inner steps would cost as much again).
- :func:`sbo_backward` is one reverse pass with the closed-form vector-Jacobian product of
  ``g``: with ``r = h - relu(z)``, ``s = D r`` and ``g = r - s W`` (rows), a cotangent
  ``gbar`` of ``g`` gives ``rbar = gbar - D (gbar W^T)``, ``zbar = -D rbar``,
  ``hbar = rbar + zbar W`` and ``Wbar = zbar^T h - s^T gbar``; ``zbar`` is also ``ubar``.
  The weight gradient is formed from chunks of stored ``s``/``gbar`` and from all ``zbar``
  and states as a few large products, not one small product per step.

:func:`sbo_autograd` is the oracle: a per-step loop written from the definitions, where
``g`` is autograd's gradient of ``f`` (``create_graph=True``), not the closed form.
:func:`sbo_hop` is the forward as one ``scan`` higher-order op, for export.
"""

from __future__ import annotations

import torch

from ._scan import scan_over_time
from ._samples import per_sample_outer

SBO_METHODS = ("gd", "heavy_ball", "nesterov")

# Elements per chunk buffer of the backward: 2^20 floats = 4 MiB.
_CHUNK_ELEMENTS = 1 << 20


def initial_momentum(h0: torch.Tensor, m0: torch.Tensor | None, method: str) -> torch.Tensor | None:
    """The optimizer's state before the first iteration: ``m0``, else zero velocity
    (heavy ball) or the previous look-ahead point ``y = h0`` (Nesterov: no first kick)."""
    if method == "gd":
        return None
    if m0 is not None:
        return m0
    return torch.zeros_like(h0) if method == "heavy_ball" else h0


def _lower_gradient(h, W, u_t):
    """``g`` of ``f_t`` at ``h``; rows: ``z = h W^T + u``, ``r = h - relu(z)``, ``g = r - (D r) W``."""
    z = torch.addmm(u_t, h, W.t())
    r = h - z.clamp_min(0)
    return r - (r * (z > 0)) @ W


def sbo_forward(
    u: torch.Tensor,
    W: torch.Tensor,
    h0: torch.Tensor | None,
    m0: torch.Tensor | None,
    mu: torch.Tensor,
    eta: float,
    steps: int,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The state after every iteration.

    Args:
        u: ``(T, B, n)`` input term ``U x_t + b``.   W: ``(n, n)``.
        h0: ``(B, n)`` or ``None`` (zeros).   m0: ``(B, n)`` optimizer state or ``None``.
        mu: 0-dim momentum coefficient (unused by ``"gd"``).
        eta: step size.   steps: iterations per time step (K).
    Returns:
        ``hs`` ``(T*K, B, n)`` and ``ms`` ``(T*K, B, n)`` (the momentum or look-ahead state;
        an empty tensor for ``"gd"``). ``h_t`` is ``hs[(t+1)K - 1]``.
    """
    T, B, n = u.shape
    N = T * steps
    hs = u.new_empty((N, B, n))
    ms = u.new_empty((N, B, n)) if method != "gd" else u.new_empty(0)
    h = u.new_zeros((B, n)) if h0 is None else h0
    m = initial_momentum(h, m0, method)
    for i in range(N):
        g = _lower_gradient(h, W, u[i // steps])
        if method == "gd":
            h = torch.add(h, g, alpha=-eta, out=hs[i])
        elif method == "heavy_ball":
            m = torch.mul(m, mu, out=ms[i]).add_(g, alpha=-eta)
            h = torch.add(h, m, out=hs[i])
        else:
            y = torch.add(h, g, alpha=-eta, out=ms[i])
            h = torch.sub(y, m, out=hs[i]).mul_(mu).add_(y)
            m = y
    return hs, ms


def sbo_backward(
    grad_hs: torch.Tensor,
    grad_ms: torch.Tensor | None,
    u: torch.Tensor,
    W: torch.Tensor,
    h0: torch.Tensor | None,
    m0: torch.Tensor | None,
    mu: torch.Tensor,
    hs: torch.Tensor,
    ms: torch.Tensor,
    eta: float,
    steps: int,
    method: str,
    samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`sbo_forward` given the cotangents of ``hs`` and ``ms``.

    Returns ``(grad_u (T, B, n), grad_W (n, n), grad_h0 (B, n), grad_m0 (B, n), grad_mu ())``.
    ``grad_m0`` is zero where ``m0`` was not given (its default depends on ``h0``, whose
    gradient then includes that path). With ``samples`` ``S > 1`` the batch holds ``S``
    samples stacked sample-major (``vmap``'s per-sample gradients) and ``grad_W`` and
    ``grad_mu`` are per sample: ``(S, n, n)`` and ``(S,)``.
    """
    T, B, n = u.shape
    N = T * steps
    momentum = method != "gd"
    h_init = u.new_zeros((B, n)) if h0 is None else h0
    m_init = initial_momentum(h_init, m0, method)
    chunk = max(1, min(N, _CHUNK_ELEMENTS // max(1, B * n)))
    s_buf = u.new_empty((chunk, B, n))
    gbar_buf = u.new_empty((chunk, B, n))
    zbar = u.new_empty((N, B, n))
    gW = W.new_zeros((samples, n, n))
    gmu = u.new_zeros(samples)
    a_h = torch.zeros((B, n), dtype=u.dtype, device=u.device)
    a_m = torch.zeros((B, n), dtype=u.dtype, device=u.device) if momentum else None
    WT = W.t()
    for end in range(N, 0, -chunk):
        start = max(0, end - chunk)
        for i in reversed(range(start, end)):
            c = i - start
            a_h = a_h + grad_hs[i]
            h = hs[i - 1] if i > 0 else h_init
            if method == "gd":
                gbar = torch.mul(a_h, -eta, out=gbar_buf[c])
                a_pre = a_h
            else:
                if grad_ms is not None and grad_ms.numel():
                    a_m = a_m + grad_ms[i]
                m = ms[i - 1] if i > 0 else m_init
                if method == "heavy_ball":
                    total = a_m + a_h  # the cotangent of the new velocity
                    gmu += (total * m).view(samples, -1).sum(1)
                    a_m = total * mu
                    a_pre = a_h
                else:
                    total = a_m + (1 + mu) * a_h  # the cotangent of the new look-ahead y
                    gmu += (a_h * (ms[i] - m)).view(samples, -1).sum(1)
                    a_m = a_h * -mu
                    a_pre = total
                gbar = torch.mul(total, -eta, out=gbar_buf[c])
            z = torch.addmm(u[i // steps], h, WT)
            active = z > 0
            torch.mul(h - z.clamp_min_(0), active, out=s_buf[c])
            rbar = gbar - (gbar @ WT) * active
            zb = torch.mul(rbar, active, out=zbar[i]).neg_()
            a_h = a_pre + rbar + zb @ W
        # -sum_i s_i^T gbar_i over the chunk as one product
        k = end - start
        gW -= per_sample_outer(s_buf[:k], gbar_buf[:k], samples)
    # sum_i zbar_i^T h_{i-1}: all iterations but the first in one product
    if N > 1:
        gW += per_sample_outer(zbar[1:], hs[:-1], samples)
    gW += per_sample_outer(zbar[:1], h_init.unsqueeze(0), samples)
    gu = zbar if steps == 1 else zbar.view(T, steps, B, n).sum(1)
    if method == "nesterov" and m0 is None:
        a_h = a_h + a_m  # y_0 = h0
        a_m = torch.zeros_like(a_h)
    elif not momentum or m0 is None:
        a_m = torch.zeros_like(a_h)
    if samples == 1:
        gW, gmu = gW[0], gmu[0]
    return gu, gW, a_h, a_m, gmu


def sbo_autograd(
    u: torch.Tensor,
    W: torch.Tensor,
    h0: torch.Tensor | None = None,
    m0: torch.Tensor | None = None,
    mu: torch.Tensor | float = 0.5,
    eta: float = 0.5,
    steps: int = 1,
    method: str = "gd",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Oracle: a per-step loop from the definitions, differentiable by autograd.

    ``g`` is autograd's gradient of ``f_t(h) = 1/2 ||h - relu(W h + u_t)||^2`` (with
    ``create_graph=True`` so that the result is differentiable), not the closed form.
    Column convention as METHODS.md (``W h`` for one sequence, batched with ``einsum``).
    Returns ``(h (T, B, n), m_T (B, n) or None)``.
    """
    T, B, n = u.shape
    h = u.new_zeros((B, n)) if h0 is None else h0
    m = initial_momentum(h, m0, method)
    out = []
    for t in range(T):
        for _ in range(steps):
            with torch.enable_grad():
                hv = h if h.requires_grad else h.detach().requires_grad_()
                f = 0.5 * (hv - torch.relu(torch.einsum("ij,bj->bi", W, hv) + u[t])).pow(2).sum()
                g, = torch.autograd.grad(f, hv, create_graph=True)
            h, m = _optimizer_step(h, m, g, mu, eta, method)
        out.append(h)
    return torch.stack(out), m


def _optimizer_step(h, m, g, mu, eta: float, method: str):
    """One iteration of the lower-level optimizer, out of place: ``(h, m)`` after it."""
    if method == "gd":
        return h - eta * g, m
    if method == "heavy_ball":
        m = mu * m - eta * g
        return h + m, m
    y = h - eta * g
    return y + mu * (y - m), y


def sbo_loop(
    u: torch.Tensor,
    W: torch.Tensor,
    h0: torch.Tensor | None,
    m0: torch.Tensor | None,
    mu: torch.Tensor,
    eta: float,
    steps: int,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sbo_forward` iteration by iteration, out of place, with the closed-form ``g``:
    differentiable by autograd to any order (the op's double backward differentiates
    through it). Same arguments and result."""
    h = u.new_zeros(u.shape[1:]) if h0 is None else h0
    m = initial_momentum(h, m0, method)
    hs, ms = [], []
    for u_t in u.unbind(0):  # not u[t]: see reference.recurrence_loop
        for _ in range(steps):
            h, m = _optimizer_step(h, m, _lower_gradient(h, W, u_t), mu, eta, method)
            hs.append(h)
            ms.append(m)
    return torch.stack(hs), (u.new_empty(0) if method == "gd" else torch.stack(ms))


def sbo_hop(
    u: torch.Tensor,
    W: torch.Tensor,
    h0: torch.Tensor | None,
    m0: torch.Tensor | None,
    mu: torch.Tensor,
    eta: float,
    steps: int,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sbo_forward` as one ``scan`` higher-order op over time (the ``steps`` inner
    iterations unrolled in its body): same arguments and result, the form ``torch.export``
    captures as a single loop (see :mod:`fastunitary.onnx`)."""
    _, B, n = u.shape
    h_start = u.new_zeros((B, n)) if h0 is None else h0
    gd = method == "gd"
    # gd has no optimizer state: the carry is h alone. Nesterov's look-ahead starts as h0
    # itself: a copy, since two carries may not alias.
    start = [h_start] if gd else [h_start, initial_momentum(h_start.clone(), m0, method)]

    def step(*args):
        (h, u_t, W, mu), m = (args, None) if gd else (args[:1] + args[2:], args[1])
        hs, ms = [], []
        for _ in range(steps):
            h, m = _optimizer_step(h, m, _lower_gradient(h, W, u_t), mu, eta, method)
            hs.append(h)
            ms.append(m)
        if gd:
            return [h, torch.stack(hs)]  # stack copies: no aliasing
        return [h, m, torch.stack(hs), torch.stack(ms)]

    out = scan_over_time(step, start, [u], [W, mu])
    if gd:
        return out[1].flatten(0, 1), u.new_empty(0)
    return out[2].flatten(0, 1), out[3].flatten(0, 1)
