"""The benchmark registry: every model of the library and the baselines, one entry each.

A :class:`Case` says how to build the model at a given hidden width, how the official code
would run it (a per-step PyTorch loop, what the papers' code does), and how many FLOPs it
does. Adding a model to ``python -m bench`` is adding one entry to :data:`REGISTRY`.

Widths: every case is built so that its output width is ``hidden`` and its state holds
``hidden`` reals per step of the recurrence proper (a complex state of ``n`` is ``2n``
reals, so scuRNN gets ``n = hidden / 2``; ENRNN splits ``hidden`` into a long-term and a
short-term half). What each model carries besides (an LSTM's cell state, a momentum
buffer) is recorded per row as ``recurrent_state_reals``.

FLOPs count the matrix products only (elementwise work and the scans are below 2 % of them
at the benchmark's widths), per token of a forward pass, plus what is done once per call
(building ``W``). Forward+backward counts 3x the forward, the usual rule for products.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from fastunitary import nn as fnn
from fastunitary import reference


# -- naive per-step loops: the official codes' form, differentiable by autograd -----------
def cell_loop(rnn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """scuRNN / scoRNN / ENRNN (one layer) as a per-step loop on natural tensors."""
    cell = rnn.layers[0]
    n = cell.hidden_size
    u = cell.input_term(x).float()
    W = cell.recurrent_matrix()
    if cell.is_complex:
        u = torch.complex(u[..., :n], u[..., n:])
    h = reference.recurrence_autograd(u, W, cell.modrelu_bias)
    return torch.cat([h.real, h.imag], -1) if cell.is_complex else h


def momentum_lstm_loop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MomentumRNN family's LSTMs as the official per-step loop (METHODS.md section 5):
    the buffer and the cell inside one Python iteration per time step."""
    W_ih, W_hh, b_ih, b_hh = model.layer_parameters(0)
    buf = model.momentum
    mu, s, beta, R = buf.mu, buf.step, buf.beta, buf.restart
    B, n = x.shape[1], model.hidden_size
    h = c = x.new_zeros(B, n, dtype=torch.float32)
    v = r = x.new_zeros(B, 4 * n, dtype=torch.float32)
    out = []
    for t in range(x.shape[0]):
        g = x[t] @ W_ih.T + b_ih
        if buf.kind == "nesterov":
            k = (t % R if R else t) + 1
            v = ((k - 1) / (k + 2)) * v + s * g
            u = v
        elif buf.kind == "momentum":
            v = mu * v + s * g
            u = v
        else:  # adam, rmsprop (mu = 0)
            v = mu * v + s * g
            r = beta * r + (1 - beta) * g * g
            u = v / torch.sqrt(r + 1e-16)
        i, f, gg, o = (u + h @ W_hh.T + b_hh).chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * gg.tanh()
        h = o.sigmoid() * c.tanh()
        out.append(h)
    return torch.stack(out)


def momentum_rnn_loop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MomentumRNN (tanh) as a per-step loop."""
    W_ih, W_hh, b_ih, b_hh = model.layer_parameters(0)
    mu, s = model.momentum.mu, model.momentum.step
    h = x.new_zeros(x.shape[1], model.hidden_size, dtype=torch.float32)
    v = torch.zeros_like(h)
    out = []
    for t in range(x.shape[0]):
        v = mu * v + s * (x[t] @ W_ih.T + b_ih)
        h = torch.tanh(h @ W_hh.T + v + b_hh)
        out.append(h)
    return torch.stack(out)


def sbo_loop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SBO-RNN (one layer) as a per-step loop, the inner gradient by autograd (the official
    code runs one Python iteration per step too, with explicit (B, n, n) Jacobians)."""
    W_ih, W_hh, b_ih, b_hh = model.layer_parameters(0)
    u = (x @ W_ih.T + b_ih + b_hh).float()
    mu = getattr(model, "mu_l0", 0.0)
    return reference.sbo_autograd(u, W_hh, mu=mu, eta=model.eta, steps=model.steps,
                                  method=model.method)[0]


