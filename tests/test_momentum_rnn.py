"""fastunitary.nn.MomentumRNN, and momentum on the unitary/orthogonal cells."""

import pytest
import torch

import fastunitary.nn as fnn
from fastunitary.nn import ENRNN, MomentumRNN, ScoRNN, ScuRNN


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_mu0_step1_equals_torch_rnn(nonlinearity):
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 5, num_layers=2, nonlinearity=nonlinearity)
    model = MomentumRNN(3, 5, num_layers=2, nonlinearity=nonlinearity, mu=0.0, step=1.0)
    model.load_state_dict(rnn.state_dict())
    x, h0 = torch.randn(8, 2, 3), torch.randn(2, 2, 5)
    (out_t, h_t), (out_m, h_m) = rnn(x, h0), model(x, h0)
    torch.testing.assert_close(out_m, out_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_m, h_t, rtol=1e-5, atol=1e-5)
    out_t.sum().backward()
    out_m.sum().backward()
    for p, q in zip(rnn.parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5)


def test_matches_per_step_loop():
    model = MomentumRNN(3, 5, mu=0.6, step=0.4)
    W_ih, W_hh, b_ih, b_hh = (p.detach() for p in model.layer_parameters(0))
    x = torch.randn(9, 2, 3)
    v = h = torch.zeros(2, 5)
    outs = []
    for t in range(9):  # METHODS.md: v = mu v + s (W_ih x + b_ih), h = tanh(W_hh h + v + b_hh)
        v = 0.6 * v + 0.4 * (x[t] @ W_ih.T + b_ih)
        h = torch.tanh(h @ W_hh.T + v + b_hh)
        outs.append(h)
    torch.testing.assert_close(model(x)[0], torch.stack(outs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [ScoRNN, ScuRNN])
def test_momentum_on_unitary_cell_matches_loop(cls):
    model = cls(3, 6, momentum=0.7, momentum_step=0.5)
    cell = model.layers[0]
    x = torch.randn(7, 2, 3)
    W = cell._compute_recurrent_weight().detach()  # planes layout (real embedding if complex)
    u = (x @ cell.weight_ih.T + cell.bias_ih).detach()
    v = h = torch.zeros(2, cell.state_size)
    outs = []
    for t in range(7):  # v_t = mu v + s (U x_t + c), h_t = modReLU(W h + v_t)
        v = 0.7 * v + 0.5 * u[t]
        z = h @ W.T + v
        zc = torch.complex(z[:, :6], z[:, 6:]) if cell.is_complex else z
        r = (zc.abs() ** 2 + 1e-12).sqrt()
        hc = zc * torch.relu(r + cell.modrelu_bias.detach()) / r
        h = torch.cat([hc.real, hc.imag], -1) if cell.is_complex else hc
        outs.append(h)
    torch.testing.assert_close(model(x)[0], torch.stack(outs), rtol=1e-5, atol=1e-5)


def test_momentum_cell_refuses_single_steps_and_keeps_unitarity():
    model = ENRNN(3, 6, 4, momentum=0.5)
    with pytest.raises(RuntimeError, match="whole sequence"):
        model.layers[0](torch.randn(2, 3))
    W1 = model.recurrent_matrix()[:6, :6]
    torch.testing.assert_close(W1 @ W1.T, torch.eye(6), atol=1e-5, rtol=0)
    assert model(torch.randn(5, 2, 3))[0].shape == (5, 2, 10)


def test_learnable_momentum_on_cell():
    model = ScoRNN(2, 4, momentum=0.5, learnable_momentum=True)
    model(torch.randn(6, 3, 2))[0].sum().backward()
    assert model.layers[0].momentum.mu_logit.grad is not None


LEARNABLE = {
    "MomentumLSTM": lambda **kw: fnn.MomentumLSTM(3, 4, 2, mu=0.6, step=0.3, learnable=True, **kw),
    "AdamLSTM": lambda **kw: fnn.AdamLSTM(3, 4, mu=0.6, beta=0.9, learnable=True, **kw),
    "RMSPropLSTM": lambda **kw: fnn.RMSPropLSTM(3, 4, beta=0.9, learnable=True, **kw),
    "NesterovLSTM": lambda **kw: fnn.NesterovLSTM(3, 4, step=0.3, learnable=True, **kw),
    "MomentumRNN": lambda **kw: fnn.MomentumRNN(3, 4, mu=0.6, learnable=True, **kw),
    "ScoRNN": lambda **kw: ScoRNN(3, 4, 2, momentum=0.6, learnable_momentum=True, **kw),
    "ENRNN": lambda **kw: fnn.ENRNN(3, 3, 2, momentum=0.6, momentum_step=0.5,
                                    learnable_momentum=True, **kw),
}


@pytest.mark.parametrize("name", sorted(LEARNABLE))
def test_reset_parameters_resets_learnable_coefficients(name):
    """reset_parameters() once left the learnable coefficients alone: after to_empty (the
    README's meta-device route) they held whatever memory held, and after training their
    trained values. Uninitialized memory is NaN here, so a missed entry shows."""
    torch.manual_seed(7)
    fresh = LEARNABLE[name]()
    reset = LEARNABLE[name](device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for t in [*reset.parameters(), *reset.buffers()]:
            if t.is_floating_point():
                t.fill_(float("nan"))
    torch.manual_seed(7)
    reset.reset_parameters()
    want = fresh.state_dict()
    for key, got in reset.state_dict().items():
        torch.testing.assert_close(got, want[key], rtol=0, atol=0, msg=key)
    x = torch.randn(5, 2, 3)
    assert torch.isfinite(reset(x)[0]).all()
    with torch.no_grad():  # as after training
        for p in fresh.parameters():
            p.add_(0.25)
    fresh.reset_parameters()
    coefficients = {k: v for k, v in fresh.state_dict().items() if "momentum." in k}
    assert coefficients
    for key, value in coefficients.items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_fullgraph_compile_equals_eager():
    torch._dynamo.reset()
    model = MomentumRNN(3, 4, num_layers=2, mu=0.5)
    x = torch.randn(6, 2, 3)
    f = lambda x: model(x)[0].square().sum()  # noqa: E731
    assert torch._dynamo.explain(f)(x).graph_break_count == 0
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: MomentumRNN(3, 4, nonlinearity="gelu"), ValueError, "nonlinearity"),
        (lambda: MomentumRNN(3, 4)(torch.zeros(5, 2, 3), torch.zeros(2, 2, 4)), ValueError, "hx"),
        (lambda: MomentumRNN(3, 4)(torch.zeros(5, 2)), ValueError, "input_size = 3"),
        (lambda: ScoRNN(3, 4, momentum=1.5), ValueError, r"momentum must be in \[0, 1\), got 1.5"),
        (lambda: ScoRNN(3, 4, momentum=0.5, momentum_step=0), ValueError,
         "momentum_step must be > 0"),
        # without momentum these would be dropped silently
        (lambda: ScoRNN(3, 4, momentum_step=0.1), TypeError, "give momentum=mu as well"),
        (lambda: ScoRNN(3, 4, learnable_momentum=True), TypeError, "give momentum=mu as well"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
