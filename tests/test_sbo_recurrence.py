"""fastunitary.functional.sbo_recurrence and its reference (METHODS.md section 6)."""

import pytest
import torch

from fastunitary._backend import BackendUnavailableError
from fastunitary.functional import sbo_recurrence
from fastunitary.reference import sbo_autograd, sbo_backward, sbo_forward

from .conftest import DEVICES, rel_err

METHODS = ["gd", "heavy_ball", "nesterov"]


def _inputs(T, B, n, dtype=torch.float64, device="cpu", state=False, method="gd"):
    u = torch.randn(T, B, n, dtype=dtype, device=device, requires_grad=True)
    # Near the official initialization (I + small), plus enough spread for D to vary.
    W = (torch.eye(n, dtype=dtype) + 0.3 * torch.randn(n, n, dtype=dtype)).to(device)
    W.requires_grad_()
    h0 = torch.randn(B, n, dtype=dtype, device=device, requires_grad=True) if state else None
    m0 = (torch.randn(B, n, dtype=dtype, device=device, requires_grad=True)
          if state and method != "gd" else None)
    mu = torch.tensor(0.6, dtype=dtype, device=device, requires_grad=True)
    return u, W, h0, m0, mu


def test_step_is_the_gradient_of_the_lower_level_objective():
    """One GD iteration from h with eta moves by -eta * grad f, f written out by hand."""
    u, W, h0, _, _ = _inputs(1, 3, 5, state=True)
    h, _ = sbo_recurrence(u.detach(), W.detach(), h0.detach(), method="gd", eta=0.1)
    hv = h0.detach().clone().requires_grad_()
    f = 0.5 * (hv - torch.relu(hv @ W.detach().T + u.detach()[0])).pow(2).sum()
    f.backward()
    torch.testing.assert_close(h[0], h0.detach() - 0.1 * hv.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("state", [False, True])
def test_op_matches_per_step_loop_and_its_gradients(method, steps, state):
    """Outputs and every gradient against the autograd loop (float64, to 1e-10)."""
    u, W, h0, m0, mu = _inputs(7, 3, 5, state=state, method=method)
    want, m_want = sbo_autograd(u, W, h0, m0, mu, 0.3, steps, method)
    got, m_got = sbo_recurrence(u, W, h0, m0, method=method, eta=0.3,
                                mu=None if method == "gd" else mu, steps=steps,
                                backend="reference")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    gh = torch.randn_like(want)
    loss_w = (want * gh).sum()
    loss_g = (got * gh).sum()
    if method != "gd":
        gm = torch.randn_like(m_want)
        torch.testing.assert_close(m_got, m_want, rtol=1e-10, atol=1e-10)
        loss_w, loss_g = loss_w + (m_want * gm).sum(), loss_g + (m_got * gm).sum()
    inputs = [t for t in (u, W, h0, m0, None if method == "gd" else mu) if t is not None]
    for a, b in zip(torch.autograd.grad(loss_g, inputs), torch.autograd.grad(loss_w, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_nesterov_default_lookahead_is_h0():
    """Without m0, Nesterov's first look-ahead point is h0 (no kick), and the gradient to
    h0 includes that path."""
    u, W, h0, _, mu = _inputs(4, 2, 3, state=True)
    a, _ = sbo_recurrence(u, W, h0, method="nesterov", eta=0.2, mu=mu)
    # the first step by hand: y = h0 - eta g(h0), h1 = y + mu (y - h0)
    h, Wd, u0 = h0.detach(), W.detach(), u.detach()[0]
    z = h @ Wd.T + u0
    r = h - torch.relu(z)
    y = h - 0.2 * (r - (r * (z > 0)) @ Wd)
    torch.testing.assert_close(a[0].detach(), y + mu.detach() * (y - h), rtol=1e-12, atol=1e-12)
    b, _ = sbo_recurrence(u, W, h0, h0, method="nesterov", eta=0.2, mu=mu)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.autograd.gradcheck(
        lambda h0: sbo_recurrence(u.detach(), W.detach(), h0, method="nesterov", eta=0.2,
                                  mu=0.6)[0], (h0,))


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(method):
    u, W, h0, m0, mu = _inputs(5, 2, 4, state=True, method=method)
    args = [t for t in (u, W, h0, m0) if t is not None]

    def f(*a):
        return sbo_recurrence(*a, method=method, eta=0.25, mu=None if method == "gd" else mu,
                              steps=2)[0]

    assert torch.autograd.gradcheck(f, tuple(args))


@pytest.mark.parametrize("method", METHODS)
def test_backward_chunks_equal_one_chunk(method, monkeypatch):
    """The weight gradient is formed per chunk of iterations: chunk boundaries change nothing."""
    from fastunitary.reference import sbo_recurrence as mod

    u, W, h0, m0, mu = _inputs(9, 2, 3, state=True, method=method)
    with torch.no_grad():
        hs, ms = sbo_forward(u, W, h0, m0, mu, 0.2, 2, method)
        g = torch.randn_like(hs), torch.randn_like(ms)
        whole = sbo_backward(*g, u, W, h0, m0, mu, hs, ms, 0.2, 2, method)
        for elements in (7, 13):  # chunks of 1 and 2 iterations
            monkeypatch.setattr(mod, "_CHUNK_ELEMENTS", elements)
            chunked = sbo_backward(*g, u, W, h0, m0, mu, hs, ms, 0.2, 2, method)
            for a, b in zip(chunked, whole):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["heavy_ball", "nesterov"])
def test_momentum_state_without_h0(method):
    """m0 given, h0 zeros by default: gradients to m0 and the rest against the loop."""
    u, W, _, _, mu = _inputs(5, 2, 3)
    m0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    got, _ = sbo_recurrence(u, W, None, m0, method=method, eta=0.3, mu=mu)
    want, _ = sbo_autograd(u, W, None, m0, mu, 0.3, 1, method)
    for a, b in zip(torch.autograd.grad(got.sum(), (u, W, m0, mu)),
                    torch.autograd.grad(want.sum(), (u, W, m0, mu))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_opcheck_registered_ops(method):
    """torch.library.opcheck on both ops, with a transposed W, a stride-0 cotangent, and
    per-sample weight gradients."""
    ops = torch.ops.fastunitary
    u, W, h0, m0, mu = (None if t is None else t.detach().float()
                        for t in _inputs(4, 3, 5, state=True, method=method))
    for WW in (W, W.t().contiguous().t()):
        args = (u.clone().requires_grad_(), WW.clone().requires_grad_(), h0, m0, mu, 0.2, 2,
                method)
        torch.library.opcheck(ops.sbo_recurrence, args)
        hs, ms = ops.sbo_recurrence(*[a.detach() if isinstance(a, torch.Tensor) else a
                                      for a in args])
        ghs = torch.ones(1, 1, 1).expand_as(hs)
        for samples in (1, 3):  # 3: per-sample gradients of W and mu (vmap's rule)
            torch.library.opcheck(ops.sbo_recurrence_backward,
                                  (ghs, torch.zeros_like(ms), u, WW, h0, m0, mu, hs, ms, 0.2,
                                   2, method, samples))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_and_autocast(device):
    u, W, _, _, _ = _inputs(6, 4, 8, dtype=torch.float32, device=device)
    want, _ = sbo_autograd(u.double(), W.double(), method="heavy_ball", mu=0.5, eta=0.1)
    got, _ = sbo_recurrence(u, W, method="heavy_ball", mu=0.5, eta=0.1)
    assert got.dtype == torch.float32 and rel_err(got, want.float()) < 1e-5
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        low, _ = sbo_recurrence(u.bfloat16(), W, method="heavy_ball", mu=0.5, eta=0.1)
    assert low.dtype == torch.float32 and rel_err(low, want.float()) < 2e-2


def test_gradient_with_stride0_cotangent():
    u, W, _, _, _ = _inputs(5, 2, 3, dtype=torch.float32)
    h, _ = sbo_recurrence(u, W, method="gd", eta=0.2)
    gu, gW = torch.autograd.grad(h.sum(), (u, W))  # the cotangent is expanded with stride 0
    hh, _ = sbo_autograd(u, W, eta=0.2)
    wu, wW = torch.autograd.grad(hh.sum(), (u, W))
    torch.testing.assert_close(gu, wu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gW, wW, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fullgraph_compile_equals_eager():
    torch._dynamo.reset()
    u, W, _, _, _ = _inputs(6, 2, 4, dtype=torch.float32)
    mu = torch.tensor(0.5, requires_grad=True)

    def f(u, W, mu):
        return sbo_recurrence(u, W, method="nesterov", eta=0.1, mu=mu, steps=2)[0].square().sum()

    assert torch._dynamo.explain(f)(u, W, mu).graph_break_count == 0
    compiled = torch.compile(f, fullgraph=True)
    got, want = compiled(u, W, mu), f(u, W, mu)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(got, (u, W, mu)), torch.autograd.grad(want, (u, W, mu))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gd", "heavy_ball"])
def test_dynamic_compile_with_a_float_mu_equals_eager(method):
    """A float ``mu`` is symbolic under ``dynamic=True``: ``math.isfinite`` on it raised
    Unsupported (even for "gd", whose default mu was 0.5)."""
    torch._dynamo.reset()
    kw = {} if method == "gd" else {"mu": 0.7}

    def f(u, W):
        return sbo_recurrence(u, W, method=method, eta=0.1, **kw)[0]

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for T, B in ((5, 2), (7, 3)):
        u, W, _, _, _ = _inputs(T, B, 4, dtype=torch.float32)
        torch.testing.assert_close(compiled(u, W), f(u, W), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="adam"),
         ValueError, "method"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), steps=0), ValueError, "steps"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), eta=0.0), ValueError, "eta"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), eta=float("inf")),
         ValueError, "eta must be > 0 and finite"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="heavy_ball",
                                mu=torch.tensor(0.5 + 0.1j)), TypeError, "mu must be a real"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="heavy_ball",
                                mu=torch.tensor(0.5, device="meta")), ValueError, "mu is on meta"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 3)), ValueError, "W"),
        (lambda: sbo_recurrence(torch.zeros(2, 4), torch.zeros(4, 4)), ValueError, "u"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), torch.zeros(3, 4)),
         ValueError, "h0"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), None, torch.zeros(2, 4)),
         ValueError, "m0"),
        # gd has no momentum: a given mu was silently ignored (its gradient 0)
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="gd", mu=0.9),
         ValueError, "mu is the momentum methods' coefficient; method='gd' has none"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="heavy_ball",
                                mu=float("nan")), ValueError, "mu must be finite"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="heavy_ball",
                                mu=torch.zeros(2)), ValueError, "mu"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4, dtype=torch.complex64), torch.zeros(4, 4)),
         TypeError, "u"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), backend="triton"),
         BackendUnavailableError, "act\\(W h \\+ u\\)"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), backend="cuda"),
         ValueError, "backend"),
        # eta is fixed: a tensor that requires grad would lose its gradient silently
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4),
                                eta=torch.tensor(0.1, requires_grad=True)),
         TypeError, "eta is a fixed float"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), eta="0.1"),
         TypeError, "eta must be a float, got str"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="heavy_ball",
                                mu="0.5"), TypeError, "mu must be a float, got str"),
        (lambda: sbo_recurrence(torch.zeros(3, 2, 4), torch.zeros(4, 4), method="heavy_ball",
                                mu=float("nan")), ValueError, "mu must be finite"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("method", ["gd", "heavy_ball", "nesterov"])
def test_float_mu_does_not_follow_the_default_dtype(method):
    """A float mu became a tensor of the default dtype: under set_default_dtype(float64)
    float32 inputs came back float64 (also for "gd", which has no mu)."""
    u, W = torch.randn(4, 2, 3), torch.randn(3, 3) / 3
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        h, m = sbo_recurrence(u, W, method=method, mu=None if method == "gd" else 0.5)
    finally:
        torch.set_default_dtype(previous)
    assert h.dtype == torch.float32 and (m is None or m.dtype == torch.float32)


@pytest.mark.parametrize("double", ["h0", "m0", "mu"])
def test_any_double_input_makes_the_state_double(double):
    """A float64 h0, m0 or mu was rounded to float32, as recurrence's h0 once was."""
    u, W = torch.randn(4, 2, 3), torch.randn(3, 3) * 0.3
    kw = {"h0": torch.randn(2, 3), "m0": torch.randn(2, 3), "mu": torch.tensor(0.5)}
    kw[double] = kw[double].double()
    h, m = sbo_recurrence(u, W, kw["h0"], kw["m0"], method="heavy_ball", mu=kw["mu"])
    assert h.dtype == m.dtype == torch.float64
    h64, _ = sbo_recurrence(u.double(), W.double(), kw["h0"].double(), kw["m0"].double(),
                            method="heavy_ball", mu=kw["mu"].double())
    torch.testing.assert_close(h, h64)


@pytest.mark.parametrize("method", ["gd", "heavy_ball", "nesterov"])
@pytest.mark.parametrize("with_state", [False, True])
def test_scan_form_equals_the_forward(method, with_state):
    """``sbo_hop`` (export's form: one scan over time, the inner steps unrolled) gives
    ``sbo_forward``'s states after every iteration (float64, 1e-12)."""
    from fastunitary.reference import sbo_hop

    T, B, n, steps = 6, 3, 5, 3
    u = torch.randn(T, B, n, dtype=torch.float64)
    W = torch.randn(n, n, dtype=torch.float64) / n**0.5
    h0 = torch.randn(B, n, dtype=torch.float64) if with_state else None
    m0 = torch.randn(B, n, dtype=torch.float64) if with_state and method != "gd" else None
    args = (u, W, h0, m0, torch.tensor(0.6, dtype=torch.float64), 0.3, steps, method)
    for got, want in zip(sbo_hop(*args), sbo_forward(*args)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["gd", "heavy_ball", "nesterov"])
def test_double_backward_gradgradcheck(method):
    """Second derivatives in u, W, h0, m0 and mu through both outputs, by finite
    differences of the gradient (float64)."""
    from .conftest import gradgradcheck_each

    T, B, n = 3, 2, 3
    f64 = dict(dtype=torch.float64, requires_grad=True)
    u, h0 = torch.randn(T, B, n, **f64), torch.randn(B, n, **f64)
    W = (torch.randn(n, n, dtype=torch.float64) / n**0.5).requires_grad_()
    mu = torch.tensor(0.6, **f64)
    if method == "gd":
        inputs, fn = (u, W, h0), lambda u, W, h0: sbo_recurrence(u, W, h0, eta=0.3, steps=2)[0]
    else:
        m0 = torch.randn(B, n, **f64)
        inputs = (u, W, h0, m0, mu)
        fn = lambda u, W, h0, m0, mu: sbo_recurrence(  # noqa: E731
            u, W, h0, m0, mu=mu, eta=0.3, steps=2, method=method)
    assert gradgradcheck_each(fn, list(inputs))


@pytest.mark.parametrize("method", ["heavy_ball", "nesterov"])
def test_create_graph_keeps_the_first_derivative(method):
    """The double-backward path's gradient is the fused one, with ``m0`` the same tensor as
    ``h0`` (aliased inputs)."""
    from .conftest import assert_create_graph_keeps_the_gradient

    u = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    W = (torch.randn(3, 3, dtype=torch.float64) * 0.5).requires_grad_()
    state = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    loss = lambda: sbo_recurrence(u, W, state, state, method=method, eta=0.3,  # noqa: E731
                                  mu=0.6, steps=2)[0].square().sum()
    assert_create_graph_keeps_the_gradient(loss, [u, W, state])
