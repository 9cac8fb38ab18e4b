"""fastunitary.functional.recurrence and fastunitary.reference.recurrence."""

import pytest
import torch

import fastunitary.functional as F
from fastunitary import BackendUnavailableError, reference
from fastunitary.reference import recurrence as ref_rec
from fastunitary.reference.recurrence import ACTIVATIONS

from .conftest import DEVICES, rel_err
from .test_cayley import random_skew

SHAPES = [(1, 1, 1), (1, 3, 4), (5, 1, 3), (17, 4, 7), (33, 2, 16)]


def make_inputs(T, B, n, *, complex_, activation, dtype=torch.float64, with_h0=True, unitary=False):
    cdtype = {torch.float64: torch.complex128, torch.float32: torch.complex64}[dtype]
    kind = cdtype if complex_ else dtype
    u = torch.randn(T, B, n, dtype=kind) * 0.5
    if unitary:
        W = F.cayley(random_skew(n, complex_=complex_)).to(kind)
    else:
        W = torch.randn(n, n, dtype=kind) / n**0.5
    bias = (torch.rand(n, dtype=dtype) - 0.5) * 0.2 if activation == "modrelu" else None
    h0 = torch.randn(B, n, dtype=kind) * 0.5 if with_h0 else None
    return u, W, bias, h0


def grads(fn, inputs, gh):
    live = [t for t in inputs if t is not None]
    for t in live:
        t.requires_grad_()
    h = fn(*inputs)
    out = torch.autograd.grad((h * gh.conj()).real.sum(), live)
    for t in live:
        t.requires_grad_(False)
    return h.detach(), out


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_autograd_oracle_float64(activation, complex_, shape, with_h0, device):
    """Forward and every gradient equal the per-step autograd loop (float64, 1e-10)."""
    inputs = make_inputs(*shape, complex_=complex_, activation=activation, with_h0=with_h0)
    inputs = [None if t is None else t.to(device) for t in inputs]
    gh = torch.randn_like(inputs[0])
    h1, g1 = grads(lambda *a: F.recurrence(*a, activation=activation), inputs, gh)
    h2, g2 = grads(lambda *a: reference.recurrence_autograd(*a, activation=activation), inputs, gh)
    torch.testing.assert_close(h1, h2, rtol=1e-10, atol=1e-10)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_float64_oracle_in_float32(activation, complex_, device):
    """float32 results against the float64 oracle: relative error <= 1e-4 over 64 steps."""
    inputs64 = make_inputs(64, 8, 24, complex_=complex_, activation=activation, unitary=True)
    inputs64 = [None if t is None else t.to(device) for t in inputs64]
    inputs32 = [None if t is None else (t.to(torch.complex64) if t.is_complex() else t.float())
                for t in inputs64]
    gh = torch.randn_like(inputs64[0])
    h1, g1 = grads(lambda *a: F.recurrence(*a, activation=activation), inputs32,
                   gh.to(inputs32[0].dtype))
    h2, g2 = grads(lambda *a: reference.recurrence_autograd(*a, activation=activation),
                   inputs64, gh)
    assert h1.dtype == inputs32[0].dtype
    assert rel_err(h1.to(h2.dtype), h2) < 1e-4
    for a, b in zip(g1, g2):
        assert rel_err(a.to(b.dtype), b) < 1e-4


@pytest.mark.parametrize("complex_", [False, True])
def test_chunked_backward_equals_single_chunk(complex_, monkeypatch):
    inputs = make_inputs(37, 3, 5, complex_=complex_, activation="modrelu")
    gh = torch.randn_like(inputs[0])
    _, whole = grads(F.recurrence, inputs, gh)
    monkeypatch.setattr(ref_rec, "_CHUNK_ELEMENTS", 3 * 10 * 4)  # chunks of 4 steps
    _, chunked = grads(F.recurrence, inputs, gh)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("complex_", [False, True])
def test_backward_reads_expanded_gradients(complex_):
    """h.sum() hands the backward a stride-0 gradient; it must equal a materialized one."""
    u, W, bias, h0 = make_inputs(9, 3, 4, complex_=complex_, activation="modrelu")
    u.requires_grad_()
    W.requires_grad_()
    h = F.recurrence(u, W, bias, h0)
    loss = h.real.sum() if complex_ else h.sum()
    g1 = torch.autograd.grad(loss, (u, W))
    h = F.recurrence(u, W, bias, h0)
    ones = torch.ones_like(h).contiguous()
    g2 = torch.autograd.grad(h, (u, W), ones)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("activation", ["modrelu", "tanh"])
