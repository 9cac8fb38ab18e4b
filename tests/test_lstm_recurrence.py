"""fastunitary.functional.lstm_recurrence and its reference (closed-form backward)."""

import pytest
import torch

import fastunitary.functional as F
from fastunitary import reference


def inputs(T, B, n, dtype=torch.float64, states=True):
    g = torch.randn(T, B, 4 * n, dtype=dtype, requires_grad=True)
    W = (torch.randn(4 * n, n, dtype=dtype) / n**0.5).requires_grad_()
    h0 = torch.randn(B, n, dtype=dtype, requires_grad=True) if states else None
    c0 = torch.randn(B, n, dtype=dtype, requires_grad=True) if states else None
    return g, W, h0, c0


@pytest.mark.parametrize("T, B, n", [(1, 1, 1), (7, 3, 5), (20, 2, 8)])
@pytest.mark.parametrize("states", [True, False])
def test_matches_autograd_oracle(T, B, n, states):
    args = inputs(T, B, n, states=states)
    h, c = F.lstm_recurrence(*args, backend="reference")
    h_ref, c_ref = reference.lstm_autograd(*args)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    wrt = [a for a in args if a is not None]
    got = torch.autograd.grad((h * gh).sum() + (c * gc).sum(), wrt)
    want = torch.autograd.grad((h_ref * gh).sum() + (c_ref * gc).sum(), wrt)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y)


def test_gradcheck_float64():
    args = inputs(5, 2, 3)
    assert torch.autograd.gradcheck(lambda *a: F.lstm_recurrence(*a), args)
    # only h used: c's gradient arrives as None
    assert torch.autograd.gradcheck(lambda *a: F.lstm_recurrence(*a)[0], args)


def test_equals_torch_lstm():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 6)
    x = torch.randn(9, 3, 4)
    g = x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + lstm.bias_hh_l0
    h, c = F.lstm_recurrence(g, lstm.weight_hh_l0)
    out, (h_n, c_n) = lstm(x)
    torch.testing.assert_close(h, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c[-1], c_n[0], rtol=1e-5, atol=1e-6)


def test_expanded_gradient():
    g, W, h0, c0 = inputs(4, 2, 3)
    h, c = F.lstm_recurrence(g, W, h0, c0)
    (a,) = torch.autograd.grad(h.sum(), g)  # grad of h is a stride-0 expansion
    (b,) = torch.autograd.grad(reference.lstm_autograd(g, W, h0, c0)[0].sum(), g)
    torch.testing.assert_close(a, b)


def test_opcheck():
    g, W, h0, c0 = (t.detach().float() for t in inputs(3, 2, 2))
    torch.library.opcheck(torch.ops.fastunitary.lstm_recurrence, (g, W, h0, c0, "reference"))


@pytest.mark.slow
def test_compiles_without_graph_breaks():
    torch._dynamo.reset()

    def f(g, W):
        h, c = F.lstm_recurrence(g, W)
        return h.sum() + c.square().sum()

    g, W, _, _ = (t.detach().float() if t is not None else None for t in inputs(6, 2, 3))
    assert torch._dynamo.explain(f)(g, W).graph_break_count == 0
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(g, W), f(g, W))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 6), torch.zeros(6, 1)), ValueError, r"4n"),
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8), torch.zeros(8, 3)), ValueError, "W_hh"),
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8), torch.zeros(8, 2), h0=torch.zeros(3, 2)),
         ValueError, "h0"),
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8, dtype=torch.int32), torch.zeros(8, 2)),
         TypeError, "floating"),
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8), torch.zeros(8, 2), backend="cuda"),
         ValueError, "backend"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
