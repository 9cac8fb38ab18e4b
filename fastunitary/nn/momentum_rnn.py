"""MomentumRNN on the plain cell: ``v_t = mu v_{t-1} + s (W_ih x_t + b_ih)``,
``h_t = act(W_hh h_{t-1} + v_t + b_hh)`` (METHODS.md section 5).

Parameters are named and shaped as ``torch.nn.RNN``'s; ``MomentumRNN(mu=0, step=1)`` is
exactly ``torch.nn.RNN``. The buffer is one scan (``momentum_scan``), the recurrence the
plain ``recurrence`` op with ``activation="tanh"`` or ``"relu"`` (the fused kernel on CUDA).
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional.recurrence import recurrence_planes
from ._momentum import MomentumBuffer
from ._sequence import accepts_empty_batch
from ._torch_style import TorchStyleStack


class MomentumRNN(TorchStyleStack):
    """Multi-layer momentum RNN with the calling convention of ``torch.nn.RNN``.

    Example::

        rnn = MomentumRNN(input_size=1, hidden_size=128, mu=0.6, step=0.6)
        output, h_n = rnn(x)            # x: (T, B, 1) -> output (T, B, 128), h_n (1, B, 128)

    Args:
        input_size, hidden_size, num_layers, nonlinearity (``"tanh"`` or ``"relu"``), bias,
            batch_first, dropout, bidirectional: as ``torch.nn.RNN`` (parameters of the
            backward direction ``weight_ih_l{k}_reverse`` and so on, as there).
        mu, step, learnable, backend, check_finite: as :class:`MomentumLSTM` (one set of
            coefficients for both directions).

    Initialization: ``torch.nn.RNN``'s (uniform in ``±1/sqrt(hidden_size)``).
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, mu: float = 0.9,
                 step: float = 0.1,
                 learnable: bool = False, backend: str = "auto", check_finite: bool = False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, backend=backend, check_finite=check_finite)
        self.nonlinearity = nonlinearity
        self.momentum = MomentumBuffer("momentum", mu=mu, step=step, learnable=learnable)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``torch.nn.RNN``'s initialization; learnable coefficients back to their given
        values."""
        bound = self.hidden_size ** -0.5
        self.momentum.reset_parameters()
        with torch.no_grad():
            for p in self.parameters(recurse=False):
                p.uniform_(-bound, bound, generator=generator)

    @accepts_empty_batch(3)
    def forward(self, input, hx: torch.Tensor | None = None):
        """As ``torch.nn.RNN``: ``input`` ``(T, B, input_size)`` (or batch first,
        unbatched, or a ``PackedSequence``), ``hx`` ``(D * num_layers, B, hidden_size)``
        (``D`` = 2 if bidirectional else 1) or ``None``; returns ``(output (T, B, D *
        hidden_size), h_n (D * num_layers, B, hidden_size))``, ``output`` in the input's
        layout, ``h_n`` at each sequence's own last step."""
        x, layout = self._sequence(input)
        if hx is not None:
            hx = self._check_state("hx", hx, x.shape[1], layout.unbatched)

        def run_layer(k, reverse, x):
            _, w_hh, _, b_hh = self.layer_parameters(k, reverse)
            buf = self._buffer(k, reverse, x)
            u = buf if b_hh is None else buf + b_hh
            h0 = None if hx is None else hx[self.state_index(k, reverse)]
            h = recurrence_planes(u, w_hh, None, h0,
                                  activation=self.nonlinearity, is_complex=False,
                                  backend=self.backend)
            return h, layout.last(h)

        out, (h_n,) = self._layers(x, layout, run_layer)
        return layout.output(out), layout.states(h_n)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")
