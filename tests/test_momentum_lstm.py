"""fastunitary.nn.MomentumLSTM / AdamLSTM / RMSPropLSTM / NesterovLSTM (METHODS.md section 5)."""

import contextlib

import pytest
import torch

from fastunitary.nn import AdamLSTM, MomentumLSTM, NesterovLSTM, RMSPropLSTM
from fastunitary.nn._momentum import nesterov_coefficients

from .conftest import mkldnn_disabled


def loop_lstm(model, x, kind, *, mu=0.0, s=1.0, beta=0.999, R=0):
    """Per-step loop written straight from METHODS.md section 5 (one layer, zeros start);
    with ``proj_size``, torch.nn.LSTM's projection ``h_t <- W_hr h_t`` after each step."""
    T, B, _ = x.shape
    n = model.hidden_size
    W_ih, W_hh, b_ih, b_hh = (p.detach() for p in model.layer_parameters(0))
    W_hr = model.layer_projection(0)
    h = torch.zeros(B, W_hh.shape[1])
    c = torch.zeros(B, n)
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
        if W_hr is not None:
            h = h @ W_hr.detach().T
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
@pytest.mark.parametrize("proj_size", [0, 2])
def test_matches_per_step_loop(cls, kw, kind, T, proj_size):
    torch.manual_seed(1)
    model = cls(3, 5, proj_size=proj_size, **kw)
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
    # the official cell's nn.init.eye_ on (4n, n): the input-gate block only
    torch.testing.assert_close(W_hh, torch.cat([torch.eye(4), torch.zeros(12, 4)]))
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
@pytest.mark.parametrize("cls, proj_size", [(MomentumLSTM, 0), (AdamLSTM, 0), (NesterovLSTM, 0),
                                            (MomentumLSTM, 2)])
def test_fullgraph_compile_equals_eager(cls, proj_size):
    torch._dynamo.reset()
    model = cls(3, 4, num_layers=2, learnable=cls is AdamLSTM, proj_size=proj_size)
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
        # an option the buffer does not use would be dropped silently: refused
        (lambda: NesterovLSTM(3, 4, mu=0.9), TypeError,
         r"mu=0.9 does not apply to the 'nesterov' buffer, which takes restart, step"),
        (lambda: NesterovLSTM(3, 4, beta=0.5), TypeError, "beta=0.5 does not apply"),
        (lambda: RMSPropLSTM(3, 4, mu=0.9), TypeError, r"'rmsprop' buffer, which takes beta, step"),
        (lambda: RMSPropLSTM(3, 4, restart=5), TypeError, "restart=5 does not apply"),
        (lambda: MomentumLSTM(3, 4, beta=0.5), TypeError, "beta=0.5 does not apply"),
        (lambda: MomentumLSTM(3, 4, restart=3), TypeError, "restart=3 does not apply"),
        (lambda: AdamLSTM(3, 4, restart=3), TypeError, "which takes mu, beta, step"),
        *((lambda p=p: MomentumLSTM(3, 4, proj_size=p), ValueError,
           r"proj_size must be an int in \[0, hidden_size = 4\) \(0: no projection\), got")
          for p in (-1, 4, 5, 1.5, True, "2")),
        (lambda: MomentumLSTM(3, 4, proj_size=2)(torch.zeros(5, 2, 3), (torch.zeros(1, 2, 4),
                                                                        torch.zeros(1, 2, 4))),
         ValueError, r"h_0 must have shape \(1, 2, 2\) = \(num_layers, B, proj_size\)"),
        (lambda: MomentumLSTM(3, 4, proj_size=2)(torch.zeros(5, 2, 3), (torch.zeros(1, 2, 2),
                                                                        torch.zeros(1, 2, 2))),
         ValueError, r"c_0 must have shape \(1, 2, 4\) = \(num_layers, B, hidden_size\)"),
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


def _refuse_native_routes(monkeypatch):
    from fastunitary.nn import momentum_lstm

    monkeypatch.setattr(torch, "lstm", lambda *a: pytest.fail("torch.lstm called"))
    monkeypatch.setattr(momentum_lstm, "onednn_lstm", lambda *a: pytest.fail("onednn_lstm called"))


