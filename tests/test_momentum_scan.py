"""fastunitary.functional.momentum_scan and its reference (the log-depth scan)."""

import pytest
import torch

import fastunitary.functional as F
from fastunitary import reference


def loop(u, mu, step, v0=None):
    """v_t = mu_t v_{t-1} + step u_t, one step at a time (METHODS.md section 5)."""
    T, B, d = u.shape
    mu = torch.as_tensor(mu, dtype=u.dtype).expand(T, B, d)
    v = torch.zeros(B, d, dtype=u.dtype) if v0 is None else v0
    out = []
    for t in range(T):
        v = mu[t] * v + step * u[t]
        out.append(v)
    return torch.stack(out)


@pytest.mark.parametrize("T", [1, 2, 7, 64, 4097])
def test_scan_equals_loop(T):
    B, d = (2, 3) if T > 100 else (3, 5)
    u = torch.randn(T, B, d, dtype=torch.float64)
    v0 = torch.randn(B, d, dtype=torch.float64)
    torch.testing.assert_close(F.momentum_scan(u, 0.9, 0.3, v0), loop(u, 0.9, 0.3, v0))


@pytest.mark.parametrize("mu_shape", ["float", "()", "(d,)", "(T,1,1)", "(T,B,d)"])
def test_coefficient_shapes_and_gradcheck(mu_shape):
    T, B, d = 6, 2, 3
    u = torch.randn(T, B, d, dtype=torch.float64, requires_grad=True)
    mu = {"float": 0.7, "()": torch.tensor(0.7), "(d,)": torch.rand(d), "(T,1,1)": torch.rand(T, 1, 1),
          "(T,B,d)": torch.rand(T, B, d)}[mu_shape]
    if isinstance(mu, torch.Tensor):
        mu = mu.double().requires_grad_()
    step = torch.rand(d, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(F.momentum_scan(u, mu, step, v0),
                               loop(u, mu.detach() if isinstance(mu, torch.Tensor) else mu, step.detach(), v0))
    args = (u, step, v0) + ((mu,) if isinstance(mu, torch.Tensor) else ())
    assert torch.autograd.gradcheck(lambda u, s, v0, *m: F.momentum_scan(u, m[0] if m else mu, s, v0), args)


def test_backward_is_reverse_scan():
    T, B, d = 9, 2, 3
    a = torch.rand(T, B, d, dtype=torch.float64)
    g = torch.randn(T, B, d, dtype=torch.float64)
    gbar = reference.linear_scan_backward(g, a)
    expected = g.clone()
    for t in range(T - 2, -1, -1):
        expected[t] += a[t + 1] * expected[t + 1]
    torch.testing.assert_close(gbar, expected)


def test_float32_output_for_low_precision_input():
    u = torch.randn(5, 2, 3).to(torch.bfloat16)
    v = F.momentum_scan(u, 0.5, 1.0)
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, loop(u.float(), 0.5, 1.0))


@pytest.mark.slow
def test_compiles_without_graph_breaks():
    torch._dynamo.reset()

    def f(u, mu):
        return F.momentum_scan(u, mu, 0.5).square().sum()

    u, mu = torch.randn(8, 2, 3), torch.tensor(0.8)
    assert torch._dynamo.explain(f)(u, mu).graph_break_count == 0
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(u, mu), f(u, mu))


def test_opcheck():
    a = torch.rand(5, 2, 3)
    b = torch.randn(5, 2, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.fastunitary.momentum_scan, (a, b, None, "reference"))
    torch.library.opcheck(torch.ops.fastunitary.momentum_scan_backward, (b.detach(), a, "reference"))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.momentum_scan(torch.zeros(3, 4), 0.5), ValueError, r"\(T, B, d\)"),
        (lambda: F.momentum_scan(torch.zeros(3, 2, 4, dtype=torch.complex64), 0.5), TypeError, "real"),
        (lambda: F.momentum_scan(torch.zeros(3, 2, 4), torch.zeros(5)), ValueError, "mu"),
        (lambda: F.momentum_scan(torch.zeros(3, 2, 4), 0.5, torch.zeros(3, 1, 1)), ValueError, "step"),
        (lambda: F.momentum_scan(torch.zeros(3, 2, 4), 0.5, v0=torch.zeros(2, 3)), ValueError, "v0"),
        (lambda: F.momentum_scan(torch.zeros(0, 2, 4), 0.5), ValueError, "T, B, d >= 1"),
        (lambda: F.momentum_scan(torch.zeros(3, 2, 4), 0.5, backend="fast"), ValueError, "backend"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
