"""``sbo_recurrence``: SBO-RNN's hidden states as optimizer iterates, over a whole sequence.

Public function, dispatch, ``torch.library`` registration and autograd; the equations and
the closed-form backward are in :mod:`fastunitary.reference.sbo_recurrence`.

Why this is its own op and not the fused ``recurrence`` kernel: a step of SBO-RNN is
``h - eta (I - W^T D)(h - relu(W h + u))``. It needs ``W h`` *and* ``W^T (D r)`` per
iteration, and the new state is not an elementwise function of ``W h + u`` (plus a
momentum or look-ahead state for the momentum variants), so it is not of the form
``act(W h + u)`` that the fused kernel runs; no setting of ``eta``, ``K`` or the method
makes it one. It has no Triton kernel: ``backend="triton"`` raises, ``"auto"`` runs the
reference (one sequential loop of a few BLAS calls per iteration, on any device) and the
op is still a single node under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .. import reference
from .._backend import BackendUnavailableError, check_backend_name
from .._checks import (check_fixed_float, check_positive_int, check_same_device, check_shape,
                       check_tensor)
from ..reference.sbo_recurrence import SBO_METHODS
from ._dispatch import (BATCH_MAJOR, PER_SAMPLE, PLACEHOLDER, SHARED, TIME_MAJOR, autocast_off,
                        differentiable, recomputed_gradients, register_folded_vmap)
from .recurrence import compute_dtype

NO_KERNEL = (
    "backend='triton' is not available for fastunitary op 'sbo_recurrence': an SBO-RNN step "
    "needs both W h and W^T (D r) and keeps an optimizer state, so it is not the form "
    "act(W h + u) of the fused recurrence kernel, and it has no kernel of its own. "
    "Use backend='reference' (or 'auto'), which runs on any device."
)


@torch.library.custom_op("fastunitary::sbo_recurrence", mutates_args=())
def _sbo_op(
    u: torch.Tensor,
    W: torch.Tensor,
    h0: Optional[torch.Tensor],
    m0: Optional[torch.Tensor],
    mu: torch.Tensor,
    eta: float,
    steps: int,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast_off(u):
        return reference.sbo_forward(u, W, h0, m0, mu, eta, steps, method)


@_sbo_op.register_fake
def _(u, W, h0, m0, mu, eta, steps, method):
    T, B, n = u.shape
    ms = u.new_empty((T * steps, B, n)) if method != "gd" else u.new_empty(0)
    return u.new_empty((T * steps, B, n)), ms


@torch.library.custom_op("fastunitary::sbo_recurrence_backward", mutates_args=())
def _sbo_backward_op(
    grad_hs: torch.Tensor,
    grad_ms: Optional[torch.Tensor],
    u: torch.Tensor,
    W: torch.Tensor,
    h0: Optional[torch.Tensor],
    m0: Optional[torch.Tensor],
    mu: torch.Tensor,
    hs: torch.Tensor,
    ms: torch.Tensor,
    eta: float,
    steps: int,
    method: str,
    samples: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of u, W, h0, m0 and mu; with ``samples > 1`` (``vmap``'s batching
    rule) those of W and mu per sample, ``(samples, n, n)`` and ``(samples,)``."""
    with autocast_off(hs):
        out = reference.sbo_backward(grad_hs, grad_ms, u, W, h0, m0, mu, hs, ms, eta, steps,
                                     method, samples)
    return tuple(t.contiguous() for t in out)


@_sbo_backward_op.register_fake
def _(grad_hs, grad_ms, u, W, h0, m0, mu, hs, ms, eta, steps, method, samples):
    B, n = u.shape[1:]
    per_sample = () if samples == 1 else (samples,)
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            W.new_empty((*per_sample, n, n)),
            u.new_empty((B, n)), u.new_empty((B, n)), u.new_empty(per_sample))


def _setup_context(ctx, inputs, output):
    u, W, h0, m0, mu, eta, steps, method = inputs
    ctx.config = (eta, steps, method)
    ctx.save_for_backward(u, W, h0, m0, mu, *output)


def _backward(ctx, grad_hs, grad_ms):
    u, W, h0, m0, mu, hs, ms = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the gradient will be differentiated again
        loop = lambda u, W, h0, m0, mu: reference.sbo_loop(  # noqa: E731
            u, W, h0, m0, mu, *ctx.config)
        gu, gW, gh0, gm0, gmu = recomputed_gradients(loop, (u, W, h0, m0, mu),
                                                     ctx.needs_input_grad, (grad_hs, grad_ms))
        return (gu, gW, gh0, gm0, gmu, None, None, None)
    if grad_hs is None:
        grad_hs = torch.zeros_like(hs)
    gu, gW, gh0, gm0, gmu = _sbo_backward_op(grad_hs, grad_ms, u, W, h0, m0, mu, hs, ms,
                                             *ctx.config, 1)
    return (gu, gW, None if h0 is None else gh0, None if m0 is None else gm0, gmu,
            None, None, None)


_sbo = differentiable(_sbo_op, _backward, _setup_context,
                      reference.sbo_loop)


def _momentum_kind(method: str) -> str:
    """``ms``'s kind: gradient descent keeps no momentum, its ``ms`` is an empty placeholder."""
    return PLACEHOLDER if method == "gd" else TIME_MAJOR


register_folded_vmap(
    _sbo_op, (TIME_MAJOR, SHARED, BATCH_MAJOR, BATCH_MAJOR, SHARED, None, None, None),
    lambda u, W, h0, m0, mu, eta, steps, method: (TIME_MAJOR, _momentum_kind(method)))
