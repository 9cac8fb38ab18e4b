"""fastunitary.nn.MomentumLSTM / AdamLSTM / RMSPropLSTM / NesterovLSTM (METHODS.md section 5)."""

import pytest
import torch

from fastunitary.nn import AdamLSTM, MomentumLSTM, NesterovLSTM, RMSPropLSTM
from fastunitary.nn._momentum import nesterov_coefficients


def loop_lstm(model, x, kind, *, mu=0.0, s=1.0, beta=0.999, R=0):
    """Per-step loop written straight from METHODS.md section 5 (one layer, zeros start)."""
    T, B, _ = x.shape
    n = model.hidden_size
    W_ih, W_hh, b_ih, b_hh = (p.detach() for p in model.layer_parameters(0))
    h = c = torch.zeros(B, n)
    v = m = r = torch.zeros(B, 4 * n)
    out = []
    for t in range(T):
        g = x[t] @ W_ih.T + b_ih
        if kind == "momentum":
            v = mu * v + s * g
            buf = v
        elif kind == "nesterov":
            k = (t % R if R else t) + 1  # t counts from 0 here
            v = ((k - 1) / (k + 2)) * v + s * g
            buf = v
        else:
            m = mu * m + s * g
            r = beta * r + (1 - beta) * g * g
            buf = m / torch.sqrt(r + 1e-16)
        gates = buf + h @ W_hh.T + b_hh
        i, f, gg, o = gates.chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * gg.tanh()
        h = o.sigmoid() * c.tanh()
        out.append(h)
    return torch.stack(out), h, c


def test_mu0_step1_equals_torch_lstm_outputs_and_gradients():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 6, num_layers=2, batch_first=True)
    model = MomentumLSTM(3, 6, num_layers=2, batch_first=True, mu=0.0, step=1.0)
    model.load_state_dict(lstm.state_dict())  # same names and shapes as torch.nn.LSTM
    x = torch.randn(4, 11, 3)
    hx = (torch.randn(2, 4, 6), torch.randn(2, 4, 6))
    out_t, (h_t, c_t) = lstm(x, hx)
    out_m, (h_m, c_m) = model(x, hx)
    for a, b in ((out_m, out_t), (h_m, h_t), (c_m, c_t)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(out_t)
    ((out_t * w).sum() + c_t.sum()).backward()
    ((out_m * w).sum() + c_m.sum()).backward()
    for (name, p), q in zip(lstm.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    "cls, kw, kind",
    [
        (MomentumLSTM, dict(mu=0.6, step=0.6), dict(kind="momentum", mu=0.6, s=0.6)),
        (AdamLSTM, dict(mu=0.9, step=0.1, beta=0.99), dict(kind="adam", mu=0.9, s=0.1, beta=0.99)),
        (RMSPropLSTM, dict(step=0.5, beta=0.9), dict(kind="adam", mu=0.0, s=0.5, beta=0.9)),
        (NesterovLSTM, dict(step=0.3, restart=2), dict(kind="nesterov", s=0.3, R=2)),
        (NesterovLSTM, dict(step=0.3, restart=3), dict(kind="nesterov", s=0.3, R=3)),
        (NesterovLSTM, dict(step=0.3, restart=0), dict(kind="nesterov", s=0.3, R=0)),
    ],
)
@pytest.mark.parametrize("T", [1, 9])
def test_matches_per_step_loop(cls, kw, kind, T):
    torch.manual_seed(1)
    model = cls(3, 5, **kw)
    with torch.no_grad():  # nonzero biases, so b_ih inside / b_hh outside the buffer matters
        for p in (model.bias_ih_l0, model.bias_hh_l0):
            p.uniform_(-0.5, 0.5)
    x = torch.randn(T, 2, 3)
    out, (h_n, c_n) = model(x)
    out_ref, h_ref, c_ref = loop_lstm(model, x, **kind)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_n[0], c_ref, rtol=1e-5, atol=1e-5)


def test_nesterov_restart_2_alternates_0_and_quarter():
    coef = nesterov_coefficients(6, 2, "cpu", torch.float64).flatten()
    torch.testing.assert_close(coef, torch.tensor([0, 0.25, 0, 0.25, 0, 0.25], dtype=torch.float64))
    k = torch.arange(1, 7, dtype=torch.float64)
    torch.testing.assert_close(nesterov_coefficients(6, 0, "cpu", torch.float64).flatten(), (k - 1) / (k + 2))


@pytest.mark.parametrize("cls", [MomentumLSTM, AdamLSTM, RMSPropLSTM, NesterovLSTM])
def test_learnable_coefficients_get_gradients_and_stay_in_range(cls):
    model = cls(2, 4, learnable=True)
    names = {n for n, _ in model.named_parameters() if n.startswith("momentum.")}
    assert names, "learnable coefficients must be parameters"
    opt = torch.optim.SGD(model.parameters(), lr=50.0)  # a huge step: the links keep range
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3, 2))[0].square().mean().backward()
        assert all(model.get_parameter(n).grad is not None for n in names)
        opt.step()
    buf = model.momentum
    if buf.uses_mu:
        assert 0 < float(buf.mu.detach()) < 1
    if buf.uses_beta:
        assert 0 < float(buf.beta.detach()) < 1
    assert float(buf.step.detach()) > 0


def test_fixed_coefficients_leave_state_dict_as_torch_lstm():
    keys = set(MomentumLSTM(3, 4, num_layers=2).state_dict())
    assert keys == set(torch.nn.LSTM(3, 4, num_layers=2).state_dict())


