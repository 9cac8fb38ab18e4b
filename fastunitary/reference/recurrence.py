"""The recurrence ``h_t = act(W h_{t-1} + u_t)`` in plain PyTorch: the CPU path and the oracle.

With a ``leak`` ``alpha`` below 1 it is the leaky (rate) form
``h_t = (1 - alpha) h_{t-1} + alpha act(W h_{t-1} + u_t)``; ``alpha = 1`` is the plain one.

Two implementations:

- :func:`recurrence_forward` / :func:`recurrence_backward`: one sequential loop each way
  over the whole sequence with the closed-form backward of METHODS.md section 3. The
  forward writes every ``h_t`` into one preallocated output with a few in-place ops per
  step. The backward recomputes the pre-activations ``z_t = W h_{t-1} + u_t`` with one
  large matrix product per chunk of steps (cheaper than storing them), precomputes the
  activation's backward coefficients for the chunk, runs the only sequential part
  (``g_t = grad h_t + W^T dz_{t+1}``, ``dz_t = act'(z_t) g_t``) and then forms the weight
  gradient ``sum_t dz_t h_{t-1}^T`` as one large product per chunk. Chunking bounds the
  extra memory to about four chunk-sized buffers whatever ``T``.
- :func:`recurrence_autograd`: a per-step loop differentiated by autograd, on natural real
  or complex tensors, written straight from the equations: the test oracle.
- :func:`recurrence_hop`: the forward as one ``scan`` higher-order op, the form that
  ``torch.export`` captures as a single loop over a symbolic ``T`` (and the ONNX exporter
  writes as one ``Scan`` node); see :mod:`fastunitary.onnx`.

The fast pair works on real "planes": a complex state of size ``n`` is the real vector
``[Re h, Im h]`` of width ``d = 2n``, and a complex ``W`` its real ``2n x 2n`` embedding
``[[Re W, -Im W], [Im W, Re W]]``, so the complex product is one real product. Only the
modReLU couples the two planes (``is_complex=True``); tanh and relu act on each plane.
"""

from __future__ import annotations

import torch

from .modrelu import modrelu, modrelu_backward_coefficients, modrelu_of_planes, modrelu_planes_
from ._scan import scan_over_time
from ._samples import per_sample_outer, per_sample_sum, previous_states

ACTIVATIONS = ("modrelu", "tanh", "relu", "identity")

# Elements per chunk buffer of the backward: 2^20 floats = 4 MiB.
_CHUNK_ELEMENTS = 1 << 20


def _activate_(z: torch.Tensor, bias: torch.Tensor | None, activation: str, is_complex: bool):
    if activation == "modrelu":
        return modrelu_planes_(z, bias, is_complex)
    if activation == "tanh":
        return z.tanh_()
    if activation == "relu":
        return z.relu_()
    return z


def recurrence_forward(
    u: torch.Tensor,
    W: torch.Tensor,
    bias: torch.Tensor | None,
    h0: torch.Tensor | None,
    activation: str,
    is_complex: bool,
    leak: float = 1.0,
) -> torch.Tensor:
    """All states of ``h_t = act(W h_{t-1} + u_t)`` (leaky: see the module), planes layout.

    Args:
        u: ``(T, B, d)`` input term.
        W: ``(d, d)`` recurrent matrix (real embedding for a complex state).
        bias: ``(d // 2,)`` (complex) or ``(d,)`` (real) modReLU bias; ``None`` otherwise.
        h0: ``(B, d)`` initial state, or ``None`` for zeros.
    Returns:
        ``(T, B, d)``: ``h_1 ... h_T``.
    """
    T, B, d = u.shape
    out = torch.empty((T, B, d), dtype=u.dtype, device=u.device)
    WT = W.t()
    h = torch.zeros((B, d), dtype=u.dtype, device=u.device) if h0 is None else h0
    for t in range(T):
        z = torch.addmm(u[t], h, WT, out=out[t])
        a = _activate_(z, bias, activation, is_complex)
        h = a if leak == 1.0 else a.mul_(leak).add_(h, alpha=1.0 - leak)
    return out


def _activation_of_planes(z: list[torch.Tensor], bias: torch.Tensor | None,
                          activation: str) -> list[torch.Tensor]:
    """The activation out of place on the planes as separate tensors (one or two)."""
    if activation == "modrelu":
        return modrelu_of_planes(z, bias)
    if activation in ("tanh", "relu"):
        return [z_p.tanh() if activation == "tanh" else z_p.relu() for z_p in z]
    return z


