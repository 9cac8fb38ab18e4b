"""SBO-RNN (Zhang et al., NeurIPS 2021; METHODS.md section 6): each hidden state is a few
optimizer iterations on the lower-level objective ``f_t(h) = 1/2 ||h - relu(W h + U x_t + b)||^2``.

Choices, from the official code (github.com/Zhang-VISLab, ``ODE_Vanilla``/``F_cell``):

- the three optimizers of the paper, ``"gd"``, ``"heavy_ball"`` (the official code's
  ``HB``) and ``"nesterov"`` (its ``NAG``), with the optimizer state carried across time
  steps;
- a dense recurrent matrix, initialized as ``I + P Q`` with ``P`` ``(n, r)``, ``Q``
  ``(r, n)`` uniform in ``±1/sqrt(n)`` and ``r = min(50, n)`` (the official low-rank
  initialization). The official code never registers ``P`` and ``Q`` as parameters, so
  its ``W`` stays at that random value; here ``W`` is trained, as the paper describes;
- ``mu`` a learnable scalar per layer (official: ``requires_grad=True``; start 0.5);
  ``eta`` a fixed hyperparameter (official: fixed);
- input weights and biases uniform in ``±1/sqrt(n)``; the official ``alpha`` is 1;
- ``steps`` (K) iterations per time step generalize the official single iteration.

Not implemented: the official "sparse" variant (a scalar recurrent weight).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .._backend import BackendUnavailableError
from .._checks import check_fixed_float
from ..functional.sbo_recurrence import NO_KERNEL, check_options, sbo_recurrence
from ._base import layer_count_name
from ._sequence import accepts_empty_batch
from ._torch_style import TorchStyleStack

#: rank of the official initialization ``W = I + P Q``
INIT_RANK = 50


class SBORNN(TorchStyleStack):
    """Multi-layer SBO-RNN with the calling convention of ``torch.nn.RNN``.

    Example::

        rnn = SBORNN(input_size=1, hidden_size=128, method="heavy_ball", eta=0.05)
        output, (h_n, m_n) = rnn(x)    # x: (T, B, 1) -> output (T, B, 128)

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            ``torch.nn.RNN``, in its positional order.
        nonlinearity: ``"relu"``, the only one: the activation of the lower-level
            objective (kept in ``torch.nn.RNN``'s fourth position so that positional
            arguments mean the same; its default ``"tanh"`` is refused).

    Parameters are named and shaped as ``torch.nn.RNN``'s (``weight_ih_l{k}`` ``(n, in)``,
    ``weight_hh_l{k}`` ``(n, n)``, ``bias_ih_l{k}``, ``bias_hh_l{k}``; ``..._reverse`` for
    the backward direction), plus ``mu_l{k}`` (and ``mu_l{k}_reverse``, 0-dim) for the
    momentum methods.

    Args (keyword only):
        method: ``"gd"``, ``"heavy_ball"`` or ``"nesterov"``.
        eta: the inner step size (> 0; default 0.05). Too large a step makes the
            iterates diverge (inf or NaN in the output; ``check_finite`` does not look at
            the output), and where that starts depends on ``W``. The official code uses
            1e-3 on pixel MNIST (T = 784). On sequential digits (T = 64) heavy ball at
            0.05 and Nesterov at 0.02 learn well; plain ``"gd"`` learned slowly at every
            eta tried (README).
        mu: initial momentum coefficient of the momentum methods, in [0, 1) (default
            0.5; where heavy ball and Nesterov are convergent momentum; learned, it may
            leave that range). ``"gd"`` has none: giving it raises ``TypeError``.
        learn_mu: train ``mu`` (the official setting) or keep it fixed (a buffer).
        steps: optimizer iterations per time step (K).
        backend: ``"auto"`` or ``"reference"`` (no Triton kernel: see
            :mod:`fastunitary.functional.sbo_recurrence`).
        check_finite: raise on NaN/inf in the input or state.

    Shapes: ``input`` ``(T, B, input_size)`` (``(B, T, ...)`` with ``batch_first``,
    ``(T, input_size)`` unbatched, or a ``PackedSequence`` for ``"gd"``); ``hx``
    ``(D * num_layers, B, n)`` (``D`` = 2 if bidirectional else 1) for ``"gd"``, and for
    the momentum methods either that or a pair ``(h0, m0)`` of such tensors (the optimizer
    state, as an LSTM's ``(h, c)``). Returns ``(output (T, B, D * n), h_n)`` for ``"gd"``
    and ``(output, (h_n, m_n))`` for the momentum methods.
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "relu", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, method: str = "gd",
                 eta: float = 0.05, mu: float | None = None, learn_mu: bool = True,
                 steps: int = 1, backend: str = "auto", check_finite: bool = False):
        if nonlinearity != "relu":
            raise ValueError(f"nonlinearity must be 'relu' (the lower-level objective's "
                             f"activation), got {nonlinearity!r}; it is the fourth positional "
                             f"argument, as in torch.nn.RNN")
        eta = check_options(method, eta, steps)
        if method == "gd" and mu is not None:  # would be dropped silently
            raise TypeError(f"mu={mu!r} is the momentum methods' coefficient; method='gd' "
                            f"has none")
        mu = 0.5 if mu is None else check_fixed_float("mu", mu)
        if method != "gd" and not 0.0 <= mu < 1.0:
            raise ValueError(f"mu must be in [0, 1) for method={method!r}, got {mu}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, backend=backend, check_finite=check_finite)
        if backend == "triton":
            raise BackendUnavailableError(NO_KERNEL)
        self.nonlinearity = nonlinearity
        self.method, self.eta, self.steps, self.learn_mu = method, eta, steps, learn_mu
        self.mu_init = float(mu)
        if method != "gd":
            for k, reverse in self.layer_keys():
                value, name = torch.tensor(self.mu_init), "mu" + self.layer_suffix(k, reverse)
                if learn_mu:
                    self.register_parameter(name, nn.Parameter(value))
                else:
                    self.register_buffer(name, value)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The official initialization (see the README), and ``mu`` back to its given value."""
        n = self.hidden_size
        bound = n ** -0.5
        r = min(INIT_RANK, n)
        with torch.no_grad():
            if self.has_momentum:
                for k, reverse in self.layer_keys():
                    getattr(self, "mu" + self.layer_suffix(k, reverse)).fill_(self.mu_init)
            for k, reverse in self.layer_keys():
                w_ih, w_hh, b_ih, b_hh = self.layer_parameters(k, reverse)
                for p in (w_ih, b_ih, b_hh):
                    if p is not None:
                        p.uniform_(-bound, bound, generator=generator)
                P = torch.empty(n, r).uniform_(-bound, bound, generator=generator)
                Q = torch.empty(r, n).uniform_(-bound, bound, generator=generator)
                w_hh.copy_(torch.eye(n) + P @ Q)

    @property
    def has_momentum(self) -> bool:
        return self.method != "gd"

    def _initial_state(self, hx, B: int, unbatched: bool):
        if hx is None:
            return None, None
        if isinstance(hx, (tuple, list)):
            if not self.has_momentum:
                raise TypeError(f"method='gd' takes hx as one tensor "
                                f"({layer_count_name(self.num_directions)}, B, hidden_size), "
                                f"not a pair: it has no optimizer state")
            if len(hx) != 2:
                raise ValueError(f"hx must be a tensor or a pair (h0, m0), got {len(hx)} items")
            return (self._check_state("hx[0]", hx[0], B, unbatched),
                    self._check_state("hx[1]", hx[1], B, unbatched))
        return self._check_state("hx", hx, B, unbatched), None

    @accepts_empty_batch(3)
    def forward(self, input, hx=None):
        """``input`` ``(T, B, input_size)`` -> ``(output (T, B, D * n), h_n)`` (``"gd"``) or
        ``(output, (h_n, m_n))`` (momentum methods), ``D`` = 2 if bidirectional else 1; see
        the class docstring for ``hx``.
        ``input`` may be a ``PackedSequence`` for ``"gd"`` (the momentum methods' op keeps
        ``m`` at the last step only, so it has no ``m_n`` for a shorter sequence)."""
        if isinstance(input, PackedSequence) and self.has_momentum:
            raise NotImplementedError(
                f"SBORNN(method={self.method!r}) takes no PackedSequence: its op returns the "
                f"optimizer state m at the last step only, not at each sequence's own end. "
                f"Pad the batch, or use method='gd'"
            )
        x, layout = self._sequence(input)
        h0, m0 = self._initial_state(hx, x.shape[1], layout.unbatched)

        def run_layer(k, reverse, x):
            w_ih, w_hh, b_ih, b_hh = self.layer_parameters(k, reverse)
            u = F.linear(x, w_ih, b_ih)
            if b_hh is not None:
                u = u + b_hh
            i = self.state_index(k, reverse)
            h, m = sbo_recurrence(
                u, w_hh, None if h0 is None else h0[i], None if m0 is None else m0[i],
                method=self.method, eta=self.eta,
                mu=getattr(self, "mu" + self.layer_suffix(k, reverse), None),  # None: gd
                steps=self.steps, backend=self.backend)
            return (h, layout.last(h)) if m is None else (h, h[-1], m)

        out, finals = self._layers(x, layout, run_layer)
        finals = [layout.states(f) for f in finals]
        state = finals[0] if len(finals) == 1 else tuple(finals)
        return layout.output(out), state

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", method={self.method!r}, eta={self.eta}"
        if self.steps != 1:
            s += f", steps={self.steps}"
        if self.has_momentum and self.mu_init != 0.5:
            s += f", mu={self.mu_init}"
        if self.has_momentum and not self.learn_mu:
            s += ", learn_mu=False"
        return s