def test_official_initialization():
    model = MomentumLSTM(3, 4)
    W_ih, W_hh, b_ih, b_hh = model.layer_parameters(0)
    torch.testing.assert_close(W_ih.T @ W_ih, torch.eye(3), atol=1e-5, rtol=0)  # orthogonal columns
    torch.testing.assert_close(W_hh, torch.eye(4).repeat(4, 1))
    assert torch.equal(b_ih, torch.zeros(16))
    torch.testing.assert_close(b_hh, torch.cat([torch.zeros(4), torch.ones(4), torch.zeros(8)]))
    assert MomentumLSTM(3, 4, forget_bias=-4.0).bias_hh_l0[4:8].eq(-4).all()


def test_unbatched_and_state_dict_round_trip():
    model = AdamLSTM(3, 4, num_layers=2)
    x = torch.randn(6, 3)
    out, (h_n, c_n) = model(x)
    assert out.shape == (6, 4) and h_n.shape == (2, 4) and c_n.shape == (2, 4)
    other = AdamLSTM(3, 4, num_layers=2)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(x)[0], out)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [MomentumLSTM, AdamLSTM, NesterovLSTM])
def test_fullgraph_compile_equals_eager(cls):
    torch._dynamo.reset()
    model = cls(3, 4, num_layers=2, learnable=cls is AdamLSTM)
    x = torch.randn(7, 2, 3)

    def f(x):
        out, (h, c) = model(x)
        return out.square().sum() + c.sum()

    assert torch._dynamo.explain(f)(x).graph_break_count == 0
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: MomentumLSTM(3, 4)(torch.zeros(5, 2, 2)), ValueError, "input_size = 3"),
        (lambda: MomentumLSTM(3, 4)(torch.zeros(5, 2, 3), torch.zeros(1, 2, 4)), TypeError, "tuple"),
        (lambda: MomentumLSTM(3, 4)(torch.zeros(5, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))),
         ValueError, "h_0"),
        (lambda: MomentumLSTM(3, 4)(torch.zeros(5, 2, 3, dtype=torch.float64)), TypeError, "float64"),
        (lambda: MomentumLSTM(3, 4, mu=1.0), ValueError, "mu"),
        (lambda: MomentumLSTM(3, 4, step=0.0), ValueError, "step"),
        (lambda: AdamLSTM(3, 4, beta=1.0), ValueError, "beta"),
        (lambda: NesterovLSTM(3, 4, restart=-1), ValueError, "restart"),
        (lambda: MomentumLSTM(3, 4, mu=0.0, learnable=True), ValueError, "learnable"),
        (lambda: MomentumLSTM(3, 4, backend="fast"), ValueError, "backend"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("cls, kw", [
    (MomentumLSTM, dict(mu=0.6, step=0.6)),
    (MomentumLSTM, dict(mu=0.0, step=0.5)),
    (MomentumLSTM, dict(mu=0.5, step=0.7, learnable=True)),
    (NesterovLSTM, dict(step=0.3, restart=2)),
])
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_native_route_equals_the_reference_op(cls, kw, bias, monkeypatch):
    """Eager CPU runs a linear buffer through torch.lstm (oneDNN) on the factored input;
    it must equal the lstm_recurrence route, outputs and every gradient."""
    calls = []
    native = torch.lstm
    monkeypatch.setattr(torch, "lstm", lambda *a: calls.append(1) or native(*a))
    model = cls(3, 5, num_layers=2, bias=bias, **kw)
    if bias:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "bias" in name:
                    p.uniform_(-0.5, 0.5)
    x = torch.randn(7, 2, 3)
    hx = (torch.randn(2, 2, 5), torch.randn(2, 2, 5))
    w = torch.randn(7, 2, 5)
    results = []
    for backend in ("auto", "reference"):
        model.backend = backend
        model.zero_grad()
        out, (h_n, c_n) = model(x, hx)
        ((out * w).sum() + c_n.sum()).backward()
        results.append((out, h_n, c_n, [p.grad.clone() for p in model.parameters()]))
    assert len(calls) == 2  # one torch.lstm per layer, only on the "auto" run
    (out_a, h_a, c_a, g_a), (out_r, h_r, c_r, g_r) = results
    for a, b in [(out_a, out_r), (h_a, h_r), (c_a, c_r), *zip(g_a, g_r)]:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_no_native_route_where_the_buffer_does_not_factor(monkeypatch):
    """AdamLSTM's buffer is not linear, and for input_size + 1 >= 4 hidden scanning the
    gates is cheaper: both stay on the lstm_recurrence op."""
    monkeypatch.setattr(torch, "lstm", lambda *a: pytest.fail("torch.lstm called"))
    for model, m in ((AdamLSTM(3, 5, mu=0.6, step=0.6), 3), (MomentumLSTM(30, 4, mu=0.6), 30)):
        x = torch.randn(4, 2, m)
        torch.testing.assert_close(model(x)[0], loop_lstm(model, x, **(
            dict(kind="adam", mu=0.6, s=0.6) if isinstance(model, AdamLSTM)
            else dict(kind="momentum", mu=0.6, s=0.1)))[0], rtol=1e-5, atol=1e-5)


def test_state_of_another_dtype_is_refused_clearly():
    model = MomentumLSTM(3, 5, mu=0.6)
    h = torch.zeros(1, 2, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="h_0 is torch.float64 but the module's parameters"):
        model(torch.randn(4, 2, 3), (h, h))