def test_no_native_route_where_the_buffer_does_not_factor(monkeypatch):
    """AdamLSTM's buffer is not linear, and for input_size + 1 >= 4 hidden scanning the
    gates is cheaper: both stay on the lstm_recurrence op."""
    _refuse_native_routes(monkeypatch)
    for model, m in ((AdamLSTM(3, 5, mu=0.6, step=0.6), 3), (MomentumLSTM(30, 4, mu=0.6), 30)):
        x = torch.randn(4, 2, m)
        torch.testing.assert_close(model(x)[0], loop_lstm(model, x, **(
            dict(kind="adam", mu=0.6, s=0.6) if isinstance(model, AdamLSTM)
            else dict(kind="momentum", mu=0.6, s=0.1)))[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("learnable", [False, True])
def test_compiled_model_runs_the_onednn_op(learnable):
    """Compiled (fullgraph), a linear buffer's layers are the onednn_lstm op (PyTorch's
    oneDNN LSTM, as eager runs get through torch.lstm): same outputs and gradients as
    eager, the op found in the compiled code."""
    torch._dynamo.reset()
    model = MomentumLSTM(3, 5, num_layers=2, mu=0.6, step=0.6, learnable=learnable)
    x = torch.randn(7, 2, 3)
    hx = (torch.randn(2, 2, 5), torch.randn(2, 2, 5))

    def loss(m):
        out, (h_n, c_n) = m(x, hx)
        return out.square().sum() + h_n.sum() + c_n.sum()

    from torch._inductor.utils import run_and_get_code

    compiled_loss, code = run_and_get_code(torch.compile(loss, fullgraph=True), model)
    assert "fastunitary.onednn_lstm" in "\n".join(code)
    got = torch.autograd.grad(compiled_loss, list(model.parameters()))
    eager_loss = loss(model)
    want = torch.autograd.grad(eager_loss, list(model.parameters()))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_batch_first_view_and_packed_input_equal_eager():
    """Compiled, the onednn route takes a transposed batch-first view as it comes (mu = 0:
    nothing copies it first), and a packed batch stays on the lstm_recurrence op (oneDNN
    would run past each sequence's end): outputs, states and gradients as eager."""
    from torch.nn.utils.rnn import pack_sequence

    model = MomentumLSTM(3, 5, num_layers=2, batch_first=True, mu=0.0, step=1.0)
    embed = torch.nn.Embedding(10, 3)  # its output, transposed, is not contiguous
    tokens = torch.randint(0, 10, (2, 7))
    packed = pack_sequence([torch.randn(L, 3) for L in (3, 7, 1, 5)], enforce_sorted=False)

    def loss(inp):
        out, (h_n, c_n) = model(inp() if callable(inp) else inp)
        out = out.data if hasattr(out, "batch_sizes") else out
        return out.square().sum() + h_n.sum() + c_n.square().sum()

    for inp in (lambda: embed(tokens), packed):
        torch._dynamo.reset()
        params = [*model.parameters(), embed.weight]
        want = torch.autograd.grad(loss(inp), params, allow_unused=True)
        got = torch.autograd.grad(torch.compile(loss, fullgraph=True)(inp), params,
                                  allow_unused=True)
        for a, b in zip(got, want):
            if b is not None:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_vmap_of_a_forward_without_autograd():
    """Under function transforms no native route is taken (neither torch.lstm nor the
    onednn op has a batching rule): vmap of the forward gives each sample's output."""
    model = MomentumLSTM(3, 5, mu=0.6, step=0.6)
    xs = torch.randn(4, 6, 2, 3)
    with torch.no_grad():
        got = torch.func.vmap(lambda x: model(x)[0])(xs)
        want = torch.stack([model(x)[0] for x in xs])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_float64_or_mkldnn_off_takes_the_reference_op():
    """oneDNN's LSTM is float32, and PyTorch's switch can turn it off: compiled, such a
    model runs the lstm_recurrence op instead, with eager's result."""
    from torch._inductor.utils import run_and_get_code

    for dtype, enabled in ((torch.float64, True), (torch.float32, False)):
        torch._dynamo.reset()
        model = MomentumLSTM(3, 5, mu=0.6, step=0.6, dtype=dtype)
        x = torch.randn(6, 2, 3, dtype=dtype)
        with contextlib.nullcontext() if enabled else mkldnn_disabled():
            out, code = run_and_get_code(torch.compile(lambda x: model(x)[0], fullgraph=True), x)
        code = "\n".join(code)
        assert "fastunitary.onednn_lstm" not in code and "fastunitary.lstm_recurrence" in code
        torch.testing.assert_close(out, model(x)[0], rtol=1e-5, atol=1e-5)


def test_state_of_another_dtype_is_refused_clearly():
    model = MomentumLSTM(3, 5, mu=0.6)
    h = torch.zeros(1, 2, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="h_0 is torch.float64 but the module's parameters"):
        model(torch.randn(4, 2, 3), (h, h))


def _uneven_batch(lengths, m, dtype):
    """A packed batch of sequences of ``lengths`` (unsorted) with ``m`` features."""
    from torch.nn.utils.rnn import pack_sequence

    return pack_sequence([torch.randn(L, m, dtype=dtype) for L in lengths], enforce_sorted=False)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("packed_input", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_proj_size_equals_torch_lstm_outputs_states_and_gradients(bidirectional, packed_input,
                                                                  backend):
    """``proj_size`` is torch.nn.LSTM's projection (LSTMP): loaded with its state dict
    (``weight_hr_l*`` included), ``MomentumLSTM(mu=0, step=1)`` gives its output, ``h_n``
    (width proj_size), ``c_n`` and every gradient; two layers, a given ``hx``, padded or
    packed input; through torch.lstm ("auto" on the CPU, where packed input with autograd
    takes the op) and through the lstm_recurrence op ("reference"). float64, so the
    tolerance is tight (1e-10 relative)."""
    from .conftest import rel_err

    dtype = torch.float64
    lstm = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=bidirectional, proj_size=2,
                         dtype=dtype)
    model = MomentumLSTM(3, 6, num_layers=2, bidirectional=bidirectional, proj_size=2,
                         mu=0.0, step=1.0, dtype=dtype, backend=backend)
    assert list(model.state_dict()) == list(lstm.state_dict())  # names, in torch's order
    model.load_state_dict(lstm.state_dict())
    B, D = 5, 2 if bidirectional else 1
    x = _uneven_batch([3, 7, 1, 5, 7], 3, dtype) if packed_input else torch.randn(7, B, 3, dtype=dtype)
    hx = (torch.randn(2 * D, B, 2, dtype=dtype), torch.randn(2 * D, B, 6, dtype=dtype))
    results = []
    for module in (lstm, model):
        out, (h_n, c_n) = module(x, hx)
        out = out.data if packed_input else out
        assert out.shape[-1] == 2 * D and h_n.shape == (2 * D, B, 2) and c_n.shape == (2 * D, B, 6)
        torch.manual_seed(0)  # the same output weights for both
        (out * torch.randn_like(out)).sum().add(h_n.square().sum() + c_n.sum()).backward()
        results.append([out, h_n, c_n, *(p.grad for p in module.parameters())])
    names = ["output", "h_n", "c_n", *(name for name, _ in lstm.named_parameters())]
    for name, want, got in zip(names, *results):
        assert rel_err(got, want) < 1e-10, name


def test_proj_size_on_the_triton_kernel_equals_the_reference():
    """The projected layer runs the LSTM kernel on ``W_hh W_hr`` (Triton's interpreter
    without a GPU): output, states and every gradient as the reference backend, within
    the kernel tests' 1e-5 relative tolerance."""
    from .conftest import rel_err

    model = MomentumLSTM(3, 5, num_layers=2, proj_size=3, mu=0.6, step=0.6)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    x = torch.randn(6, 2, 3, device=device)
    hx = (torch.randn(2, 2, 3, device=device), torch.randn(2, 2, 5, device=device))
    results = []
    for backend in ("triton", "reference"):
        model.backend = backend
        model.zero_grad()
        out, (h_n, c_n) = model(x, hx)
        (out.square().sum() + h_n.sum() + c_n.sum()).backward()
        results.append([out, h_n, c_n, *(p.grad for p in model.parameters())])
    for want, got in zip(results[1], results[0]):
        assert rel_err(got, want) < 1e-5


def test_proj_size_initialization_is_a_projector_in_the_first_gate_block():
    """W_hr has orthonormal rows and W_hh's first block is W_hr^T (the others zero, as
    without a projection), so W_hh W_hr is there the orthogonal projector onto a
    p-dimensional subspace."""
    model = MomentumLSTM(3, 6, proj_size=2)
    _, W_hh, _, _ = model.layer_parameters(0)
    W_hr = model.layer_projection(0)
    assert W_hh.shape == (24, 2) and W_hr.shape == (2, 6)
    torch.testing.assert_close(W_hr @ W_hr.T, torch.eye(2), atol=1e-6, rtol=0)
    P, *others = (W_hh @ W_hr).detach().split(6)
    torch.testing.assert_close(P, P.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(P @ P, P, atol=1e-6, rtol=0)
    assert abs(torch.trace(P).item() - 2) < 1e-5
    assert all(not block.any() for block in others)
    assert "proj_size=2" in repr(model)
    assert model.state_size == 2 and model.output_size == 2
    assert MomentumLSTM(3, 6, bidirectional=True, proj_size=2).output_size == 4


def test_proj_size_on_meta_then_reset_equals_a_fresh_module():
    torch.manual_seed(3)
    fresh = MomentumLSTM(3, 6, num_layers=2, proj_size=2)
    reset = MomentumLSTM(3, 6, num_layers=2, proj_size=2, device="meta").to_empty(device="cpu")
    torch.manual_seed(3)
    reset.reset_parameters()
    for (key, got), want in zip(reset.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=key)


def test_projected_eager_calls_leave_pythons_warning_registry_alone(monkeypatch):
    """PyTorch's once-per-process LSTMP warning is muted around the first projected call
    only: muting it on every call reset Python's registry, and a user's warning of the
    "default" action then showed on every step."""
    import warnings

    from fastunitary.nn import momentum_lstm

    monkeypatch.setattr(momentum_lstm, "_projection_warning_seen", True)  # a later call
    model = MomentumLSTM(3, 6, proj_size=2, mu=0.6, step=0.6)
    x = torch.randn(4, 2, 3)

    def training_step():
        warnings.warn("a user's warning", UserWarning)  # one location, once by "default"
        model(x)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        for _ in range(3):
            training_step()
    assert sum("a user's warning" in str(w.message) for w in seen) == 1


def test_a_packed_first_call_does_not_spend_the_projection_warnings_mute():
    """A packed ``torch.lstm`` call (under ``no_grad``; with autograd a packed batch runs the
    ``lstm_recurrence`` op) never gives the LSTMP warning: muting around it spent the
    once-flag, and the next padded call printed the warning. PyTorch warns once per
    process, hence a fresh one."""
    import subprocess
    import sys

    script = """
import warnings, torch
from torch.nn.utils.rnn import pack_sequence
from fastunitary.nn import MomentumLSTM
model = MomentumLSTM(3, 6, proj_size=2, mu=0.6, step=0.6)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    with torch.no_grad():  # the packed form that runs torch.lstm
        model(pack_sequence([torch.randn(4, 3), torch.randn(2, 3)]))
    model(torch.randn(5, 2, 3))
print(sum("oneDNN" in str(w.message) for w in seen))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "0"


def test_nesterov_schedule_counts_steps_past_the_low_precision_integers():
    """bfloat16 holds every integer only to 256: the schedule built in ``g``'s dtype under
    autocast gave every other step past 256 the coefficient 0 (restart 2: 0, 1/4, 0, ...)."""
    exact = nesterov_coefficients(3000, 2, "cpu", torch.float64).flatten()
    for dtype in (torch.bfloat16, torch.float16):
        coef = nesterov_coefficients(3000, 2, "cpu", dtype).flatten()
        assert coef.dtype == torch.float32
        torch.testing.assert_close(coef.double(), exact)


@pytest.mark.parametrize("dtype, scale", [
    (torch.bfloat16, 1.0),  # at 300 bfloat16's rounding of saturated gates moves them apart
    (torch.float16, 1e-4), (torch.float16, 1.0), (torch.float16, 300.0),
])
@pytest.mark.parametrize("make, input_size, hidden", [
    (lambda m, n: MomentumLSTM(m, n, mu=0.6, step=0.6), 40, 8),
    (lambda m, n: AdamLSTM(m, n), 40, 8),
    (lambda m, n: RMSPropLSTM(m, n), 40, 8),
    (lambda m, n: NesterovLSTM(m, n, restart=2, step=0.5), 40, 8),  # gates scanned
    (lambda m, n: NesterovLSTM(m, n, restart=2, step=0.5), 4, 16),  # inputs scanned
], ids=["momentum", "adam", "rmsprop", "nesterov-gates", "nesterov-inputs"])
def test_autocast_output_stays_within_low_precision_rounding(make, input_size, hidden, scale,
                                                              dtype):
    """Under autocast the family differs from float32 by the rounding of its operands
    (at most 0.1 over seeds 0-2 here) at every step. Before: NesterovLSTM 0.39 to 1.0 off
    past step 256 under bfloat16 (its restart schedule counted steps in bfloat16);
    AdamLSTM and RMSPropLSTM 0.86 to 1.6 off under float16 for inputs of 1e-4 (``g * g``
    underflowed to 0) or 300 (overflowed to inf)."""
    torch.manual_seed(0)
    model = make(input_size, hidden).eval()
    x = torch.randn(600, 2, input_size) * scale
    with torch.no_grad():
        expected, _ = model(x)
        with torch.autocast("cpu", dtype=dtype):
            out, _ = model(x.to(dtype) if input_size == 4 else x)  # a low-precision input too
    assert torch.isfinite(out).all()
    assert (out.float() - expected).abs().max() < 0.2
