"""scuRNN: the scaled Cayley unitary RNN (complex state, learned phases).

``h_t = modReLU(W h_{t-1} + U x_t + c)`` with ``h_t`` in C^n and
``W = (I + A)^-1 (I - A) diag(exp(i theta))``, ``A`` skew-Hermitian (METHODS.md sections
1 and 3). The state and the output are real planes ``[Re h, Im h]`` of width
``2 * hidden_size``; :func:`fastunitary.functional.as_complex` turns them into complex64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._cayley_rnn import CayleyCellBase, CayleyRNNBase


class ScuRNNCell(CayleyCellBase):
    """One scuRNN layer, stepped one input at a time (like ``torch.nn.RNNCell``).

    Args:
        input_size: features ``m`` of each input.
        hidden_size: complex state size ``n``; the real state has width ``2n``.
        bias: learn the input bias ``c``.
        trainable_h0: learn the initial state (uniform in [-0.01, 0.01] at start): a zero
            start sits at modReLU's singularity when the bias is positive.
        backend: ``"auto"``, ``"reference"`` or ``"triton"``.
        check_finite: raise on NaN/Inf in inputs (a debugging aid; costs a device sync).

    Parameters: those of :class:`~fastunitary.nn._cayley_rnn.CayleyCellBase`, plus
    ``theta`` ``(n,)``, the phases of ``D = diag(exp(i theta))``, uniform in [0, 2 pi).
    """

    is_complex = True

    def _create_scaling(self):
        self.theta = nn.Parameter(torch.empty(self.hidden_size))

    def _reset_scaling(self, generator):
        self.theta.uniform_(0.0, 2 * math.pi, generator=generator)

    def _scaling_planes(self) -> torch.Tensor:
        return torch.stack([torch.cos(self.theta), torch.sin(self.theta)])

    def _scaling_source(self) -> torch.Tensor:
        return self.theta


class ScuRNN(CayleyRNNBase):
    """Multi-layer scuRNN with the calling convention of ``torch.nn.LSTM``.

    Example::

        rnn = ScuRNN(input_size=10, hidden_size=64, num_layers=2, batch_first=True)
        output, h_n = rnn(x)            # x: (B, T, 10)
        # output: (B, T, 128) = [Re h_t, Im h_t]; h_n: (2, B, 128)

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            ``torch.nn.LSTM`` (``hidden_size`` is the complex state size ``n``; outputs have
            width ``2n``; bidirectional, ``4n``: ``[Re f, Im f, Re b, Im b]``, forward then
            backward direction).
        trainable_h0, backend, check_finite: see :class:`ScuRNNCell`.
    """

    cell_class = ScuRNNCell
