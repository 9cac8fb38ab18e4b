"""RFLO: random-feedback local online learning for a leaky rate RNN (METHODS.md section 7).

Murray (2019), "Local online learning in recurrent networks with random feedback", eLife
8:e43299. The network, with ``alpha = 1 / tau``:

    u_t = W h_{t-1} + W_in x_t
    h_t = (1 - alpha) h_{t-1} + alpha phi(u_t),        y_t = W_out h_t,   eps_t = y*_t - y_t

RFLO updates every step from quantities local to each synapse and a fixed random feedback
matrix ``B`` ``(n, n_out)`` that stands in for ``W_out^T``:

    p_t[i, j] = (1 - alpha) p_{t-1}[i, j] + alpha phi'(u_t[i]) h_{t-1}[j]    (eligibility)
    q_t[i, k] = (1 - alpha) q_{t-1}[i, k] + alpha phi'(u_t[i]) x_t[k]
    W    += lr   (B eps_t)[i] p_t[i, j]
    W_in += lr   (B eps_t)[i] q_t[i, k]
    W_out += lr_out eps_t h_t^T

Batched over ``B`` sequences (the updates average over the batch), a few tensor ops per
step; memory is the traces, ``O(B (n^2 + n m))``, whatever the sequence length: nothing of
the trajectory is stored. Choices recorded here (the paper's Figure 2 setting where it
states one): ``W`` Gaussian with standard deviation ``g / sqrt(n)`` (``g = 1.5``),
``W_in`` and ``B`` standard Gaussian, ``W_out`` Gaussian with standard deviation
``readout_gain / sqrt(n)``; updates apply at every step (online), traces restart with each
sequence. ``readout_gain`` is 0.1 by default, as small as in the paper's notebook
(``0.1 U(-1, 1) / sqrt(n)``): RFLO's update of ``W`` descends the loss only once ``W_out``
has turned towards ``B^T`` (feedback alignment), and a readout that starts small is soon
dominated by what it learned, which carries the alignment; on the periodic-output task
that took RFLO's best median drop at 80 tau from 5.4x to 12x (README, RFLO section).

For outputs longer than RFLO learns from the network's own dynamics (on the periodic-output
task: beyond about 80 tau), :func:`segment_cues` gives the network a sequence of cue inputs
that splits the output into short segments (README, RFLO section).

:func:`bptt_loss` runs the same network differentiably for the backpropagation-through-time
baseline: :meth:`LeakyRNN.forward` is the library's ``recurrence`` op in its leaky form
(``leak = 1 / tau``), one op over the sequence with a closed-form backward.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import nn

from . import _checks
from .functional.recurrence import recurrence

#: ``phi`` and its derivative written in terms of ``phi(u)``, so a step evaluates phi once
ACTIVATIONS = {
    "tanh": (torch.tanh, lambda y: 1 - y * y),
    "relu": (torch.relu, lambda y: (y > 0).to(y.dtype)),
}


class LeakyRNN(nn.Module):
    """A leaky rate RNN ``h_t = (1 - 1/tau) h_{t-1} + (1/tau) phi(W h_{t-1} + W_in x_t)``
    with a linear readout ``y_t = W_out h_t``.

    Args:
        input_size (m), hidden_size (n), output_size (n_out).
        tau: time constant in steps, >= 1 (``tau = 1``: no leak).
        activation: ``"tanh"`` or ``"relu"``.
        g: gain of the initial recurrent weights.
        readout_gain: scale of the initial readout, ``W_out ~ N(0, readout_gain^2 / n)``;
            small by default so that RFLO's feedback alignment sets in early (module
            docstring).
        generator: for the initialization.

    Parameters: ``weight`` ``(n, n)``, ``weight_in`` ``(n, m)``, ``weight_out`` ``(n_out, n)``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, *, tau: float = 10.0,
                 activation: str = "tanh", g: float = 1.5,
                 readout_gain: float = 0.1, generator: torch.Generator | None = None):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("output_size", output_size)):
            _checks.check_positive_int(name, v)
        tau, g = _checks.check_fixed_float("tau", tau), _checks.check_fixed_float("g", g)
        readout_gain = _checks.check_fixed_float("readout_gain", readout_gain)
        if not 1 <= tau < math.inf:
            raise ValueError(f"tau must be >= 1 and finite (time steps), got {tau}")
        if not 0 <= readout_gain < math.inf:
            raise ValueError(f"readout_gain must be >= 0 and finite, got {readout_gain}")
        if not -math.inf < g < math.inf:
            raise ValueError(f"g must be finite, got {g}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.tau, self.activation = float(tau), activation
        self.g, self.readout_gain = float(g), float(readout_gain)
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.weight_in = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_out = nn.Parameter(torch.empty(output_size, hidden_size))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the weights again as the constructor does (``g``, ``readout_gain``)."""
        n = self.weight.shape[0]
        with torch.no_grad():
            for p, std in ((self.weight, self.g / math.sqrt(n)), (self.weight_in, 1.0),
                           (self.weight_out, self.readout_gain / math.sqrt(n))):
                # drawn on the CPU, so that a generator gives the same weights on any device
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    def extra_repr(self) -> str:
        n_out, n = self.weight_out.shape
        s = f"{self.weight_in.shape[1]}, {n}, {n_out}, tau={self.tau:g}"
        if self.activation != "tanh":
            s += f", activation={self.activation!r}"
        if self.g != 1.5:
            s += f", g={self.g:g}"
        if self.readout_gain != 0.1:
            s += f", readout_gain={self.readout_gain:g}"
        return s

    @property
    def alpha(self) -> float:
        return 1.0 / self.tau

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        """``x`` ``(T, B, m)``, ``h0`` ``(B, n)`` or ``None`` (zeros) -> ``(y (T, B, n_out),
        h (T, B, n))``, differentiable: the ``recurrence`` op with ``leak = 1 / tau``."""
        _check_inputs(self, x, None, h0, autocast=True)
        h = recurrence(x @ self.weight_in.T, self.weight, None, h0, activation=self.activation,
                       leak=self.alpha)
        if not torch.is_autocast_enabled(h.device.type):  # the op returns float32 or wider
            h = h.to(self.weight_out.dtype)
        return h @ self.weight_out.T, h


OWNER = "the network's parameters"


def _check_inputs(rnn: LeakyRNN, x: torch.Tensor, target: torch.Tensor | None,
                  h0: torch.Tensor | None, *, autocast: bool, h0_name: str = "h0") -> None:
    """One rule for :meth:`LeakyRNN.forward`, :func:`bptt_loss` and :meth:`RFLO.run`, so
    that inputs one accepts, the others accept too: ``x`` ``(T, B, input_size)``,
    ``target`` ``(T, B, output_size)`` (``None``: none given), ``h0`` ``(B, hidden_size)`` or
    ``None``, all on the network's device and of its dtype (or, with ``autocast``, of the
    autocast dtype: RFLO's hand-written updates take none, they would round silently)."""
    _checks.check_tensor("x", x, allow_complex=False)
    m = rnn.weight_in.shape[1]
    if x.dim() != 3 or x.shape[-1] != m or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (T, B, input_size = {m}) with T, B >= 1, "
                         f"got {tuple(x.shape)}")
    T, B, _ = x.shape
    given = {"x": x}
    if target is not None:
        _checks.check_tensor("target", target, allow_complex=False)
        _checks.check_shape("target", target, (T, B, rnn.weight_out.shape[0]),
                            what="(T, B, output_size)")
        given["target"] = target
    if h0 is not None:
        _checks.check_tensor(h0_name, h0, allow_complex=False)
        _checks.check_shape(h0_name, h0, (B, rnn.weight.shape[0]), what="(B, hidden_size)")
        given[h0_name] = h0
    _checks.check_same_device(OWNER, rnn.weight, **given)
    for name, t in given.items():
        _checks.check_dtype(name, t, rnn.weight.dtype, owner=OWNER, autocast=autocast)


