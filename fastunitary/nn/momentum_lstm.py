"""The MomentumRNN family's LSTMs: MomentumLSTM, AdamLSTM, RMSPropLSTM, NesterovLSTM.

METHODS.md section 5. With ``g_t = W_ih x_t + b_ih`` the input term of the gates, a buffer
(``v_t = mu v_{t-1} + s g_t`` and its Adam, RMSProp and Nesterov variants, see
:mod:`fastunitary.nn._momentum`) replaces it, and the standard LSTM cell runs on
``buffer_t + W_hh h_{t-1} + b_hh``. The buffers depend on the inputs only, so they are one
parallel scan over the sequence (``momentum_scan``), and the recurrence is the plain
``lstm_recurrence`` op (the fused kernel on CUDA). A linear buffer (momentum, Nesterov)
commutes with the input projection, so the scan runs over the input channels and, on the
CPU, the layer is PyTorch's own fused LSTM (oneDNN) on the scanned input: ``torch.lstm``
in eager runs, the ``onednn_lstm`` op under ``torch.compile``
(:meth:`MomentumLSTMBase._native_route`). ``b_ih`` sits inside the buffer (scaled
by ``s``), ``b_hh`` outside, as in the official code; so ``MomentumLSTM(mu=0, step=1)`` is
exactly ``torch.nn.LSTM``.

Parameters are named and shaped exactly as ``torch.nn.LSTM``'s, so
``MomentumLSTM(...).load_state_dict(lstm.state_dict())`` works (with fixed coefficients;
learnable ones add ``momentum.*`` entries: load with ``strict=False``).

``proj_size = p > 0`` is ``torch.nn.LSTM``'s projection (LSTMP): ``r_t = W_hr h_t``
``(p,)`` replaces ``h_t`` as the output, the state ``h_n`` and the recurrent input, so
``z_t = ... + W_hh r_{t-1}`` with ``W_hh`` ``(4n, p)``. It is ``lstm_recurrence``'s
``W_hr`` (see there for how the Triton kernel runs it); eager CPU runs of a linear buffer
take ``torch.lstm`` with the projection instead (PyTorch's generic LSTMP loop, faster on
the CPU than the op's: ``python -m bench.projection``).
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from ..functional.lstm_recurrence import lstm_recurrence
from ..functional.onednn_lstm import onednn_lstm, onednn_lstm_supported
from ._momentum import MomentumBuffer
from ._sequence import PackedIndex, accepts_empty_batch
from ._torch_style import TorchStyleStack


class MomentumLSTMBase(TorchStyleStack):
    """An LSTM whose gate input term goes through a momentum buffer; see the subclasses.

    Official initialization (METHODS.md section 5): ``W_ih`` orthogonal, ``W_hh`` the
    identity on its first (input-gate) block and zero on the others (the official cell's
    ``nn.init.eye_`` on the ``(4n, n)`` matrix), biases zero except the forget-gate part of
    ``b_hh`` (``forget_bias``, 1 by default; the TIMIT recipe uses -4), placed outside the
    buffer so that it acts unscaled from the first step (the official cell puts it in both
    biases, the input one inside the buffer; METHODS.md's "forget-gate bias 1" is read as
    the gate's total). With ``proj_size`` (not in the official code): ``W_hr`` ``(p, n)``
    with orthonormal rows and the first block of ``W_hh`` is ``W_hr^T``, so the input gate
    sees ``h`` through ``W_hh W_hr``, the orthogonal projector onto a random
    ``p``-dimensional subspace (the identity when ``p = n``).
    """

    gates = 4
    TORCH_ONLY_DEFAULTS = {}  # proj_size is taken, as by torch.nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0,
                 *, kind: str, mu: float | None = None,
                 step: float = 1.0, beta: float | None = None, restart: int | None = None,
                 learnable: bool = False, forget_bias: float = 1.0, backend: str = "auto",
                 check_finite: bool = False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, backend=backend, check_finite=check_finite)
        self.forget_bias = float(forget_bias)
        self.momentum = MomentumBuffer(kind, mu=mu, step=step, beta=beta, restart=restart,
                                       learnable=learnable)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The official initialization (see the class docstring); learnable coefficients
        back to their given values."""
        n = self.hidden_size
        self.momentum.reset_parameters()
        with torch.no_grad():
            for k, reverse in self.layer_keys():
                w_ih, w_hh, b_ih, b_hh = self.layer_parameters(k, reverse)
                nn.init.orthogonal_(w_ih, generator=generator)
                w_hr = self.layer_projection(k, reverse)
                # the first block only: every block once (eye(n).repeat(4, 1)) fed h to
                # the forget, cell and output gates at unit gain, unlike the official cell
                w_hh.zero_()
                if w_hr is None:
                    w_hh[:n] = torch.eye(n)
                else:
                    nn.init.orthogonal_(w_hr, generator=generator)
                    w_hh[:n] = w_hr.t()
                if b_ih is not None:
                    b_ih.zero_()
                    b_hh.zero_()
                    b_hh[n:2 * n] = self.forget_bias

    @accepts_empty_batch(3)
    def forward(self, input, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Run all layers over the whole sequence, as ``torch.nn.LSTM``.

        Args:
            input: ``(T, B, input_size)``, ``(B, T, input_size)`` with ``batch_first``,
                ``(T, input_size)`` unbatched, or a ``PackedSequence``.
            hx: ``(h_0, c_0)``: ``h_0`` ``(D * num_layers, B, H)``, ``c_0`` ``(D *
                num_layers, B, hidden_size)`` (``D`` = 2 if bidirectional else 1; ``H`` =
                ``proj_size`` if set, else ``hidden_size``; without ``B`` unbatched), or
                ``None`` for zeros. The momentum buffers always start at zero.
        Returns:
            ``(output, (h_n, c_n))``: ``output`` ``(T, B, D * H)`` (batch first, unbatched
            or packed as the input), the last layer's ``h_t``; ``h_n`` ``(D * num_layers,
            B, H)`` and ``c_n`` ``(D * num_layers, B, hidden_size)`` in ``torch.nn.LSTM``'s
            order, at each sequence's own last step.
        """
        x, layout = self._sequence(input)
        B, unbatched = x.shape[1], layout.unbatched
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx must be a tuple (h_0, c_0), as for torch.nn.LSTM")
            hx = (self._check_state("h_0", hx[0], B, unbatched),
                  self._check_state("c_0", hx[1], B, unbatched, cell=True))

        def run_layer(k, reverse, x):
            i = self.state_index(k, reverse)
            h0, c0 = (None, None) if hx is None else (hx[0][i], hx[1][i])
            w_ih, w_hh, b_ih, b_hh = self.layer_parameters(k, reverse)
            w_hr = self.layer_projection(k, reverse)
            route = self._native_route(x, layout.packed, projected=w_hr is not None)
            factored = route and self.momentum.linear_input(x, w_ih, b_ih, self.backend)
            if factored and route == "onednn":
                y, w_in, b_in = factored
                return onednn_lstm(y, w_in, w_hh, b_in, b_hh, h0, c0)
            if factored:
                return _native_lstm_layer(*factored, w_hh, b_hh, h0, c0, self.training,
                                          layout.packed, w_hr)
            buf = self.momentum.of_input(x, w_ih, b_ih, self.backend)
            if b_hh is not None:
                buf = buf + b_hh
            h, c = lstm_recurrence(buf, w_hh, h0, c0, W_hr=w_hr, backend=self.backend)
            return h, layout.last(h), layout.last(c)

        out, (h_n, c_n) = self._layers(x, layout, run_layer)
        return layout.output(out), (layout.states(h_n), layout.states(c_n))

    def _native_route(self, x: torch.Tensor, packed: PackedIndex | None,
                      projected: bool = False) -> str | None:
        """Where a layer whose buffer factorizes runs PyTorch's own CPU LSTM (oneDNN, or
        with a projection its generic loop, which ``bench.projection`` times ahead of the
        library's op):

        - ``"torch.lstm"``: eager runs, through ``torch.lstm``; a packed batch only without
          autograd, as PyTorch's packed CPU LSTM has no fused backward (``python -m
          bench.packed``, T = 200, B = 32, hidden 128: ``torch.nn.LSTM`` on the packed
          batch 192 ms forward+backward, this module through the library's op 57 ms),
          while its packed forward is the fast one;
        - ``"onednn"``: under ``torch.compile`` (Dynamo refuses ``torch.lstm``), the
          registered ``onednn_lstm`` op, on a padded float32 batch without projection
          (:func:`~fastunitary.functional.onednn_lstm.onednn_lstm_supported`);
        - ``None``: the ``lstm_recurrence`` op.

        Only with ``backend="auto"`` on the CPU, and not under CPU autocast (oneDNN has no
        fp16 LSTM), function transforms (neither has a batching rule) or forward-mode AD
        (``mkldnn_rnn_layer`` has no forward derivative)."""
        if not (x.device.type == "cpu" and self.backend == "auto"
                and not torch.is_autocast_enabled("cpu")
                and not torch._C._are_functorch_transforms_active()
                and torch.autograd.forward_ad._current_level < 0):
            return None
        if torch.compiler.is_compiling():
            supported = (packed is None and not projected
                         and onednn_lstm_supported(x, self.weight_ih_l0))
            return "onednn" if supported else None
        return "torch.lstm" if packed is None or not torch.is_grad_enabled() else None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", forget_bias={self.forget_bias}"


_projection_warning_seen = False


@contextlib.contextmanager
def _projection_warning_muted(projected: bool):
    """Mutes PyTorch's warning that oneDNN has no LSTM projection, which it gives once per
    process: around the first projected call only, since entering ``catch_warnings``
    resets Python's once-per-location registry (a user's warnings would then repeat)."""
    global _projection_warning_seen
    if not projected or _projection_warning_seen:
        yield
        return
    _projection_warning_seen = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
        yield


def _native_lstm_layer(y, w_in, b_in, w_hh, b_hh, h0, c0, training: bool,
                       packed: PackedIndex | None = None, w_hr: torch.Tensor | None = None):
    """One layer as ``torch.lstm`` on the factored input: the buffer is
    ``F.linear(y, w_in, b_in)`` (``MomentumBuffer.linear_input``), so the momentum LSTM is
    a standard LSTM with input ``y`` and input weights ``w_in``, and PyTorch's fused CPU
    LSTM (oneDNN) runs it: 2-3x the speed of the per-step reference loop at hidden 128.
    With a projection ``w_hr`` (``proj_size``) PyTorch runs its generic LSTMP loop.

    For a packed batch (``packed``, the index of the module's input) ``y`` is repacked
    and runs through ``torch.lstm``'s packed form, as ``torch.nn.LSTM`` does, which stops
    each sequence at its own end; its states follow the length-sorted order there.

    Returns ``(h (T, B, n), h_T (B, n), c_T (B, n))`` as the ``lstm_recurrence`` route
    (``h`` zero past a packed sequence's end; ``h_T``, ``c_T`` at its last step).
    """
    B, n = y.shape[1], w_in.shape[0] // 4
    hx = (y.new_zeros(1, B, w_hh.shape[1]) if h0 is None else h0.unsqueeze(0),
          y.new_zeros(1, B, n) if c0 is None else c0.unsqueeze(0))
    if b_in is None and b_hh is None:
        params, biased = [w_in, w_hh], False
    else:
        biases = [b if b is not None else w_in.new_zeros(w_in.shape[0]) for b in (b_in, b_hh)]
        params, biased = [w_in, w_hh, *biases], True
    if w_hr is not None:  # torch.lstm knows a projection by h_0's width
        params.append(w_hr)
    # only the padded form warns: a packed first call spent the once-flag without it
    with _projection_warning_muted(w_hr is not None and packed is None):
        if packed is None:
            out, h_n, c_n = torch.lstm(y, hx, params, biased, 1, 0.0, training, False, False)
            return out, h_n[0], c_n[0]
        if packed.sorted_indices is not None:
            hx = tuple(s.index_select(1, packed.sorted_indices) for s in hx)
        data, h_n, c_n = torch.lstm(packed.packed_data(y), packed.batch_sizes, hx, params,
                                    biased, 1, 0.0, training, False)
    if packed.unsorted_indices is not None:
        h_n, c_n = (s.index_select(1, packed.unsorted_indices) for s in (h_n, c_n))
    return packed.padded(data), h_n[0], c_n[0]


class MomentumLSTM(MomentumLSTMBase):
    """``v_t = mu v_{t-1} + step g_t``; gates ``v_t + W_hh h_{t-1} + b_hh``.

    Example::

        rnn = MomentumLSTM(input_size=1, hidden_size=128, mu=0.6, step=0.6, batch_first=True)
        output, (h_n, c_n) = rnn(x)     # x: (B, T, 1) -> output (B, T, 128)

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size: as ``torch.nn.LSTM``, parameter names included (a ``torch.nn.LSTM``
            state dict loads as it is). Both directions share ``mu`` and ``step``.
        mu: momentum in [0, 1) (official script default 0.9; MNIST recipe 0.6, permuted
            MNIST 0.6, TIMIT 0.3).
        step: ``s`` > 0 (default 0.1; MNIST 0.6, permuted MNIST 1.0, TIMIT 0.1).
        learnable: learn ``mu`` (sigmoid) and ``step`` (softplus) instead of fixing them.
        forget_bias: initial forget-gate bias.  backend: ``"auto"``, ``"reference"``,
            ``"triton"``.  check_finite: raise on NaN/Inf inputs (costs a device sync).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0,
                 *, mu: float = 0.9, step: float = 0.1, **kwargs):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, kind="momentum", mu=mu, step=step, **kwargs)


