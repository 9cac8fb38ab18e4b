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

from ..functional.momentum_scan import momentum_scan

KINDS = ("momentum", "nesterov", "adam", "rmsprop")
#: added to r_t under the square root (the official code's value)
ADAM_EPS = 1e-16


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def nesterov_coefficients(T: int, restart: int, device, dtype) -> torch.Tensor:
    """``(T, 1, 1)``: ``(k_t - 1) / (k_t + 2)`` with ``k_t`` cycling ``1..restart`` (``t`` if 0)."""
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
        mu: in [0, 1) ("momentum", "adam").  step: > 0.  beta: in (0, 1) ("adam",
            "rmsprop").  restart: ``R >= 0`` ("nesterov").
        learnable: learn the coefficients.
    """

    def __init__(self, kind: str, *, mu: float = 0.0, step: float = 1.0, beta: float = 0.999,
                 restart: int = 0, learnable: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        uses_mu, uses_beta = kind in ("momentum", "adam"), kind in ("adam", "rmsprop")
        if uses_mu and not 0.0 <= mu < 1.0:
            raise ValueError(f"mu must be in [0, 1), got {mu}")
        if not step > 0:
            raise ValueError(f"step must be > 0, got {step}")
        if uses_beta and not 0.0 < beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        if kind == "nesterov" and (not isinstance(restart, int) or restart < 0):
            raise ValueError(f"restart must be an int >= 0, got {restart!r}")
        if learnable and uses_mu and mu == 0.0:
            raise ValueError("a learnable mu must start inside (0, 1), got mu=0")
        self.kind, self.restart, self.learnable = kind, restart, learnable
        self.uses_mu, self.uses_beta = uses_mu, uses_beta
        if learnable:
            if uses_mu:
                self.mu_logit = nn.Parameter(torch.tensor(_logit(mu)))
            self.step_raw = nn.Parameter(torch.tensor(_inverse_softplus(step)))
            if uses_beta:
                self.beta_logit = nn.Parameter(torch.tensor(_logit(beta)))
        else:
            self._mu, self._step, self._beta = float(mu), float(step), float(beta)

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
        r = self._scan(g * g, beta, 1 - beta, backend)
        return m / torch.sqrt(r + ADAM_EPS)

    def of_input(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 backend: str = "auto") -> torch.Tensor:
        """The buffer of ``g = x W^T + b``: ``(T, B, m) -> (T, B, G)``.

        For "momentum" and "nesterov" the buffer is linear in ``g``, so ``s`` scales the
        (small) weights instead of the ``(T, B, G)`` input term: one pass over the
        sequence less.
        """
        if self.kind in ("momentum", "nesterov"):
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
