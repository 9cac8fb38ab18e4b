"""``spectral_radius`` and ``spectral_normalize``: ENRNN's eigenvalue normalization.

``spectral_radius(M)`` is a registered op (one node under ``torch.compile``, the eigenvalue
computation and its few host synchronizations kept inside it; see
:mod:`fastunitary.reference.spectral_radius` for the route) whose backward is the closed form of METHODS.md section
4, applied with plain real tensor algebra. ``spectral_normalize`` composes it into
``W2 = M / sigma`` under ENRNN's two rules, with tensor ops only (no ``.item()``), so the
"sticky" switch compiles without graph breaks. Computed on any device: to float64
rounding for a float64 ``M``, to float32 rounding (by powers of ``M``, GEMMs on its own
device) for a float32 ``M`` larger than 64 x 64.
"""

from __future__ import annotations

import torch

from .. import reference
from .._checks import check_same_device, check_tensor
from ._dispatch import autocast_off, differentiable, recomputed_gradients, register_stacked_vmap

RULES = ("sticky", "max1")


@torch.library.custom_op("fastunitary::spectral_radius", mutates_args=())
def _spectral_radius_op(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, d sigma / d M)``; the second output is what the backward needs."""
    with autocast_off(M):
        sigma, grad = reference.spectral_radius(M)
        return sigma.contiguous(), grad.contiguous()


@_spectral_radius_op.register_fake
def _(M):
    return M.new_empty(M.shape[:-2]), torch.empty_like(M, memory_format=torch.contiguous_format)


@torch.library.custom_op("fastunitary::spectral_radius_backward", mutates_args=())
def _spectral_radius_backward_op(
    grad_sigma: torch.Tensor, dsigma: torch.Tensor, M: torch.Tensor
) -> torch.Tensor:
    """``grad_sigma[..., None, None] * d sigma / d M``. An op of its own, with no autograd
    formula, so that differentiating its result raises instead of treating
    ``d sigma / d M`` as a constant (which would silently drop the second-order term
    through ``sigma``); under ``create_graph`` the backward takes the differentiable path
    instead. ``M`` is not read: it ties the op to ``M``, so that the graph records it (and
    differentiating it raises) even when ``grad_sigma`` is a constant, as for a loss linear
    in ``sigma``."""
    return grad_sigma[..., None, None] * dsigma


@_spectral_radius_backward_op.register_fake
def _(grad_sigma, dsigma, M):
    return torch.empty_like(dsigma, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1], inputs[0])


def _backward(ctx, grad_sigma, _grad_of_grad):
    dsigma, M = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the gradient will be differentiated again
        return _differentiable_gradient(grad_sigma, dsigma, M)
    return _spectral_radius_backward_op(grad_sigma, dsigma, M)


def _differentiable_gradient(grad_sigma: torch.Tensor, dsigma: torch.Tensor,
                             M: torch.Tensor) -> torch.Tensor:
    """``grad_sigma * d sigma / d M`` as differentiable tensor ops, for a double backward.

    Its derivative is ``d grad_sigma (x) d sigma / d M + grad_sigma d^2 sigma / d M^2``.
    The second term comes from autograd through Newton steps on the dominant eigenpair
    alone (:func:`fastunitary.reference.spectral_radius_newton`), defined wherever the
    dominant eigenvalue is simple, whatever the rest of the spectrum (a low-rank or
    diagonal ``M`` repeats eigenvalues). It is dropped, per matrix, where it does not exist
    (a dominant eigenvalue that is not simple, e.g. ``M = c I``, or that ties in modulus
    with another, e.g. an orthogonal ``M``: there the radius is not differentiable even
    once, and the first derivative is the one the forward picked; see
    :func:`fastunitary.reference.dominant_eigenpair`). Selected by tensor ops, without a
    host sync, so that it also runs under ``vmap`` (``jacrev`` of ``jacrev``).

    Shapes: ``grad_sigma`` ``(...)``, ``dsigma`` and ``M`` ``(..., n, n)``.
    """
    # tied to M (by a zero), so that a double backward finds the path even where the
    # incoming gradient is a constant: its second-order term is zero, not an error
    first_order = grad_sigma[..., None, None] * dsigma + 0 * M
    newton, simple = _newton_radius_where_simple(M)
    (grad_M,) = recomputed_gradients(newton, (M,), (True,), (grad_sigma.to(torch.float64),))
    return torch.where(simple[..., None, None], grad_M.to(M.dtype), first_order)


def _newton_radius_where_simple(M: torch.Tensor):
    """``(radius, simple)``: ``radius(M)`` ``(...)``, float64, the spectral radius by Newton
    steps on the dominant eigenpair of ``M`` (``(..., n, n)``), differentiable to any order,
    where ``simple`` ``(...)`` (a simple dominant eigenvalue); elsewhere a finite stand-in,
    the steps on ``diag(1, 0, ...)``, for the caller to discard with ``torch.where``.

    Selected per matrix by tensor ops, with no host sync, so that it also runs under
    ``vmap`` (``jacfwd``, ``jacrev`` of ``jacrev``, per-sample second derivatives); the
    stand-in keeps either branch from being NaN, which ``torch.where``'s derivative would
    otherwise carry into the selected one."""
    lam, u, simple = reference.dominant_eigenpair(M)
    n = M.shape[-1]
    e1 = torch.zeros(n, dtype=u.dtype, device=M.device)
    e1[0] = 1
    stand_in = torch.outer(e1.real, e1.real).to(M.dtype)
    safe_lam = torch.where(simple, lam, torch.ones_like(lam))
    safe_u = torch.where(simple[..., None], u, e1)

    def radius(M):
        safe_M = torch.where(simple[..., None, None], M, stand_in)
        return reference.spectral_radius_newton(safe_M, safe_lam, safe_u)

    return radius, simple


def _forward_mode(M: torch.Tensor):
    """The op's outputs in forward mode: ``sigma`` by :func:`_radius_for_forward_mode`, from
    the op's own ``(sigma, d sigma / d M)`` (so that where the top modulus is tied the
    derivative is the one the op picks, as in reverse mode; under ``vmap`` its batching
    rule runs it once on the stack), and ``None`` for the gradient, which only the
    backward reads."""
    sigma, dsigma = _spectral_radius_op(M.detach())
    return _radius_for_forward_mode(M, sigma, dsigma), None


def _radius_for_forward_mode(M: torch.Tensor, sigma: torch.Tensor,
                             dsigma: torch.Tensor) -> torch.Tensor:
    """``sigma(M)`` ``(...)`` as a function of ``M`` ``(..., n, n)`` differentiable to any
    order: Newton steps on the dominant eigenpair (as the double backward,
    :func:`_differentiable_gradient`) where the dominant eigenvalue is simple; elsewhere
    ``sigma + <dsigma, M - M>`` from the given ``sigma`` and ``dsigma`` ``(..., n, n)``,
    first order only (the radius has no second derivative there).
    Selected per matrix as in :func:`_newton_radius_where_simple`."""
    first_order = sigma.detach() + (dsigma.detach() * (M - M.detach())).sum((-2, -1))
    newton, simple = _newton_radius_where_simple(M)
    return torch.where(simple, newton(M).to(M.dtype), first_order)


_spectral_radius = differentiable(_spectral_radius_op, _backward, _setup_context,
                                  _forward_mode)


# The ops take batches of matrices, (..., n, n): the vmapped dimension is one more.
register_stacked_vmap(_spectral_radius_op, 0)
register_stacked_vmap(_spectral_radius_backward_op, 0)


def _check_square_real(M: torch.Tensor) -> None:
    check_tensor("M", M, allow_complex=False)
    if M.dim() < 2 or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"M must have shape (..., n, n) (square), got {tuple(M.shape)}")
    if M.shape[-1] == 0:  # an empty spectrum has no largest eigenvalue to normalize by
        raise ValueError(f"M must have n >= 1, got shape {tuple(M.shape)}")


def spectral_radius(M: torch.Tensor) -> torch.Tensor:
    """``|lambda_max(M)|``, differentiable with the closed-form gradient.

    Args:
        M: ``(..., n, n)`` real, batched over leading dimensions (e.g. layers).
    Returns:
        ``(...)``, the dtype of ``M``.
    """
    _check_square_real(M)
    sigma, _ = _spectral_radius(M)
    return sigma


def spectral_normalize(
    M: torch.Tensor, *, rule: str = "max1", active: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale ``M`` so that its spectral radius is at most 1 (ENRNN, METHODS.md section 4).

    - ``rule="max1"``: ``W2 = M / max(1, sigma(M))``.
    - ``rule="sticky"`` (the official rule): normalization switches on the first time
      ``sigma(M) > 1`` and stays on: ``on = active | (sigma > 1)``,
      ``W2 = M / sigma`` where ``on``, else ``M``. Keep ``on`` (a buffer) and pass it back
      as ``active`` next time.

    Args:
        M: ``(..., n, n)`` real.
        rule: ``"max1"`` or ``"sticky"``.
        active: ``(...)`` bool, the switch so far (``"sticky"`` only; ``None`` = off).
    Returns:
        ``(W2, sigma, on)``: ``W2`` like ``M``; ``sigma`` ``(...)``; ``on`` ``(...)`` bool,
        whether ``W2`` was divided by ``sigma``.
    """
    _check_square_real(M)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "max1" and active is not None:  # it would be ignored: say so
        raise ValueError("active is the sticky rule's switch; rule='max1' takes none "
                         "(pass rule='sticky' to use it)")
    sigma, _ = _spectral_radius(M)
    on = sigma > 1
    if rule == "sticky" and active is not None:
        check_tensor_bool("active", active, M.shape[:-2])
        check_same_device("M", M, active=active)
        on = on | active
    divisor = torch.where(on, sigma, torch.ones_like(sigma))
    return M / divisor[..., None, None], sigma, on


def check_tensor_bool(name: str, t, shape) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {getattr(t, 'dtype', type(t))}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