class AdamLSTM(MomentumLSTMBase):
    """``m_t = mu m_{t-1} + step g_t``, ``r_t = beta r_{t-1} + (1 - beta) g_t^2``;
    gates ``m_t / sqrt(r_t + 1e-16) + W_hh h_{t-1} + b_hh``.

    Args: as :class:`MomentumLSTM`, plus ``beta`` in (0, 1) (default 0.999).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0,
                 *, mu: float = 0.9, step: float = 0.1, beta: float = 0.999, **kwargs):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, kind="adam", mu=mu, step=step, beta=beta, **kwargs)


class RMSPropLSTM(MomentumLSTMBase):
    """:class:`AdamLSTM` with ``mu = 0``: gates ``step g_t / sqrt(r_t + 1e-16) + W_hh h + b_hh``.

    Args: as :class:`AdamLSTM` without ``mu``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0,
                 *, step: float = 0.1, beta: float = 0.999, **kwargs):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, kind="rmsprop", step=step, beta=beta, **kwargs)


class NesterovLSTM(MomentumLSTMBase):
    """``v_t = ((k_t - 1) / (k_t + 2)) v_{t-1} + step g_t`` with the restart counter
    ``k_t = 1, 2, ..., R, 1, 2, ...`` over time steps (``k_t = t`` when ``restart=0``);
    gates as :class:`MomentumLSTM`.

    This is the form of the official PTB and orthogonal-cell code, whose buffer depends on
    the inputs only. The official MNIST/TIMIT Nesterov cell has a second coding in which
    the buffer also accumulates ``W_hh h_{t-1}``; that one cannot be precomputed by a scan
    and is not offered.

    Args: as :class:`MomentumLSTM` without ``mu``, plus ``restart`` (``R >= 0``,
    default 2: coefficients 0, 1/4, 0, 1/4, ...; with ``R = 0`` the coefficient tends to 1
    and the buffer grows with ``T``).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0,
                 *, step: float = 0.1, restart: int = 2, **kwargs):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, kind="nesterov", step=step, restart=restart, **kwargs)