class RFLOState(NamedTuple):
    """Where :meth:`RFLO.run` stopped, to continue a sequence in the next call: the state
    ``h`` ``(B, n)`` and the eligibility traces ``p`` ``(B, n, n)`` and ``q`` ``(B, n, m)``
    (``q`` stays zero without ``train_input``). A run that returns its state advances the
    traces whether or not it learns, so an evaluation chunk in the middle of a stream
    leaves them as the stream has them."""

    h: torch.Tensor
    p: torch.Tensor
    q: torch.Tensor


class _StepSize:
    """An attribute holding a step size, checked on every assignment (a float >= 0 and
    finite), so that a schedule that reassigns it between runs is checked too."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj, value) -> None:
        value = _checks.check_fixed_float(self.name, value)
        if not 0 <= value < math.inf:
            raise ValueError(f"{self.name} must be >= 0 and finite, got {value}")
        obj.__dict__[self.name] = value


class RFLO:
    """Online RFLO training of a :class:`LeakyRNN` (see the module docstring).

    Args:
        rnn: the network, float32 or float64; its parameters are updated in place (no
            autograd). A float16 or bfloat16 network is refused: RFLO's per-step updates
            are far below those formats' resolution and would mostly round away.
        lr: step size for ``W`` and ``W_in``; ``0`` leaves them fixed, so only the readout
            learns (the delta rule on a fixed network, a reservoir: the baseline that tells
            what RFLO's recurrent updates add).  lr_out: for ``W_out`` (default ``lr``).
            Both may be reassigned between runs (a schedule), each checked again (finite,
            >= 0); a schedule may take both to 0, which freezes every weight (only the
            constructor refuses that, where it can only be a mistake).
        train_input: update ``W_in`` too.
        generator: draws the fixed feedback matrix ``B`` ``(n, n_out)``.
        feedback: ``B`` itself instead (e.g. ``trainer.feedback`` saved with the network,
            to resume training: the readout has aligned with that ``B``, and a new draw
            would undo the alignment).
        check_finite: refuse NaN/inf in ``x``, ``target`` and the start state (on by
            default: nothing stands between the data and the weights, which a single NaN
            would turn to NaN in place, for good), and raise after a run whose updates
            diverged to NaN/inf. One reduction per 1024 steps of each tensor and one per
            weight per run; turn it off to save the host synchronizations it costs on a GPU.

    Attributes: ``feedback`` ``(n, n_out)``, as drawn or given (each run uses a copy at the
    network's device and dtype).
    """

    def __init__(self, rnn: LeakyRNN, lr: float = 1e-3, lr_out: float | None = None, *,
                 train_input: bool = True, generator: torch.Generator | None = None,
                 feedback: torch.Tensor | None = None, check_finite: bool = True):
        rnn = getattr(rnn, "_orig_mod", rnn)  # torch.compile(rnn): its parameters are rnn's
        if not isinstance(rnn, LeakyRNN):
            raise TypeError(f"rnn must be a fastunitary.rflo.LeakyRNN, got {type(rnn).__name__}")
        _check_precision(rnn)
        self.rnn, self.lr = rnn, lr
        self.lr_out = self.lr if lr_out is None else lr_out
        if self.lr == self.lr_out == 0:
            raise ValueError("lr and lr_out must not be both 0: nothing would learn")
        self.train_input = _checks.check_flag("train_input", train_input)
        self.check_finite = _checks.check_flag("check_finite", check_finite)
        n, n_out = rnn.weight.shape[0], rnn.weight_out.shape[0]
        if feedback is None:
            feedback = torch.randn(n, n_out, generator=generator)
        else:
            if generator is not None:
                raise ValueError("give feedback or a generator to draw it, not both")
            _checks.check_tensor("feedback", feedback, allow_complex=False)
            _checks.check_shape("feedback", feedback, (n, n_out), what="(hidden_size, output_size)")
            _checks.check_finite("feedback", feedback)
            feedback = feedback.detach().clone()
        self.feedback = feedback

    lr = _StepSize()  # W and W_in
    lr_out = _StepSize()  # W_out

    @torch.no_grad()
    def run(self, x: torch.Tensor, target: torch.Tensor, h0: torch.Tensor | None = None,
            *, learn: bool = True, state: RFLOState | None = None,
            return_state: bool = False) -> torch.Tensor | tuple[torch.Tensor, RFLOState]:
        """One pass over a batch of sequences, updating the weights at every step.

        Args:
            x: ``(T, B, m)`` inputs.  target: ``(T, B, n_out)``.  h0: ``(B, n)`` or zeros.
            learn: ``False`` runs the network without updating it (evaluation).
            state: an :class:`RFLOState` returned by the previous call, to continue its
                sequences (instead of ``h0``): a long stream fed in chunks this way gives the
                same updates and losses as one call, in memory independent of its length.
            return_state: also return the :class:`RFLOState` at the end (its traces
                advanced, even with ``learn=False``).
        Returns:
            ``(T,)``: the squared error ``mean_b ||eps_t||^2 / 2`` at each step, before that
            step's update; with ``return_state``, ``(losses, state)``.
        """
        rnn = self.rnn
        _check_precision(rnn)
        if state is not None and h0 is not None:
            raise ValueError("give h0 (a new sequence) or state (continuing one), not both")
        if state is not None and not isinstance(state, RFLOState):
            raise TypeError(f"state must be the RFLOState a previous run returned, "
                            f"got {type(state).__name__}")
        _check_inputs(rnn, x, target, h0 if state is None else state.h, autocast=False,
                      h0_name="h0" if state is None else "state.h")
        T, B, m = x.shape
        n = rnn.weight.shape[0]
        if state is not None:
            for name, t, shape, what in (("state.p", state.p, (B, n, n), "(B, n, n)"),
                                         ("state.q", state.q, (B, n, m), "(B, n, input_size)")):
                _checks.check_tensor(name, t, allow_complex=False)
                _checks.check_shape(name, t, shape, what=what)
                _checks.check_same_device(OWNER, rnn.weight, **{name: t})
                _checks.check_dtype(name, t, rnn.weight.dtype, owner=OWNER, autocast=False)
        if self.check_finite:
            named = {"x": x, "target": target}
            if state is None:
                named["h0"] = h0
            else:
                named.update({f"state.{k}": t for k, t in state._asdict().items()})
            for name, t in named.items():
                # in blocks of steps: the check's temporaries stay small, as the run's do
                for block in () if t is None else t.split(1024):
                    _checks.check_finite(name, block)
        phi, dphi = ACTIVATIONS[rnn.activation]
        a = rnn.alpha
        W, W_in, W_out = rnn.weight, rnn.weight_in, rnn.weight_out
        # B follows the network wherever it was moved since; the kept one is not rounded
        feedback = self.feedback.to(W.device, W.dtype)
        if state is None:
            h = x.new_zeros(B, n) if h0 is None else h0.clone()
            p = x.new_zeros(B, n, n)  # eligibility traces: O(B n^2), independent of T
            q = x.new_zeros(B, n, m)
        else:  # copies: the caller's state stays as it was
            h, p, q = (t.clone() for t in state)
        losses = x.new_empty(T)
        recurrent = learn and self.lr > 0  # lr = 0: W and W_in do not move
        # the traces are needed by W's updates or by the caller continuing from this state
        traced = recurrent or return_state
        # At the paper's sizes (n = 30) a step costs its number of op calls, not its flops:
        # the transposes and views are taken once (views follow the in-place updates), and
        # each update is one fused in-place op. W += lr/B sum_b (B eps_b)_i p_b[i, :] is a
        # batched matmul over i of (1, B) by (B, n), written into W viewed as (n, 1, n).
        W_t, W_in_t, W_out_t, feedback_t = W.T, W_in.T, W_out.T, feedback.T
        W_rows, W_in_rows = W.unsqueeze(1), W_in.unsqueeze(1)  # views, any strides
        p_by_unit, q_by_unit = p.transpose(0, 1), q.transpose(0, 1)  # (n, B, n), (n, B, m)
        lr, lr_out, half_over_B = self.lr / B, self.lr_out / B, 0.5 / B
        # the updates are written by hand at the weights' precision; an enclosing autocast
        # region would run their matmuls in bfloat16
        with torch.autocast(device_type=x.device.type, enabled=False):
            for t in range(T):
                x_t = x[t]
                y = phi(torch.addmm(x_t @ W_in_t, h, W_t))
                if traced:
                    d = (dphi(y) * a).unsqueeze(2)  # (B, n, 1)
                    p.baddbmm_(d, h.unsqueeze(1), beta=1 - a)  # (1 - a) p + d h^T
                    if self.train_input:
                        q.baddbmm_(d, x_t.unsqueeze(1), beta=1 - a)
                h = torch.add(h * (1 - a), y, alpha=a)
                eps = torch.addmm(target[t], h, W_out_t, alpha=-1)  # (B, n_out)
                flat = eps.view(-1)
                torch.mul(torch.dot(flat, flat), half_over_B, out=losses[t])
                if recurrent:
                    # the random projection of the error, (n, 1, B)
                    err = (eps @ feedback_t).T.unsqueeze(1)
                    W_rows.baddbmm_(err, p_by_unit, alpha=lr)
                    if self.train_input:
                        W_in_rows.baddbmm_(err, q_by_unit, alpha=lr)
                if learn:
                    W_out.addmm_(eps.T, h, alpha=lr_out)
        if learn and self.check_finite:
            for name, weight in (("weight", W), ("weight_in", W_in), ("weight_out", W_out)):
                if not torch.isfinite(weight).all():
                    raise FloatingPointError(
                        f"RFLO diverged: the network's {name} holds NaN or inf after this run "
                        f"(its inputs were finite); lower lr / lr_out")
        return (losses, RFLOState(h, p, q)) if return_state else losses


def _check_precision(rnn: LeakyRNN) -> None:
    """Refuse a half-precision network: RFLO writes its updates into the weights at their
    own precision, and a step of ``lr * (B eps)_i p_ij`` is below float16's and bfloat16's
    resolution near the weights' size, so most of them would round away
    (``tests/test_rflo.py::test_half_precision_would_round_the_updates_away``)."""
    if rnn.weight.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"RFLO updates the network's weights in place at their precision, "
                        f"and its per-step updates are below {rnn.weight.dtype}'s resolution: "
                        f"train a float32 or float64 network (rnn.float()); a half-precision "
                        f"copy can be made for inference afterwards")


def bptt_loss(rnn: LeakyRNN, x: torch.Tensor, target: torch.Tensor,
              h0: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over steps and batch of ``||y*_t - y_t||^2 / 2``, differentiable (the
    backpropagation-through-time baseline on the same network)."""
    _check_inputs(rnn, x, target, h0, autocast=True)
    y, _ = rnn(x, h0)
    return 0.5 * ((target - y) ** 2).sum(-1).mean()


def segment_cues(steps: int, segment: int, *, batch: int = 1, device=None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """One-hot cues ``(steps, batch, ceil(steps / segment))``: input ``k`` is 1 during steps
    ``k segment .. (k + 1) segment - 1`` and 0 otherwise.

    Our reading of the "augmented circuit architecture that allows the RNN to concatenate
    short-duration patterns into longer sequences", which the paper's abstract proposes for
    long durations: an auxiliary circuit steps through a sequence of inputs, so the RNN
    learns a long output as short segments, each cued by its own input, instead of
    carrying one pattern through the whole duration. With segments of 20 tau, a length
    RFLO learns without input, a 160-tau output is eight cued segments.

    ``dtype``: the default dtype if ``None``. The result is a new tensor of its own (not a
    view shared across the batch), so it can be written in place.
    """
    for name, v in (("steps", steps), ("segment", segment), ("batch", batch)):
        _checks.check_positive_int(name, v)
    index = torch.arange(steps, device=device) // segment
    cues = torch.nn.functional.one_hot(index, -(-steps // segment)).to(
        dtype or torch.get_default_dtype())
    return cues.unsqueeze(1).repeat(1, batch, 1)


def periodic_target(period: float, steps: int | None = None, *, batch: int = 1,
                    device=None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``sin(2 pi t / period)`` for ``t = 1 .. steps`` (one period by default): the
    periodic-output task of the paper's Figure 2, ``(steps, batch, 1)``. ``period`` is in
    steps and need not be whole when ``steps`` is given. ``dtype``: the default dtype if
    ``None``; the result is a new tensor of its own, so it can be written in place."""
    if isinstance(period, bool) or not isinstance(period, numbers.Real) or not 0 < period < math.inf:
        raise ValueError(f"period must be a positive number of steps, got {period!r}")
    if steps is None and not isinstance(period, numbers.Integral):
        raise ValueError(f"steps defaults to period, which must then be an int; got {period!r}")
    steps = period if steps is None else steps
    for name, v in (("steps", steps), ("batch", batch)):
        _checks.check_positive_int(name, v)
    t = torch.arange(1, steps + 1, dtype=dtype or torch.get_default_dtype(), device=device)
    return torch.sin(2 * math.pi * t / period).view(steps, 1, 1).repeat(1, batch, 1)
