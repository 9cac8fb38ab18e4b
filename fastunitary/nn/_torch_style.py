"""Stacked recurrent modules laid out exactly as ``torch.nn.LSTM`` / ``torch.nn.RNN``.

Subclasses own ``self.momentum`` (a :class:`~fastunitary.nn._momentum.MomentumBuffer`).
Parameters ``weight_ih_l{k}`` ``(G, in)``, ``weight_hh_l{k}`` ``(G, n)``, ``bias_ih_l{k}``,
``bias_hh_l{k}`` ``(G,)``, with ``proj_size = p > 0`` (LSTMs only) ``weight_hr_l{k}``
``(p, n)`` and ``weight_hh_l{k}`` ``(G, p)`` (and ``..._l{k}_reverse`` for the backward
direction of a bidirectional module) live on the module itself (``G = 4n`` for an LSTM,
``n`` for a plain cell), so a ``torch.nn.LSTM``/``RNN`` state dict loads as it is. Subclasses say how a
layer turns its input ``x`` into states (the ``run_layer`` given to :meth:`_layers`),
usually through the buffer of its input term ``g = x W_ih^T + b_ih`` (:meth:`_buffer`).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from .._backend import check_backend_name
from ._base import (StackedModule, check_dtype, check_proj_size, check_sequence_input,
                    layer_count_name)
from ._sequence import SequenceLayout


class TorchStyleStack(StackedModule):
    """Shared skeleton; ``gates`` is 4 (LSTM) or 1 (plain cell). Every subclass also takes
    ``device=`` and ``dtype=`` as ``torch.nn.LSTM`` does
    (:class:`~fastunitary.nn._base.TorchConstructorOptions`)."""

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, *, backend: str = "auto", check_finite: bool = False):
        super().__init__()
        _checks.check_positive_int("input_size", input_size)
        _checks.check_positive_int("hidden_size", hidden_size)
        self._set_stack_options(num_layers, batch_first, dropout, bidirectional)
        check_proj_size(proj_size, hidden_size)
        check_backend_name(backend)
        bias = _checks.check_flag("bias", bias)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.proj_size = int(proj_size)
        self.backend, self.check_finite = backend, check_finite
        G, width = self.gates * hidden_size, self.state_size
        for k, reverse in self.layer_keys():
            m = input_size if k == 0 else self.num_directions * width
            suffix = self.layer_suffix(k, reverse)
            # torch.nn.LSTM's registration order, so that state dicts list alike
            self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(G, m)))
            self.register_parameter(f"weight_hh{suffix}", nn.Parameter(torch.empty(G, width)))
            if bias:
                self.register_parameter(f"bias_ih{suffix}", nn.Parameter(torch.zeros(G)))
                self.register_parameter(f"bias_hh{suffix}", nn.Parameter(torch.zeros(G)))
            if proj_size:
                self.register_parameter(f"weight_hr{suffix}",
                                        nn.Parameter(torch.empty(proj_size, hidden_size)))

    @property
    def state_size(self) -> int:
        """Width of ``h_t``, ``h_n`` and each direction's output: ``proj_size`` if set,
        else ``hidden_size`` (``c_t`` keeps ``hidden_size``)."""
        return self.proj_size or self.hidden_size

    @property
    def output_size(self) -> int:
        """Width of ``output``: ``D * state_size`` (``D`` = 2 if bidirectional else 1)."""
        return self.num_directions * self.state_size

    @staticmethod
    def layer_suffix(k: int, reverse: bool = False) -> str:
        """``_l{k}``, or ``_l{k}_reverse``: the suffix of ``torch.nn.LSTM``'s parameter names."""
        return f"_l{k}" + ("_reverse" if reverse else "")

    def layer_parameters(self, k: int, reverse: bool = False):
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of layer ``k`` (``reverse``: its
        backward direction), biases ``None`` if off."""
        suffix = self.layer_suffix(k, reverse)
        get = lambda name: getattr(self, f"{name}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _layer_weights(self, k: int, reverse: bool) -> list[nn.Parameter]:
        # torch.nn.LSTM's order within a layer: w_ih, w_hh, b_ih, b_hh, then w_hr
        found = (*self.layer_parameters(k, reverse), self.layer_projection(k, reverse))
        return [p for p in found if p is not None]

    def layer_projection(self, k: int, reverse: bool = False) -> torch.Tensor | None:
        """``weight_hr`` ``(proj_size, hidden_size)`` of layer ``k`` (``reverse``: its
        backward direction), ``None`` without ``proj_size``."""
        return getattr(self, f"weight_hr{self.layer_suffix(k, reverse)}", None)

    def recurrent_matrix(self, layer: int = 0, reverse: bool = False) -> torch.Tensor:
        """``W_hh`` of ``layer`` (``reverse``: of its backward direction): ``(G,
        state_size)``; with ``proj_size`` the recurrence acts through ``W_hh W_hr``
        (:meth:`layer_projection`)."""
        return self.layer_parameters(self._check_layer(layer, reverse), reverse)[1]

    def _check_state(self, name: str, s: torch.Tensor, B: int, unbatched: bool,
                     cell: bool = False) -> torch.Tensor:
        """An initial state ``(D * num_layers, B, width)`` checked (made batched); the width
        is :attr:`state_size`, or ``hidden_size`` for an LSTM's ``c_0`` (``cell``)."""
        _checks.check_tensor(name, s, allow_complex=False)
        L = self.num_directions * self.num_layers
        width, width_name = ((self.hidden_size, "hidden_size") if cell or not self.proj_size
                             else (self.proj_size, "proj_size"))
        want = (L, width) if unbatched else (L, B, width)
        what = f"({layer_count_name(self.num_directions)}, " + ("" if unbatched else "B, ")
        _checks.check_shape(name, s, want, what=what + width_name + ")")
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

    def _buffer(self, k: int, reverse: bool, x: torch.Tensor) -> torch.Tensor:
        """The momentum buffer of the input term ``x W_ih^T + b_ih`` of layer ``k``
        (``reverse``: its backward direction, ``x`` then reversed): ``(T, B, G)``."""
        w_ih, _, b_ih, _ = self.layer_parameters(k, reverse)
        return self.momentum.of_input(x, w_ih, b_ih, self.backend)

    def extra_repr(self) -> str:
        s = self._options_repr(self.bias, self.proj_size)
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
