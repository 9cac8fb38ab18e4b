"""scoRNN: the scaled Cayley orthogonal RNN (real state, fixed signs).

``h_t = modReLU(W h_{t-1} + U x_t + c)`` with ``h_t`` in R^n and
``W = (I + A)^-1 (I - A) D``, ``A`` skew-symmetric and ``D = diag(±1)`` fixed before
training with ``rho`` entries equal to -1 (METHODS.md sections 1 and 3). ``D`` is a
buffer: saved in the ``state_dict``, never trained.
"""

from __future__ import annotations

import torch

from .. import _checks
from ._cayley_rnn import CayleyCellBase, CayleyRNNBase
from .init import scaling_signs


class ScoRNNCell(CayleyCellBase):
    """One scoRNN layer, stepped one input at a time (like ``torch.nn.RNNCell``).

    Args:
        input_size: features ``m`` of each input.
        hidden_size: state size ``n``.
        bias: learn the input bias ``c``.
        rho: number of -1 entries of ``D`` (placed last, as the official code does).
            A per-task hyperparameter; the default ``hidden_size // 10`` is the official
            MNIST setup (n = 170, rho = 17). ``load_state_dict`` sets it from the loaded
            ``D``.
        trainable_h0: learn the initial state (uniform in [-0.01, 0.01] at start).
        backend: ``"auto"``, ``"reference"`` or ``"triton"``.
        check_finite: raise on NaN/Inf in inputs (a debugging aid; costs a device sync).

    Buffers: ``D`` ``(n,)``, the signs.
    """

    is_complex = False

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, rho: int | None = None,
        **kwargs,
    ):
        _checks.check_positive_int("hidden_size", hidden_size)  # before rho's range uses it
        self.rho = hidden_size // 10 if rho is None else rho
        if not isinstance(self.rho, int) or not 0 <= self.rho <= hidden_size:
            raise ValueError(f"rho must be an int in [0, hidden_size={hidden_size}], got {rho!r}")
        super().__init__(input_size, hidden_size, bias, **kwargs)

    def _create_scaling(self):
        self.register_buffer("D", torch.empty(self.hidden_size))

    def _reset_scaling(self, generator):
        self.D.copy_(scaling_signs(self.hidden_size, self.rho))

    def _scaling_planes(self) -> torch.Tensor:
        return self.D.unsqueeze(0)

    def _scaling_source(self) -> torch.Tensor:
        return self.D

    NEGATIVE_COUNTS = {"rho": "D"}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rho={self.rho}"


class ScoRNN(CayleyRNNBase):
    """Multi-layer scoRNN with the calling convention of ``torch.nn.LSTM``.

    Example::

        rnn = ScoRNN(input_size=10, hidden_size=128, rho=12)
        output, h_n = rnn(x)            # x: (T, B, 10) -> output (T, B, 128), h_n (1, B, 128)

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            ``torch.nn.LSTM``.
        rho, trainable_h0, backend, check_finite: see :class:`ScoRNNCell`.
    """

    cell_class = ScoRNNCell

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rho={self.layers[0].rho}"