register_folded_vmap(
    _sbo_backward_op,
    lambda grad_hs, grad_ms, u, W, h0, m0, mu, hs, ms, eta, steps, method, samples: (
        TIME_MAJOR, _momentum_kind(method), TIME_MAJOR, SHARED, BATCH_MAJOR,
        BATCH_MAJOR, SHARED, TIME_MAJOR, _momentum_kind(method), None, None, None,
        None),
    # grad_u, grad_W, grad_h0, grad_m0, grad_mu
    (TIME_MAJOR, PER_SAMPLE, BATCH_MAJOR, BATCH_MAJOR, PER_SAMPLE),
    samples_arg=12)


def check_options(method: str, eta: float, steps: int) -> float:
    """``eta`` as a float; raise unless ``method``, ``eta`` and ``steps`` are valid
    (``eta`` is fixed: a tensor that requires grad is refused, not silently detached)."""
    if method not in SBO_METHODS:
        raise ValueError(f"method must be one of {SBO_METHODS}, got {method!r}")
    check_positive_int("steps", steps)
    eta = check_fixed_float("eta", eta)
    if not 0 < eta < math.inf:
        raise ValueError(f"eta must be > 0 and finite, got {eta!r}")
    return eta


def sbo_recurrence(
    u: torch.Tensor,
    W: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    m0: Optional[torch.Tensor] = None,
    *,
    method: str = "gd",
    eta: float = 0.05,
    mu: torch.Tensor | float | None = None,
    steps: int = 1,
    backend: str = "auto",
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """SBO-RNN states: per time step, ``steps`` iterations of an optimizer on
    ``f_t(h) = 1/2 ||h - relu(W h + u_t)||^2`` starting from the previous state.

    Args:
        u: ``(T, B, n)`` input term ``U x_t + b``, precomputed for all t.
        W: ``(n, n)`` recurrent matrix (``W h`` for a column state).
        h0: ``(B, n)`` initial state, ``None`` for zeros.
        m0: ``(B, n)`` initial optimizer state for the momentum methods (heavy ball: the
            velocity, default 0; Nesterov: the previous look-ahead point, default ``h0``);
            must be ``None`` for ``"gd"``.
        method: ``"gd"``, ``"heavy_ball"`` or ``"nesterov"`` (see
            :mod:`fastunitary.reference.sbo_recurrence` for the updates).
        eta: step size, > 0. ``h_t`` cannot grow the gradient for ``"gd"`` while
            ``eta * ||I - D W||^2 <= 2`` (the step's Jacobian is ``I - eta J^T J``).
        mu: momentum coefficient of ``"heavy_ball"`` and ``"nesterov"``, a float or a
            0-dim tensor (differentiable); default 0.5. Must be ``None`` for ``"gd"``,
            which has no momentum (given, it was silently ignored).
        steps: iterations per time step (K >= 1).
        backend: ``"auto"`` or ``"reference"``; ``"triton"`` raises (no kernel: see the
            module docstring).
    Returns:
        ``(h, m_T)``: ``h`` ``(T, B, n)`` the state after each time step, in float32
        (float64 if any input is) whatever the input precision; ``m_T`` ``(B, n)`` the
        final optimizer state (``None`` for ``"gd"``), to continue a sequence.
    """
    check_tensor("u", u, allow_complex=False)
    check_tensor("W", W, allow_complex=False)
    eta = check_options(method, eta, steps)
    check_backend_name(backend)
    if backend == "triton":
        raise BackendUnavailableError(NO_KERNEL)
    check_shape("u", u, (None, None, None), what="(T, B, n)")
    T, B, n = u.shape
    if T < 1 or B < 1 or n < 1:
        raise ValueError(f"u must have T, B, n >= 1, got shape {tuple(u.shape)}")
    check_shape("W", W, (n, n), what="(n, n)")
    for name, s in (("h0", h0), ("m0", m0)):
        if s is not None:
            check_tensor(name, s, allow_complex=False)
            check_shape(name, s, (B, n), what="(B, n)")
    if method == "gd":
        if m0 is not None:
            raise ValueError("m0 is the momentum methods' state; method='gd' has none")
        if mu is not None:
            raise ValueError("mu is the momentum methods' coefficient; method='gd' has none")
        mu = 0.0  # the op's placeholder, read by no update
    elif mu is None:
        mu = 0.5
    if isinstance(mu, torch.Tensor):  # differentiable
        check_tensor("mu", mu, allow_complex=False)
        if mu.dim() != 0:
            raise ValueError(f"mu must be a float or a 0-dim tensor, got shape {tuple(mu.shape)}")
        check_same_device("u", u, mu=mu)
    else:
        mu = check_fixed_float("mu", mu)
        # comparisons, not math.isfinite: under torch.compile(dynamic=True) mu is symbolic
        if not -math.inf < mu < math.inf:
            raise ValueError(f"mu must be finite, got {mu}")
    check_same_device("u", u, W=W, h0=h0, m0=m0)
    dtype = compute_dtype(*(t.dtype for t in (u, W, h0, m0, mu)
                            if isinstance(t, torch.Tensor)))
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    # a float mu takes the state's dtype (not the default dtype, which may be float64)
    mu_t = mu.to(dtype) if isinstance(mu, torch.Tensor) else torch.tensor(mu, dtype=dtype,
                                                                          device=u.device)
    hs, ms = _sbo(cast(u), cast(W), cast(h0), cast(m0), mu_t, eta, steps, method)
    h = hs if steps == 1 else hs[steps - 1::steps].contiguous()
    return h, (ms[-1] if method != "gd" else None)