def test_gradcheck_float64(complex_, activation):
    u, W, bias, h0 = make_inputs(4, 2, 3, complex_=complex_, activation=activation)
    args = [t.requires_grad_() for t in (u, W, h0)]
    if bias is not None:
        bias = bias.requires_grad_()

    def f(u, W, h0, *b):
        return F.recurrence(u, W, b[0] if b else None, h0, activation=activation)

    assert torch.autograd.gradcheck(f, (*args, *([bias] if bias is not None else [])))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("T, tol", [(1000, 1e-4), (16384, 1e-3)])
def test_norm_preserved_with_zero_input(complex_, T, tol):
    """x = 0, bias 0: modReLU is the identity and a unitary W keeps |h_t| = |h_0| (float32)."""
    n, B = 16, 4
    W = F.cayley(random_skew(n, complex_=complex_)).to(torch.complex64 if complex_ else torch.float32)
    h0 = torch.randn(B, n, dtype=W.dtype)
    u = torch.zeros(T, B, n, dtype=W.dtype)
    h = F.recurrence(u, W, torch.zeros(n), h0)
    ratio = torch.linalg.vector_norm(h[-1], dim=-1) / torch.linalg.vector_norm(h0, dim=-1)
    assert (ratio - 1).abs().max().item() < tol


def test_low_precision_input_accumulates_in_float32():
    u, W, bias, h0 = make_inputs(6, 2, 4, complex_=False, activation="modrelu", dtype=torch.float32)
    h = F.recurrence(u.bfloat16(), W, bias, h0)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, F.recurrence(u.bfloat16().float(), W, bias, h0))


def test_zero_bias_default_for_modrelu():
    u, W, _, h0 = make_inputs(5, 2, 3, complex_=True, activation="modrelu")
    torch.testing.assert_close(F.recurrence(u, W, None, h0), F.recurrence(u, W, torch.zeros(3, dtype=torch.float64), h0))


def _bad(**over):
    u, W, bias, h0 = make_inputs(4, 2, 3, complex_=False, activation="modrelu", dtype=torch.float32)
    kw = dict(u=u, W=W, bias=bias, h0=h0)
    kw.update(over)
    act = kw.pop("activation", "modrelu")
    return lambda: F.recurrence(kw["u"], kw["W"], kw["bias"], kw["h0"], activation=act)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (_bad(u=torch.zeros(4, 3)), ValueError, r"u must have shape \(\*, \*, \*\) = \(T, B, n\), got \(4, 3\)"),
        (_bad(u=torch.zeros(0, 2, 3)), ValueError, "T, B, n >= 1"),
        (_bad(W=torch.zeros(3, 4)), ValueError, r"W must have shape \(3, 3\) = \(n, n\)"),
        (_bad(W=torch.zeros(3, 3, dtype=torch.complex64)), TypeError, "both real or both complex"),
        (_bad(h0=torch.zeros(3, 3)), ValueError, r"h0 must have shape \(2, 3\) = \(B, n\)"),
        (_bad(h0=torch.zeros(2, 3, dtype=torch.complex64)), TypeError, "h0 is"),
        (_bad(bias=torch.zeros(4)), ValueError, r"bias must have shape \(3,\)"),
        (_bad(activation="tanh"), ValueError, "bias is the modReLU bias"),
        (_bad(activation="gelu", bias=None), ValueError, "activation must be one of"),
        (_bad(u=torch.zeros(4, 2, 3, dtype=torch.int64)), TypeError, "u must be a floating"),
        (_bad(W=torch.zeros(3, 3, device="meta")), ValueError, "W is on meta"),
        (_bad(h0=torch.zeros(2, 3, device="meta")), ValueError, "h0 is on meta"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_triton_backend_not_available_yet():
    u, W, bias, h0 = make_inputs(4, 2, 3, complex_=False, activation="modrelu", dtype=torch.float32)
    with pytest.raises(BackendUnavailableError, match="not available yet.*'recurrence'"):
        F.recurrence(u, W, bias, h0, backend="triton")


def test_dispatch_reaches_kernel_module(fake_kernel, monkeypatch):
    ops = torch.ops.fastunitary
    calls = fake_kernel(
        "recurrence",
        lambda *a: ops.recurrence(*a, "reference"),
        lambda *a: ops.recurrence_backward(*a, "reference"),
    )
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    u, W, bias, h0 = make_inputs(4, 2, 3, complex_=True, activation="modrelu", dtype=torch.float32)
    W.requires_grad_()
    expected = F.recurrence(u, W, bias, h0, backend="reference")
    h = F.recurrence(u, W, bias, h0, backend="triton")
    h.real.sum().backward()
    assert calls == ["forward", "backward"]
    torch.testing.assert_close(h, expected)