def torch_lstm_loop(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.LSTM`` (one layer) recomputed step by step: the gate for the baseline."""
    g = x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + lstm.bias_hh_l0
    return reference.lstm_autograd(g.float(), lstm.weight_hh_l0)[0]


def torch_gru_loop(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.GRU`` (one layer) recomputed step by step: the gate for the baseline."""
    gi = (x @ gru.weight_ih_l0.T + gru.bias_ih_l0).float()
    h = gi.new_zeros(x.shape[1], gru.hidden_size)
    out = []
    for t in range(x.shape[0]):
        r_i, z_i, n_i = gi[t].chunk(3, -1)
        r_h, z_h, n_h = (h @ gru.weight_hh_l0.T + gru.bias_hh_l0).chunk(3, -1)
        r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
        h = (1 - z) * torch.tanh(n_i + r * n_h) + z * h
        out.append(h)
    return torch.stack(out)


# -- FLOP formulas (per token: input projection + recurrent product) ----------------------
def gated_flops(gates: int) -> Callable[[int, int], float]:
    """LSTM (4 gates), GRU (3), plain cell (1): ``2 m G + 2 H G`` with ``G = gates H``."""
    return lambda m, H: 2.0 * m * gates * H + 2.0 * H * gates * H


def cayley_flops(d: int) -> float:
    """``(I + A)^{-1} (I - A)`` on a real ``d x d`` (or its real embedding): an LU
    factorization (2/3 d^3) and ``d`` right-hand sides (2 d^3)."""
    return 8.0 / 3.0 * d ** 3


def sbo_flops(m: int, H: int) -> float:
    """SBO-RNN, one inner iteration: the input projection, ``W h`` and ``(D r) W``."""
    return 2.0 * m * H + 4.0 * H * H


@dataclass(frozen=True)
class Case:
    """One model of the benchmark.

    Attributes:
        name: registry key (``--models``).
        label: what tables and plots call it.
        build: ``build(input_size, hidden) -> module`` whose ``module(x)[0]`` is
            ``(T, B, hidden)``.
        loop: ``loop(module, x) -> (T, B, hidden)``, the same model as a per-step loop
            (the correctness reference, and a timed variant unless ``baseline``).
        flops_per_token: ``f(input_size, hidden)``, forward.
        flops_per_call: ``f(input_size, hidden)``, forward, once per call (building ``W``).
        state_reals: ``f(hidden)``: reals carried from one step to the next.
        baseline: a PyTorch module (no backends of ours, no timed loop).
        cpu_backend: the backend of the timed module on CPU (on CUDA: ``"auto"``, the
            Triton kernels, and ``"reference"``).
    """

    name: str
    label: str
    build: Callable[[int, int], nn.Module]
    loop: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    flops_per_token: Callable[[int, int], float]
    flops_per_call: Callable[[int, int], float] = field(default=lambda m, H: 0.0)
    state_reals: Callable[[int], int] = field(default=lambda H: H)
    baseline: bool = False
    cpu_backend: str = "auto"


def _lstm_case(name: str, label: str, build, state_per_hidden: int, **options) -> Case:
    """A MomentumRNN-family LSTM: its per-step loop, LSTM FLOPs, ``h``, ``c`` and buffers."""
    return Case(name, label, build, momentum_lstm_loop, gated_flops(4),
                state_reals=lambda H: state_per_hidden * H, **options)


def _halves(H: int) -> tuple[int, int]:
    return H // 2, H - H // 2


REGISTRY: dict[str, Case] = {c.name: c for c in [
    Case("lstm", "torch.nn.LSTM", lambda m, H: nn.LSTM(m, H), torch_lstm_loop,
         gated_flops(4), state_reals=lambda H: 2 * H, baseline=True),
    Case("gru", "torch.nn.GRU", lambda m, H: nn.GRU(m, H), torch_gru_loop,
         gated_flops(3), baseline=True),
    Case("scurnn", "ScuRNN", lambda m, H: fnn.ScuRNN(m, H // 2), cell_loop,
         gated_flops(1), lambda m, H: cayley_flops(H)),
    Case("scornn", "ScoRNN", lambda m, H: fnn.ScoRNN(m, H), cell_loop,
         gated_flops(1), lambda m, H: cayley_flops(H)),
    # the short-term block's spectral radius: a dense eigenvalue iteration, ~10 n^3
    Case("enrnn", "ENRNN", lambda m, H: fnn.ENRNN(m, *_halves(H)), cell_loop,
         gated_flops(1), lambda m, H: cayley_flops(_halves(H)[0]) + 10.0 * _halves(H)[1] ** 3),
    # the lstm_recurrence op: on CUDA the fused Triton LSTM, the like-for-like rival of
    # cuDNN's; on CPU its reference loop (what runs under torch.compile there)
    _lstm_case("lstm_recurrence", "lstm_recurrence op (LSTM)",
               lambda m, H: fnn.MomentumLSTM(m, H, mu=0.0, step=1.0), 2, cpu_backend="reference"),
    # the same module as users run it (eager CPU: PyTorch's fused LSTM on the factored input)
    _lstm_case("momentumlstm_mu0", "MomentumLSTM(mu=0)",
               lambda m, H: fnn.MomentumLSTM(m, H, mu=0.0, step=0.6), 2),
    _lstm_case("momentumlstm", "MomentumLSTM(mu=0.6)",
               lambda m, H: fnn.MomentumLSTM(m, H, mu=0.6, step=0.6), 6),
    _lstm_case("adamlstm", "AdamLSTM", lambda m, H: fnn.AdamLSTM(m, H, mu=0.6, step=0.6), 10),
    _lstm_case("nesterovlstm", "NesterovLSTM(R=2)",
               lambda m, H: fnn.NesterovLSTM(m, H, step=0.6, restart=2), 6),
    Case("momentumrnn", "MomentumRNN(mu=0.6)",
         lambda m, H: fnn.MomentumRNN(m, H, mu=0.6, step=0.6), momentum_rnn_loop,
         gated_flops(1), state_reals=lambda H: 2 * H),
    # SBO-RNN's best optimizer on digits; no fused kernel (not the recurrence's form)
    Case("sbornn_hb", "SBORNN(heavy ball)",
         lambda m, H: fnn.SBORNN(m, H, method="heavy_ball"), sbo_loop, sbo_flops,
         state_reals=lambda H: 2 * H),
]}


def set_backend(module: nn.Module, backend: str) -> None:
    """Point every part of a library module at ``backend``."""
    for m in module.modules():
        if hasattr(m, "backend"):
            m.backend = backend


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
