"""Stacked recurrent modules laid out exactly as ``torch.nn.LSTM`` / ``torch.nn.RNN``.

Subclasses own ``self.momentum`` (a :class:`~fastunitary.nn._momentum.MomentumBuffer`).
Parameters ``weight_ih_l{k}`` ``(G, in)``, ``weight_hh_l{k}`` ``(G, n)``, ``bias_ih_l{k}``,
``bias_hh_l{k}`` ``(G,)`` live on the module itself (``G = 4n`` for an LSTM, ``n`` for a
plain cell), so a ``torch.nn.LSTM``/``RNN`` state dict loads as it is. Subclasses say how a
layer turns its input ``x`` into states (the ``run_layer`` given to :meth:`_layers`),
usually through the buffer of its input term ``g = x W_ih^T + b_ih`` (:meth:`_buffer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks
from .._backend import check_backend_name
from ._base import (LSTM_ONLY_DEFAULTS, TorchConstructorOptions, check_dropout, check_dtype,
                    check_sequence_input)
from ._sequence import SequenceLayout


class TorchStyleStack(TorchConstructorOptions, nn.Module):
    """Shared skeleton; ``gates`` is 4 (LSTM) or 1 (plain cell). Every subclass also takes
    ``device=`` and ``dtype=`` as ``torch.nn.LSTM`` does (:class:`TorchConstructorOptions`)."""

    gates: int = 1
    TORCH_ONLY_DEFAULTS = LSTM_ONLY_DEFAULTS

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, *, backend: str = "auto",
                 check_finite: bool = False):
        super().__init__()
        _checks.check_positive_int("input_size", input_size)
        _checks.check_positive_int("hidden_size", hidden_size)
        _checks.check_positive_int("num_layers", num_layers)
        check_backend_name(backend)
        check_dropout(dropout, num_layers)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.backend, self.check_finite = backend, check_finite
        G = self.gates * hidden_size
        for k in range(num_layers):
            m = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(G, m)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(G, hidden_size)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.zeros(G)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.zeros(G)))

    def flatten_parameters(self) -> None:
        """Nothing to do (there is no cuDNN weight buffer); kept so that code written for
        ``torch.nn.LSTM``, which calls it, runs unchanged."""

    def layer_parameters(self, k: int):
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of layer ``k`` (biases ``None`` if off)."""
        get = lambda name: getattr(self, f"{name}_l{k}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def recurrent_matrix(self, layer: int = 0) -> torch.Tensor:
        """``W_hh`` of ``layer``: ``(G, hidden_size)``."""
        if not -self.num_layers <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}), got {layer}")
        return self.layer_parameters(layer % self.num_layers)[1]

    def _check_state(self, name: str, s: torch.Tensor, B: int, unbatched: bool) -> torch.Tensor:
        _checks.check_tensor(name, s, allow_complex=False)
        want = (self.num_layers, self.hidden_size) if unbatched else (self.num_layers, B, self.hidden_size)
        _checks.check_shape(name, s, want, what="(num_layers, " + ("" if unbatched else "B, ") + "hidden_size)")
        _checks.check_same_device("the module's parameters", self.weight_ih_l0, **{name: s})
        check_dtype(name, s, self.weight_ih_l0)
        if self.check_finite:
            _checks.check_finite(name, s)
        return s.unsqueeze(1) if unbatched else s

    def _sequence(self, input) -> tuple[torch.Tensor, SequenceLayout]:
        """``input`` (a tensor or a ``PackedSequence``) checked, as ``(T, B, input_size)``,
        and its layout (:func:`~fastunitary.nn._base.check_sequence_input`)."""
        return check_sequence_input(input, self.input_size, self.batch_first, self.weight_ih_l0,
                                    self.check_finite)

    def _buffer(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """The momentum buffer of layer ``k``'s input term ``x W_ih^T + b_ih``: ``(T, B, G)``."""
        w_ih, _, b_ih, _ = self.layer_parameters(k)
        return self.momentum.of_input(x, w_ih, b_ih, self.backend)

    def _layers(self, x: torch.Tensor, run_layer):
        """Run every layer (``run_layer(k, x) -> (output, *finals)``, ``x`` the layer's
        input ``(T, B, in)``), dropout between them."""
        finals = []
        for k in range(self.num_layers):
            out = run_layer(k, x)
            x = out[0]
            finals.append(out[1:])
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, [torch.stack(f) for f in zip(*finals)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