def recurrence_loop(
    u: torch.Tensor,
    W: torch.Tensor,
    bias: torch.Tensor | None,
    h0: torch.Tensor | None,
    activation: str,
    is_complex: bool,
    leak: float = 1.0,
) -> torch.Tensor:
    """:func:`recurrence_forward` step by step out of place, differentiable by autograd to
    any order: the op's double backward differentiates through it. Same arguments and
    result."""
    P = 2 if is_complex else 1
    h = torch.zeros_like(u[0]) if h0 is None else h0
    out = []
    # unbind, not u[t]: an indexed step's backward writes a whole (T, B, d) gradient, so a
    # double backward through the loop would cost memory and time in T^2
    for u_t in u.unbind(0):
        z = torch.addmm(u_t, h, W.t())
        a = torch.cat(_activation_of_planes(list(z.chunk(P, dim=-1)), bias, activation), dim=-1)
        h = a if leak == 1.0 else a * leak + h * (1.0 - leak)
        out.append(h)
    return torch.stack(out)


def recurrence_backward_from_states(
    grad_h: torch.Tensor,
    W: torch.Tensor,
    h0: torch.Tensor | None,
    h: torch.Tensor,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad u, grad W, grad h0)`` of the plain tanh, relu or identity recurrence (leak 1),
    out of place and differentiable: their derivative is read off the states (``1 - h^2``,
    ``h > 0``), so no input is needed, and it is what the op's double backward
    differentiates when ``u`` was not saved. Planes layout, as :func:`recurrence_backward`."""
    if activation == "tanh":
        slope = 1 - h * h
    elif activation == "relu":
        slope = (h > 0).to(h.dtype)
    else:
        slope = torch.ones_like(h)
    carry = torch.zeros_like(h[0])
    dz = []
    for slope_t, grad_t in zip(reversed(slope.unbind(0)), reversed(grad_h.unbind(0))):
        dz.append(slope_t * (grad_t + carry))  # unbound, as in recurrence_loop
        carry = dz[-1] @ W
    dz = torch.stack(dz[::-1])
    h_prev = torch.cat([(torch.zeros_like(h[0]) if h0 is None else h0).unsqueeze(0), h[:-1]])
    return dz, torch.einsum("tbi,tbj->ij", dz, h_prev), carry


def recurrence_hop(
    u: torch.Tensor,
    W: torch.Tensor,
    bias: torch.Tensor | None,
    h0: torch.Tensor | None,
    activation: str,
    is_complex: bool,
    leak: float = 1.0,
) -> torch.Tensor:
    """:func:`recurrence_forward` as one ``scan`` over time: same arguments, same result.

    For export only (a graph with one loop node whatever ``T``); run eagerly it is a slow
    per-step loop without a backward formula of ours. A complex state runs as its two
    planes, each a tensor of its own, with ``W``'s four blocks: the loop body is products
    and elementwise ops only. (Splitting and joining the planes inside the body made the
    ONNX exporter's retrace in torch 2.13 return a ``SymInt`` as a step output.)
    """
    _, B, d = u.shape
    P = 2 if is_complex else 1
    n = d // P
    h_start = torch.zeros((B, d), dtype=u.dtype, device=u.device) if h0 is None else h0
    # blocks[p][q] = W[p-th rows, q-th columns]^T, so that z_p = u_p + sum_q h_q blocks[p][q].
    # Copies, like the planes: the loop's inputs may not alias one another, and a carry must
    # have the strides of the step's output (.contiguous() keeps a (1, 2n) row's slice as it is).
    dense = lambda x: x.clone(memory_format=torch.contiguous_format)  # noqa: E731
    blocks = [dense(W[p * n:(p + 1) * n, q * n:(q + 1) * n].t()) for p in range(P) for q in range(P)]
    planes = lambda x: [dense(x[..., p * n:(p + 1) * n]) for p in range(P)]  # noqa: E731

    def step(*args):  # h_1..h_P, u_1..u_P, the P^2 blocks[, bias]: a trace counts them
        h, u_t = args[:P], args[P:2 * P]
        W_t, bias = args[2 * P:2 * P + P * P], args[2 * P + P * P:]
        z = []
        for p in range(P):
            z_p = torch.addmm(u_t[p], h[0], W_t[p * P])
            for q in range(1, P):
                z_p = torch.addmm(z_p, h[q], W_t[p * P + q])
            z.append(z_p)
        a = _activation_of_planes(z, bias[0] if bias else None, activation)
        if leak != 1.0:
            a = [a_p * leak + h_p * (1.0 - leak) for a_p, h_p in zip(a, h)]
        return [*a, *(a_p.clone() for a_p in a)]  # a carry and an output may not alias

    constants = blocks if bias is None else [*blocks, bias]
    out = scan_over_time(step, planes(h_start), planes(u), constants)
    return torch.cat(out[P:], dim=-1)


def _swap_planes(g: torch.Tensor) -> torch.Tensor:
    """``[gr | gi] -> [gi | gr]`` on the last axis."""
    return g.unflatten(-1, (2, -1)).flip(-2).flatten(-2)


def recurrence_backward(
    grad_h: torch.Tensor,
    u: torch.Tensor | None,
    W: torch.Tensor,
    bias: torch.Tensor | None,
    h0: torch.Tensor | None,
    h: torch.Tensor,
    activation: str,
    is_complex: bool,
    leak: float = 1.0,
    samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Closed-form backward of :func:`recurrence_forward`.

    Leaky form: ``g_t = grad h_t + (1 - alpha) g_{t+1} + W^T dz_{t+1}`` and
    ``dz_t = alpha act'(z_t) g_t``, with ``z_t`` recomputed from ``u`` (``h_t`` is no longer
    ``act(z_t)``, so tanh and relu cannot read their derivative off it).

    Args:
        grad_h: ``(T, B, d)`` gradient of the loss with respect to every ``h_t``; any
            strides (an expanded, stride-0 gradient is read correctly).
        u: ``(T, B, d)`` the forward's input term; needed only for ``"modrelu"`` and for a
            leak below 1.
        W, bias, h0: the forward's inputs.
        h: ``(T, B, d)`` the forward's output.
        samples: ``S``, how many samples the batch holds, stacked sample-major (``vmap``'s
            per-sample gradients, :mod:`fastunitary.reference._samples`): ``grad_W`` and
            ``grad_bias`` are then summed per sample, ``(S, d, d)`` and ``(S, n)``.
    Returns:
        ``(grad_u, grad_W, grad_bias, grad_h0)`` with the shapes of ``u``, ``W``,
        ``bias`` (``None`` when ``bias`` is ``None``) and ``(B, d)``.
    """
    T, B, d = h.shape
    dtype, device = h.dtype, h.device
    if h0 is None:
        h0 = torch.zeros((B, d), dtype=dtype, device=device)
    dz = torch.empty((T, B, d), dtype=dtype, device=device)
    per_sample = () if samples == 1 else (samples,)
    grad_W = W.new_zeros((*per_sample, d, d))
    grad_bias = None if bias is None else bias.new_zeros((*per_sample, d))
    WT = W.t()
    chunk = max(1, min(T, _CHUNK_ELEMENTS // max(1, B * d)))
    g = torch.empty((chunk, B, d), dtype=dtype, device=device)
    leaky = leak != 1.0
    g_next = None  # g_{t+1} across a chunk boundary (leaky form)
    for t1 in range(T, 0, -chunk):
        t0 = max(0, t1 - chunk)
        C = t1 - t0
        h_prev = previous_states(h0, h, t0, t1)
        Q = Phi = None
        if activation == "modrelu":
            z = torch.matmul(h_prev, WT).add_(u[t0:t1])
            P, Q, Phi = modrelu_backward_coefficients(z, bias, is_complex)
            del z
        elif leaky and activation in ("tanh", "relu"):
            z = torch.matmul(h_prev, WT).add_(u[t0:t1])
            P = 1.0 - z.tanh_().square_() if activation == "tanh" else (z > 0).to(dtype)
            del z
        elif activation == "tanh":
            P = 1.0 - h[t0:t1].square()
        elif activation == "relu":
            P = (h[t0:t1] > 0).to(dtype)
        else:
            P = None
        if leaky:
            P, Q, Phi = (None if c is None else c * leak for c in (P, Q, Phi))
            if P is None:
                P = torch.full((1, 1, 1), leak, dtype=dtype, device=device).expand(C, B, d)
        for t in range(t1 - 1, t0 - 1, -1):
            k = t - t0
            if t + 1 < T:
                gk = torch.addmm(grad_h[t], dz[t + 1], W, out=g[k])
                if leaky:
                    gk.add_(g[k + 1] if k + 1 < C else g_next, alpha=1.0 - leak)
            else:
                gk = g[k].copy_(grad_h[t])
            if P is None:
                dz[t].copy_(gk)
                continue
            torch.mul(P[k], gk, out=dz[t])
            if Q is not None:
                dz[t].addcmul_(Q[k], _swap_planes(gk))
        # Weight gradient: one large product over the chunk's steps and batch (per sample).
        if samples == 1:
            grad_W.addmm_(dz[t0:t1].reshape(C * B, d).t(), h_prev.reshape(C * B, d))
        else:
            grad_W += per_sample_outer(dz[t0:t1], h_prev, samples)
        if grad_bias is not None:
            rows = Phi.mul_(g[:C])
            grad_bias += rows.sum(dim=(0, 1)) if samples == 1 else per_sample_sum(rows, samples)
        if leaky:
            g_next = g[0].clone()
    grad_h0 = dz[0] @ W
    if leaky:
        grad_h0.add_(g_next, alpha=1.0 - leak)
    if grad_bias is not None and is_complex:  # the planes' sums: one per complex unit
        grad_bias = grad_bias.unflatten(-1, (2, -1)).sum(-2)
    return dz, grad_W, grad_bias, grad_h0


def weight_gradients_per_sample(grad_h, grad_u, u, W, bias, h0, h, is_complex: bool,
                                samples: int):
    """``grad_W`` ``(S, d, d)`` and ``grad_bias`` ``(S, n)`` (``None`` without ``bias``)
    of each sample, for a finished backward of the plain recurrence (leak 1) that summed
    them across samples: the Triton kernel's, whose bias partial sums run over blocks of
    rows. Shapes as :func:`recurrence_backward`'s (batch ``S B``).

    ``grad_W = sum_t dz_t^T h_{t-1}`` with ``dz = grad_u``; the modReLU bias gradient is
    ``sum Phi * g`` with ``g_t = grad h_t + W^T dz_{t+1}`` the gradient of ``h_t`` and
    ``Phi`` from ``z_t = W h_{t-1} + u_t``, both recomputed with large products, over
    chunks of steps as the backward's own (a few chunk-sized buffers whatever ``T``).
    """
    T, B, d = h.shape
    grad_W = W.new_zeros((samples, d, d))
    grad_bias = None if bias is None else h.new_zeros((samples, d))
    chunk = max(1, min(T, _CHUNK_ELEMENTS // max(1, B * d)))
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        h_prev = previous_states(h0, h, t0, t1)
        grad_W += per_sample_outer(grad_u[t0:t1], h_prev, samples)
        if bias is None:
            continue
        _, _, Phi = modrelu_backward_coefficients(
            torch.addmm(u[t0:t1].reshape(-1, d), h_prev.reshape(-1, d), W.t()).view(-1, B, d),
            bias, is_complex)
        g = grad_h[t0:t1].clone(memory_format=torch.contiguous_format)
        later = grad_u[t0 + 1:t1 + 1]  # dz_{t+1}; none after the last step
        g[:later.shape[0]] += torch.matmul(later, W)
        grad_bias += per_sample_sum(Phi.mul_(g), samples)
    if grad_bias is not None and is_complex:  # the planes' sums: one per complex unit
        grad_bias = grad_bias.unflatten(-1, (2, -1)).sum(-2)
    return grad_W, grad_bias


def recurrence_autograd(
    u: torch.Tensor,
    W: torch.Tensor,
    bias: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    activation: str = "modrelu",
    leak: float = 1.0,
) -> torch.Tensor:
    """The recurrence as a per-step autograd loop on natural tensors: the test oracle
    (``leak`` below 1: ``h_t = (1 - leak) h_{t-1} + leak act(W h_{t-1} + u_t)``).

    Args:
        u: ``(T, B, n)`` real or complex.  W: ``(n, n)``.  bias: ``(n,)`` real.
        h0: ``(B, n)`` or ``None``.
    Returns:
        ``(T, B, n)``. For a complex state, tanh and relu act on the real and imaginary
        parts separately; modReLU on the modulus.
    """
    h = torch.zeros_like(u[0]) if h0 is None else h0
    out = []
    for t in range(u.shape[0]):
        z = h @ W.transpose(-2, -1) + u[t]
        if activation == "modrelu":
            a = modrelu(z, bias if bias is not None else torch.zeros_like(z.real[0]))
        elif activation in ("tanh", "relu"):
            f = torch.tanh if activation == "tanh" else torch.relu
            a = torch.complex(f(z.real), f(z.imag)) if z.is_complex() else f(z)
        else:
            a = z
        h = a if leak == 1.0 else (1 - leak) * h + leak * a
        out.append(h)
    return torch.stack(out)
