"""The momentum buffers of the MomentumRNN family (METHODS.md section 5), shared by its modules.

Every buffer depends on the inputs only, never on ``h``, so all of them are computed for
the whole sequence before the recurrence, by ``momentum_scan`` (one parallel scan each):

    "momentum":  v_t = mu v_{t-1} + s g_t
    "nesterov":  v_t = ((k_t - 1) / (k_t + 2)) v_{t-1} + s g_t,  k_t = 1, 2, ..., R, 1, 2, ...
                 (k_t = t when R = 0)
    "adam":      m_t = mu m_{t-1} + s g_t,  r_t = beta r_{t-1} + (1 - beta) g_t^2,
                 buffer m_t / sqrt(r_t + 1e-16)
    "rmsprop":   "adam" with mu = 0

Buffers start at zero at every forward call, as in the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._precision import plus_epsilon
from ..functional.momentum_scan import momentum_scan

KINDS = ("momentum", "nesterov", "adam", "rmsprop")
#: added to r_t under the square root (the official code's value)
ADAM_EPS = 1e-16


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def nesterov_coefficients(T: int, restart: int, device, dtype) -> torch.Tensor:
    """``(T, 1, 1)``: ``(k_t - 1) / (k_t + 2)`` with ``k_t`` cycling ``1..restart`` (``t`` if 0).

    In float32 at least, whatever ``dtype``: bfloat16 counts steps exactly only to 256 and
    float16 to 2048 (under autocast, every other step past 256 got ``k_t = 1``)."""
    dtype = torch.promote_types(dtype, torch.float32)
    t = torch.arange(T, device=device, dtype=dtype)
    k = (t.remainder(restart) if restart > 0 else t) + 1
    return ((k - 1) / (k + 2)).view(T, 1, 1)


class MomentumBuffer(nn.Module):
    """The coefficients ``mu``, ``step`` (``s``) and ``beta`` and the buffer they define.

    Fixed floats by default (nothing in the ``state_dict``, so weights load from
    ``torch.nn.LSTM``); with ``learnable=True`` each used coefficient is a parameter kept in
    range by its link: ``mu = sigmoid(mu_logit)`` and ``beta = sigmoid(beta_logit)`` in
    (0, 1), ``step = softplus(step_raw)`` > 0.

    Args:
        kind: one of :data:`KINDS`.
        mu: in [0, 1) ("momentum", "adam"; default 0).  step: > 0.  beta: in (0, 1)
            ("adam", "rmsprop"; default 0.999).  restart: ``R >= 0`` ("nesterov"; default
            0). A coefficient the kind does not use must be left ``None``: given, it
            raises ``TypeError`` rather than being dropped without a trace.
        learnable: learn the coefficients.
        names: what the caller calls ``mu`` and ``step`` in its errors (a cell's
            ``momentum=`` and ``momentum_step=``).
    """

    def __init__(self, kind: str, *, mu: float | None = None, step: float = 1.0,
                 beta: float | None = None, restart: int | None = None, learnable: bool = False,
                 names: dict | None = None):
        super().__init__()
        names = {"mu": "mu", "step": "step", **(names or {})}
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        uses_mu, uses_beta = kind in ("momentum", "adam"), kind in ("adam", "rmsprop")
        used = {"mu": uses_mu, "beta": uses_beta, "restart": kind == "nesterov"}
        for name, value in (("mu", mu), ("beta", beta), ("restart", restart)):
            if value is not None and not used[name]:
                takes = ", ".join([names.get(k, k) for k in used if used[k]] + [names["step"]])
                raise TypeError(f"{names.get(name, name)}={value!r} does not apply to the "
                                f"{kind!r} buffer, which takes {takes}")
        mu = 0.0 if mu is None else mu
        beta = 0.999 if beta is None else beta
        restart = 0 if restart is None else restart
        if uses_mu and not 0.0 <= mu < 1.0:
            raise ValueError(f"{names['mu']} must be in [0, 1), got {mu}")
        if not step > 0:
            raise ValueError(f"{names['step']} must be > 0, got {step}")
        if uses_beta and not 0.0 < beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        if kind == "nesterov" and (not isinstance(restart, int) or restart < 0):
            raise ValueError(f"restart must be an int >= 0, got {restart!r}")
        if learnable and uses_mu and mu == 0.0:
            raise ValueError(f"a learnable {names['mu']} must start inside (0, 1), "
                             f"got {names['mu']}=0")
        self.kind, self.restart, self.learnable = kind, restart, learnable
        self.uses_mu, self.uses_beta = uses_mu, uses_beta
        self._mu, self._step, self._beta = float(mu), float(step), float(beta)  # the initial
        if learnable:
            if uses_mu:
                self.mu_logit = nn.Parameter(torch.empty(()))
            self.step_raw = nn.Parameter(torch.empty(()))
            if uses_beta:
                self.beta_logit = nn.Parameter(torch.empty(()))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Learnable coefficients back to the values given at construction (fixed ones
        never move): what an owner's ``reset_parameters`` calls, for a module built on the
        meta device and materialized with ``to_empty``, or re-initialized."""
        if not self.learnable:
            return
        with torch.no_grad():
            if self.uses_mu:
                self.mu_logit.fill_(_logit(self._mu))
            self.step_raw.fill_(_inverse_softplus(self._step))
            if self.uses_beta:
                self.beta_logit.fill_(_logit(self._beta))

    @property
    def mu(self):
        if not self.uses_mu:
            return 0.0
        return torch.sigmoid(self.mu_logit) if self.learnable else self._mu

    @property
    def step(self):
        return F.softplus(self.step_raw) if self.learnable else self._step

    @property
    def beta(self):
        return torch.sigmoid(self.beta_logit) if self.learnable else self._beta

    @staticmethod
    def _scan(u: torch.Tensor, mu, step, backend: str) -> torch.Tensor:
        if isinstance(mu, float) and mu == 0.0:  # no carry: no scan
            return u if isinstance(step, float) and step == 1.0 else u * step
        return momentum_scan(u, mu, step, backend=backend)

    def forward(self, g: torch.Tensor, backend: str = "auto", *, step=None) -> torch.Tensor:
        """``(T, B, d) -> (T, B, d)``: the buffer for every step of the input term ``g``;
        ``backend`` is the scans' (the owning module's); ``step`` overrides ``s`` (1.0 when
        it was already applied to ``g``)."""
        step = self.step if step is None else step
        if self.kind == "nesterov":
            coef = nesterov_coefficients(g.shape[0], self.restart, g.device, g.dtype)
            return momentum_scan(g, coef, step, backend=backend)
        m = self._scan(g, self.mu, step, backend)
        if self.kind == "momentum":
            return m
        beta = self.beta
        # squared in float32 at least: float16's g * g is 0 below |g| ~ 2.4e-4 (the buffer
        # then divides by sqrt(eps)) and inf above 256 (the channel stays 0 afterwards)
        g = g.to(torch.promote_types(g.dtype, torch.float32))
        r = self._scan(g * g, beta, 1 - beta, backend)
        return m / torch.sqrt(plus_epsilon(r, ADAM_EPS))

    @property
    def is_linear(self) -> bool:
        """Whether the buffer is a linear function of the input term (not Adam/RMSProp)."""
        return self.kind in ("momentum", "nesterov")

    def linear_input(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     backend: str = "auto"):
        """For a linear buffer, ``(y, W, b)`` with buffer ``= F.linear(y, W, b)``; ``None``
        where no factorization is cheaper than scanning the gates (``m + 1 >= G``).

        The coefficient is one scalar per step, so the scan commutes with the input
        projection: ``v_t = W (s y_t) + b (s z_t)`` with ``y_t = a_t y_{t-1} + x_t`` and
        ``z_t = a_t z_{t-1} + 1``. The scan then runs over the ``m + 1`` input channels
        (``x`` and a channel of ones, which carries the bias) instead of the ``G`` gate
        channels: ``(m + 1) / G`` of the work (one eighth for ``m = 64``, hidden 128). With
        ``mu = 0`` there is nothing to scan: ``(x, s W, s b)``.
        """
        if not self.is_linear:
            return None
        s = self.step
        if self.kind == "momentum" and isinstance(self.mu, float) and self.mu == 0.0:
            return x, weight * s, None if bias is None else bias * s
        if x.shape[-1] + (bias is not None) >= weight.shape[0]:
            return None
        if bias is not None:
            # the ones channel by F.pad, not torch.cat with ones: Inductor (PyTorch 2.13, CPU)
            # miscompiles the cat when the input is a padded packed batch (index_put into
            # zeros) also read reversed by the other direction, giving the backward
            # direction's scan a wrong input with no error
            x = F.pad(x, (0, 1), value=1.0)
            weight = torch.cat([weight, bias.unsqueeze(1)], 1)
        return self(x, backend, step=1.0), weight * s, None

    def of_input(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 backend: str = "auto") -> torch.Tensor:
        """The buffer of ``g = x W^T + b``: ``(T, B, m) -> (T, B, G)``; for a linear buffer
        through :meth:`linear_input` where it factorizes (``s`` then scales the weights,
        never a ``(T, B, G)`` tensor)."""
        factored = self.linear_input(x, weight, bias, backend)
        if factored is not None:
            return F.linear(*factored)
        if self.is_linear:
            s = self.step
            g = F.linear(x, weight * s, None if bias is None else bias * s)
            return self(g, backend, step=1.0)
        return self(F.linear(x, weight, bias), backend)

    def extra_repr(self) -> str:
        if self.learnable:
            return f"{self.kind!r}, learnable=True"
        parts = [repr(self.kind)]
        if self.uses_mu:
            parts.append(f"mu={self._mu}")
        parts.append(f"step={self._step}")
        if self.uses_beta:
            parts.append(f"beta={self._beta}")
        if self.kind == "nesterov":
            parts.append(f"restart={self.restart}")
        return ", ".join(parts)
