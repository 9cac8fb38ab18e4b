"""fastunitary.functional.recurrence and fastunitary.reference.recurrence."""

import os

import pytest
import torch

import fastunitary.functional as F
from fastunitary import BackendUnavailableError, reference
from fastunitary.reference import recurrence as ref_rec
from fastunitary.reference.recurrence import ACTIVATIONS

from .conftest import DEVICES, assert_create_graph_keeps_the_gradient, gradgradcheck_each, rel_err
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


@pytest.mark.parametrize("activation", ["modrelu", "tanh"])
@pytest.mark.parametrize("leak", [1.0, 0.3])
def test_opcheck_registered_ops(activation, leak):
    """torch.library.opcheck on both ops, with transposed and expanded (stride-0) inputs,
    and the backward's per-sample weight gradients (3 samples of one row: vmap's rule)."""
    ops = torch.ops.fastunitary
    u, W, bias, h0 = make_inputs(5, 3, 4, complex_=False, activation=activation, dtype=torch.float32)
    for uu, WW in ((u, W), (u.transpose(0, 1).contiguous().transpose(0, 1), W.t()),
                   (u[:, :1].expand(5, 3, 4), W)):
        args = (uu.clone().requires_grad_(), WW.clone().requires_grad_(), bias, h0, activation,
                False, "reference", leak)
        torch.library.opcheck(ops.recurrence, args)
        h = ops.recurrence(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
        gh = torch.ones(1, 1, 1).expand_as(h)  # a stride-0 gradient
        for samples in (1, 3):
            torch.library.opcheck(ops.recurrence_backward, (gh, uu, WW, bias, h0, h, activation,
                                                            False, "reference", leak, samples))


@pytest.mark.parametrize("complex_", [False, True])
def test_backward_under_autocast_is_float32(complex_):
    """A backward run inside an autocast region must not compute in bfloat16."""
    u, W, bias, h0 = make_inputs(8, 3, 5, complex_=complex_, activation="modrelu",
                                 dtype=torch.float32)
    args = [t.requires_grad_() for t in (u, W, bias, h0)]

    def loss():
        h = F.recurrence(*args)
        return (h.real if complex_ else h).square().sum()

    ref = torch.autograd.grad(loss(), args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.autograd.grad(loss(), args)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _bad(**over):
    u, W, bias, h0 = make_inputs(4, 2, 3, complex_=False, activation="modrelu", dtype=torch.float32)
    kw = dict(u=u, W=W, bias=bias, h0=h0)
    kw.update(over)
    act = kw.pop("activation", "modrelu")
    return lambda: F.recurrence(kw["u"], kw["W"], kw["bias"], kw["h0"], activation=act)


def _planes(**overrides):
    """A call of ``recurrence_planes`` (complex state n = 2, planes d = 4, B = 2, modReLU)
    with one argument replaced."""
    kw = dict(u=torch.zeros(3, 2, 4), W=torch.eye(4), bias=torch.zeros(2), h0=torch.zeros(2, 4),
              activation="modrelu")
    kw.update(overrides)
    return lambda: F.recurrence_planes(kw["u"], kw["W"], kw["bias"], kw["h0"],
                                       activation=kw["activation"], is_complex=True,
                                       backend="reference")


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (_bad(u=torch.zeros(4, 3)), ValueError, r"u must have shape \(\*, \*, \*\) = \(T, B, n\), got \(4, 3\)"),
        (_bad(u=torch.zeros(0, 2, 3)), ValueError, r"u must have T >= 1 steps, B >= 1 rows and "
         r"d >= 1 features, got shape \(0, 2, 3\)"),
        (_bad(W=torch.zeros(3, 4)), ValueError, r"W must have shape \(3, 3\) = \(n, n\)"),
        (_bad(W=torch.zeros(3, 3, dtype=torch.complex64)), TypeError, "both real or both complex"),
        (_bad(h0=torch.zeros(3, 3)), ValueError, r"h0 must have shape \(2, 3\) = \(B, n\)"),
        (_bad(h0=torch.zeros(2, 3, dtype=torch.complex64)), TypeError, "h0 is"),
        (_bad(bias=torch.zeros(4)), ValueError, r"bias must have shape \(3,\)"),
        (_bad(activation="tanh"), ValueError, "bias is the modReLU bias"),
        (lambda: F.recurrence_planes(torch.zeros(4, 2, 3), torch.zeros(3, 3), torch.zeros(3), None,
                                     activation="tanh", is_complex=False, backend="reference"),
         ValueError, "bias is the modReLU bias"),
        (lambda: F.recurrence_planes(torch.zeros(4, 3), torch.zeros(3, 3), None, None,
                                     activation="tanh", is_complex=False, backend="reference"),
         ValueError, r"u must have shape \(\*, \*, \*\) = \(T, B, d\)"),
        (lambda: F.recurrence_planes(torch.zeros(4, 2, 3), torch.zeros(3, 3), None, None,
                                     activation="tanh", is_complex=True, backend="reference"),
         ValueError, r"a complex state needs an even d = 2n"),
        (lambda: F.recurrence_planes(torch.zeros(0, 2, 3), torch.zeros(3, 3), None, None,
                                     activation="tanh", is_complex=False, backend="reference"),
         ValueError, "T >= 1 steps"),
        # the planes form checks what the kernel would index without bounds
        (_planes(W=torch.zeros(5, 5)), ValueError, r"W must have shape \(4, 4\) = \(d, d\)"),
        (_planes(W=torch.zeros(1, 1)), ValueError, r"W must have shape \(4, 4\)"),
        (_planes(h0=torch.zeros(1, 4)), ValueError, r"h0 must have shape \(2, 4\) = \(B, d\)"),
        (_planes(bias=torch.zeros(3)), ValueError, r"bias must have shape \(2,\) = \(n,\)"),
        (_planes(activation="gelu"), ValueError, "activation must be one of"),
        (_planes(u=torch.zeros(3, 2, 4, dtype=torch.complex64)), TypeError,
         "u must be a real floating-point tensor"),
        (_planes(W=torch.zeros(4, 4, device="meta")), ValueError, "W is on meta"),
        (_bad(activation="gelu", bias=None), ValueError, "activation must be one of"),
        (_bad(u=torch.zeros(4, 2, 3, dtype=torch.int64)), TypeError, "u must be a floating"),
        (_bad(W=torch.zeros(3, 3, device="meta")), ValueError, "W is on meta"),
        (_bad(h0=torch.zeros(2, 3, device="meta")), ValueError, "h0 is on meta"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("double", ["h0", "bias"])
def test_a_double_h0_or_bias_makes_the_state_double(double):
    """Any float64 input sets float64 accumulation: a float64 h0 was rounded to float32."""
    u, W, bias, h0 = make_inputs(5, 2, 4, complex_=False, activation="modrelu", dtype=torch.float32)
    kw = {"bias": bias, "h0": h0}
    kw[double] = kw[double].double()
    h = F.recurrence(u, W, kw["bias"], kw["h0"], backend="reference")
    assert h.dtype == torch.float64
    exact = reference.recurrence_autograd(u.double(), W.double(), kw["bias"].double(),
                                          kw["h0"].double())
    torch.testing.assert_close(h, exact)


@pytest.mark.parametrize("activation, complex_", [("tanh", False), ("relu", False),
                                                   ("identity", False), ("modrelu", False),
                                                   ("modrelu", True)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_leaky_form_matches_oracle(activation, complex_, with_h0, monkeypatch):
    """h_t = (1 - a) h_{t-1} + a act(W h_{t-1} + u_t): outputs and every gradient against
    the autograd loop (float64, 1e-10), with one chunk and with chunks of one step."""
    u, W, bias, h0 = make_inputs(9, 3, 4, complex_=complex_, activation=activation,
                                 with_h0=with_h0)
    inputs = [t.requires_grad_() for t in (u, W, bias, h0) if t is not None]
    want = reference.recurrence_autograd(u, W, bias, h0, activation, leak=0.3)
    gh = torch.randn_like(want)
    grads_want = torch.autograd.grad((want * gh.conj()).real.sum(), inputs)
    for chunk in (1 << 20, 8):
        monkeypatch.setattr(ref_rec, "_CHUNK_ELEMENTS", chunk)
        got = F.recurrence(u, W, bias, h0, activation=activation, leak=0.3)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        for a, b in zip(torch.autograd.grad((got * gh.conj()).real.sum(), inputs), grads_want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_leaky_gradcheck_and_leak_one_is_plain():
    u, W, _, h0 = make_inputs(6, 2, 3, complex_=False, activation="tanh")
    args = tuple(t.requires_grad_() for t in (u, W, h0))
    assert torch.autograd.gradcheck(
        lambda u, W, h0: F.recurrence(u, W, None, h0, activation="tanh", leak=0.25), args)
    torch.testing.assert_close(F.recurrence(u, W, None, h0, activation="tanh", leak=1.0),
                               F.recurrence(u, W, None, h0, activation="tanh"), rtol=0, atol=0)


def test_leaky_form_has_no_kernel(dispatch_interprets):
    u, W, _, _ = make_inputs(4, 2, 3, complex_=False, activation="tanh", dtype=torch.float32)
    with pytest.raises(BackendUnavailableError, match="leak"):
        F.recurrence(u, W, activation="tanh", leak=0.5, backend="triton")
    for leak in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="leak must be in"):
            F.recurrence(u, W, activation="tanh", leak=leak)


def test_leak_is_a_fixed_float():
    """leak is not differentiated: a tensor that requires grad is refused rather than having
    its gradient dropped, and a string is refused by name. numpy and 0-dim tensors pass."""
    import numpy as np

    u, W, _, _ = make_inputs(4, 2, 3, complex_=False, activation="tanh")
    with pytest.raises(TypeError, match="leak is a fixed float"):
        F.recurrence(u, W, activation="tanh", leak=torch.tensor(0.5, requires_grad=True))
    with pytest.raises(TypeError, match="leak must be a float, got str"):
        F.recurrence(u, W, activation="tanh", leak="0.5")
    expected = F.recurrence(u, W, activation="tanh", leak=0.5)
    for leak in (np.float32(0.5), torch.tensor(0.5)):
        assert torch.equal(F.recurrence(u, W, activation="tanh", leak=leak), expected)


def test_triton_backend_refuses_float64(dispatch_interprets):
    u, W, bias, h0 = make_inputs(4, 2, 3, complex_=False, activation="modrelu")
    with pytest.raises(BackendUnavailableError, match="float32, not float64"):
        F.recurrence(u, W, bias, h0, backend="triton")
    F.recurrence(u, W, bias, h0, backend="auto")  # auto falls back to the reference


def test_dispatch_reaches_kernel_module(fake_kernel, dispatch_interprets):
    ops = torch.ops.fastunitary
    calls = fake_kernel(
        "recurrence",
        lambda *a: ops.recurrence(*a, "reference", 1.0),
        # the kernel's arguments end with samples, the op's with (backend, leak, samples)
        lambda *a: ops.recurrence_backward(*a[:-1], "reference", 1.0, a[-1]),
    )
    u, W, bias, h0 = make_inputs(4, 2, 3, complex_=True, activation="modrelu", dtype=torch.float32)
    W.requires_grad_()
    expected = F.recurrence(u, W, bias, h0, backend="reference")
    h = F.recurrence(u, W, bias, h0, backend="triton")
    h.real.sum().backward()
    assert calls == ["forward", "backward"]
    torch.testing.assert_close(h, expected)


# -- Triton kernels (kernels/recurrence.py) ------------------------------------------------
# Under TRITON_INTERPRET=1 these run the kernels on CPU tensors (CI); with CUDA they run
# compiled. Each compares against the float64 reference on fresh random inputs; stated
# tolerances (relative RMS): 1e-4 for outputs and for gradients.
# The complex modReLU's backward is ill-conditioned at tiny |z|: its transverse factor
# 1 + b / r, r = sqrt(|z|^2 + eps), turns a 1e-7 rounding difference in z at |z| ~ 1e-5
# into a large one in the gradient, so any two float32 computations (the float32
# reference included) differ from float64 there. The real modReLU's bias gradient
# sign(z) g and relu's derivative flip at z = 0 likewise. So the upstream gradient is
# zeroed on the batch rows whose float64 pre-activations ever enter |z| < 1e-4; their
# forward outputs are still compared. The transverse factor amplifies
# rounding elsewhere too when b > 0 (with b up to 0.1 the float32 reference is 3e-4 from
# float64 at T=37, B=16, n=128); so the bias is drawn from the official init range,
# +-0.01, and clamped units (r + b <= 0) get their own test with negative biases, where
# the backward contracts.
OUT_TOL, GRAD_TOL, Z_BAND = 1e-4, 1e-4, 1e-4
KERNEL_DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]


def force_design(monkeypatch, design):
    """Every state size runs ``design`` ("resident" leaves the plan as it is)."""
    from fastunitary.kernels import recurrence as K

    if design != "resident":
        monkeypatch.setattr(K, "RESIDENT_MAX_N", {True: 0, False: 0})
        monkeypatch.setattr(K, "LARGE_N_DESIGN", design)


@pytest.fixture
def kernel_device(request, monkeypatch):
    """Device for kernel tests; NaN-filled kernel outputs so unwritten elements fail."""
    from fastunitary.kernels import recurrence as K

    monkeypatch.setattr(K, "FILL_OUTPUTS_WITH_NAN", True)
    return torch.device(request.param)


def rms_rel(a, b):
    a = a.to(b.dtype)
    if b.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    return (torch.sqrt(((a - b) ** 2).mean()) / torch.sqrt((b**2).mean()).clamp_min(1e-30)).item()


def kernel_vs_reference(T, B, n, *, complex_, activation, device, backend="triton",
                        bias_range=(-0.01, 0.01)):
    """Forward and every gradient of the op (float32) and of the float64 reference."""
    for _ in range(50):  # redraw until some batch row stays out of the band (see above)
        inputs64 = make_inputs(T, B, n, complex_=complex_, activation=activation, unitary=True)
        if activation == "modrelu":
            lo, hi = bias_range
            b64 = lo + (hi - lo) * torch.rand(n, dtype=torch.float64)
            inputs64 = (inputs64[0], inputs64[1], b64, inputs64[3])
        gh64 = torch.randn_like(inputs64[0])
        if activation not in ("modrelu", "relu"):
            break
        u64, W64, _, h064 = inputs64
        h64 = reference.recurrence_autograd(*inputs64, activation=activation)
        z64 = torch.cat([h064[None], h64[:-1]]) @ W64.transpose(-2, -1) + u64
        near = (z64.abs() < Z_BAND) if activation == "modrelu" else (
            (z64.real.abs() < Z_BAND) | (z64.imag.abs() < Z_BAND if complex_ else False))
        bad_rows = near.any(dim=0).any(dim=-1)
        gh64[:, bad_rows] = 0
        if not bad_rows.all():
            break
    else:
        raise AssertionError("no draw kept a batch row out of the ill-conditioned band")
    kind = torch.complex64 if complex_ else torch.float32
    ins = [None if t is None else t.to(device=device, dtype=torch.float32 if not t.is_complex()
                                       else kind) for t in inputs64]
    h_ref, g_ref = grads(lambda *a: reference.recurrence_autograd(*a, activation=activation),
                         list(inputs64), gh64)
    h, g = grads(lambda *a: F.recurrence(*a, activation=activation, backend=backend), ins,
                 gh64.to(device=device, dtype=kind))
    return h, h_ref, g, g_ref


def assert_kernel_close(shape, *, complex_, activation, device, **kw):
    """Outputs, h_n and every gradient of the kernel within the stated tolerances."""
    h, h_ref, g, g_ref = kernel_vs_reference(*shape, complex_=complex_, activation=activation,
                                             device=device, **kw)
    assert h.device.type == device.type
    assert rms_rel(h.cpu(), h_ref) <= OUT_TOL
    assert rms_rel(h[-1].cpu(), h_ref[-1]) <= OUT_TOL  # h_n
    for a, b in zip(g, g_ref):
        assert rms_rel(a.cpu(), b) <= GRAD_TOL


KERNEL_SHAPES = [(T, B, n) for n in (1, 7, 16, 33, 64, 128) for B in (1, 3, 16) for T in (1, 2, 37)]
# several programs (16 batch rows each), partial last tile, at and beyond the resident limits
KERNEL_SHAPES += [(T, B, n) for n in (32, 33, 64, 65) for B in (17, 35) for T in (1, 9)]


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "T%d-B%d-n%d" % s)
def test_kernel_matches_reference_modrelu(kernel_device, complex_, shape):
    """modReLU over the whole grid (resident and streamed designs)."""
    assert_kernel_close(shape, complex_=complex_, activation="modrelu", device=kernel_device)


def zero_prefix_inputs(T, zeros, B, n, dtype, device=None):
    """A real modReLU recurrence whose first ``zeros`` inputs are 0, from h0 = 0 with
    b > 0: every z of the prefix is exactly 0, modReLU's singular point."""
    u, W, _, _ = make_inputs(T, B, n, complex_=False, activation="modrelu", dtype=dtype,
                             unitary=True)
    u[:zeros] = 0
    bias = torch.full((n,), 0.01, dtype=dtype)
    return [t.to(device) for t in (u, W, bias)] + [None]


@pytest.mark.parametrize("device", DEVICES)
def test_real_modrelu_zero_prefix_keeps_gradients_bounded(device):
    """Zero inputs from the zero state (left padding) with b > 0: the real modReLU's
    gradient is 1 at z = 0 (reference/modrelu.py), so the gradient through an orthogonal W
    keeps its size. It was 1e4 a step (NaN in float32 after ten zero steps)."""
    inputs = zero_prefix_inputs(60, 50, 3, 6, torch.float32, device)
    gh = torch.randn_like(inputs[0])
    gh[:50] = 0  # a loss on the late steps only, as a left-padded batch has
    _, g = grads(lambda *a: F.recurrence(*a), inputs, gh)
    _, g_ref = grads(lambda *a: reference.recurrence_autograd(*a), inputs, gh)
    for a, b in zip(g, g_ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the gradient of u at the prefix is W^T carried back: as large as at the first live step
    du = g[0].norm(dim=-1)
    assert du[:50].max() <= 1.01 * du[50].max()


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
def test_kernel_real_modrelu_zero_prefix(kernel_device):
    """The kernel's backward at z = 0 equals the reference's (bounded, see above)."""
    inputs = zero_prefix_inputs(40, 30, 5, 7, torch.float32, kernel_device)
    gh = torch.randn_like(inputs[0])
    _, g = grads(lambda *a: F.recurrence(*a, backend="triton"), inputs, gh)
    _, g_ref = grads(lambda *a: F.recurrence(*a, backend="reference"), inputs, gh)
    for a, b in zip(g, g_ref):
        assert torch.isfinite(a).all() and rms_rel(a.cpu(), b.cpu().double()) <= GRAD_TOL


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("design", ["resident", "split", "streamed"])
def test_kernel_real_modrelu_mask_is_exact_for_tiny_z(kernel_device, design, monkeypatch):
    """The kernel's real modReLU is active where |z| + b >= 0, as the reference
    (test_modrelu.py): its mask from sqrt(z^2 + 1e-12) once flipped the sign of |z| < 1e-6
    units with a slightly negative b. From h0 = 0, step 0's z is u itself."""
    from fastunitary.kernels import recurrence as K

    force_design(monkeypatch, design)
    z = torch.tensor([1e-7, -1e-7, 3e-7, 5e-7, 0.0, 0.0, 0.0, 4e-7], device=kernel_device)
    b = torch.tensor([-4e-7, -4e-7, -4e-7, -4e-7, 0.0, 1e-7, -1e-7, -4e-7], device=kernel_device)
    u = z.expand(1, 3, 8).clone().requires_grad_()
    W = torch.eye(8, device=kernel_device)
    bias = b.clone().requires_grad_()
    h = F.recurrence(u, W, bias, backend="triton")
    gh = torch.randn_like(h)
    gu, gb = torch.autograd.grad(h, (u, bias), gh)
    active = (z.abs() + b >= 0).float()
    assert torch.equal(h.detach(), (torch.sign(z) * torch.relu(z.abs() + b)).expand(1, 3, 8))
    assert torch.equal(gu, gh * active)
    torch.testing.assert_close(gb, (gh * active * torch.sign(z)).sum((0, 1)), rtol=1e-6, atol=0)


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("shape", [(37, 3, 7), (9, 35, 40), (5, 17, 65)],
                         ids=lambda s: "T%d-B%d-n%d" % s)
def test_kernel_modrelu_clamped_units(kernel_device, complex_, shape):
    """Negative biases clamp many units (r + b <= 0): that branch of the backward too."""
    assert_kernel_close(shape, complex_=complex_, activation="modrelu", device=kernel_device,
                        bias_range=(-0.6, -0.3))


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("shape", [(37, 3, 7), (2, 16, 33), (5, 1, 128), (1, 3, 64), (4, 35, 20)],
                         ids=lambda s: "T%d-B%d-n%d" % s)
def test_kernel_matches_reference_other_activations(kernel_device, activation, complex_, shape):
    assert_kernel_close(shape, complex_=complex_, activation=activation, device=kernel_device)


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("scale", [1e-2, 1e-4, 1e-6, 1e-9])
@pytest.mark.parametrize("design", ["resident", "split", "streamed"])
def test_kernel_tanh_small_states(kernel_device, scale, design, monkeypatch):
    """Small pre-activations: the kernel's tanh once computed ``(1 - e) / (1 + e)``, which
    cancels as ``z -> 0`` (relative error 2e-2 at scale 1e-6, and tanh(1e-8) = 0)."""
    from fastunitary.kernels import recurrence as K

    force_design(monkeypatch, design)
    u64, W64, _, h064 = make_inputs(9, 3, 20, complex_=False, activation="tanh", unitary=True)
    u64, h064 = u64 * scale, h064 * scale
    gh64 = torch.randn_like(u64)
    h_ref, g_ref = grads(lambda *a: reference.recurrence_autograd(*a, activation="tanh"),
                         [u64, W64, None, h064], gh64)
    ins = [t.to(device=kernel_device, dtype=torch.float32) for t in (u64, W64)]
    h, g = grads(lambda u, W, h0: F.recurrence(u, W, None, h0, activation="tanh",
                                               backend="triton"),
                 ins + [h064.to(device=kernel_device, dtype=torch.float32)],
                 gh64.to(device=kernel_device, dtype=torch.float32))
    assert rms_rel(h.cpu(), h_ref) <= 1e-6
    for a, b in zip(g, g_ref):
        assert rms_rel(a.cpu(), b) <= 1e-5


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("design", ["split", "streamed"])
def test_large_n_designs_at_small_sizes(kernel_device, complex_, activation, design,
                                        monkeypatch):
    """The large-n designs, forced at sizes that would be resident (partial tiles, B=1,
    T=1; split: 1 to 3 column groups, 1 to 3 batch blocks). Under the interpreter a split
    batch block of one column group runs all its steps in one launch, waiting at its own
    counter each step (n = 5 and 12: one launch per batch block); wider ones run a launch
    per step (test_host.py)."""
    from fastunitary.kernels import recurrence as K

    force_design(monkeypatch, design)
    for shape in [(1, 1, 5), (7, 35, 12), (9, 3, 21), (4, 35, 40)]:
        assert K.plan(shape[2], complex_)["design"] == design
        assert_kernel_close(shape, complex_=complex_, activation=activation, device=kernel_device)


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("sms", ["groups", 1])
def test_split_design_in_batch_chunks_or_steps(kernel_device, complex_, sms, monkeypatch):
    """A launch of the split kernels must hold only programs that run at once (they wait
    for each other). Compiled on a GPU with as many SMs as column groups, the batch blocks
    run in turn, one launch over all steps each; with fewer SMs than column groups, one
    launch per step. (The interpreter, which runs one program at a time, launches these
    several column groups one step at a time whatever the SMs: on the CPU both cases run
    that way; the schedules themselves are tested in test_host.py.)"""
    from fastunitary.kernels import _host
    from fastunitary.kernels import recurrence as K

    n = 40 if complex_ else 70
    groups = -(-n // K.SPLIT_BLOCK_N)
    assert K.plan(n, complex_)["design"] == "split" and groups > 1
    monkeypatch.setattr(_host, "sm_count", lambda index: groups if sms == "groups" else sms)
    for activation in ("modrelu", "tanh"):
        assert_kernel_close((7, 35, n), complex_=complex_, activation=activation,
                            device=kernel_device)


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("complex_", [False, True])
def test_kernel_propagates_nan_like_the_reference(kernel_device, activation, complex_):
    """A NaN in u spreads through W to every later state of its batch row, as on the
    reference; relu's kernel once dropped it (Triton's max ignores NaN), hiding a diverged
    run on the fast backend."""
    u, W, bias, h0 = [None if t is None else t.to(kernel_device) for t in make_inputs(
        4, 3, 5, complex_=complex_, activation=activation, dtype=torch.float32, unitary=True)]
    u = u.clone()
    u[0, 1, 2] = float("nan")
    h_ref = F.recurrence(u, W, bias, h0, activation=activation, backend="reference")
    h = F.recurrence(u, W, bias, h0, activation=activation, backend="triton")
    assert torch.equal(torch.isnan(h), torch.isnan(h_ref))
    assert torch.isnan(h[1:, 1]).all() and not torch.isnan(h[:, [0, 2]]).any()


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
def test_kernel_propagates_a_nan_bias_like_the_reference(kernel_device, complex_):
    """modReLU's relu(r + b) once used tl.maximum too, which dropped a NaN bias; and the
    backward gave the bias gradient 0 where ``r + b`` was NaN, so only ``W``'s gradient
    showed it."""
    u, W, bias, h0 = [t.to(kernel_device) for t in make_inputs(
        4, 3, 5, complex_=complex_, activation="modrelu", dtype=torch.float32, unitary=True)]
    bias = bias.clone()
    bias[2] = float("nan")
    grads = {}
    for backend in ("reference", "triton"):
        leaves = [t.detach().requires_grad_() for t in (u, W, bias, h0)]
        h = F.recurrence(*leaves, backend=backend)
        (torch.view_as_real(h) if h.is_complex() else h).sum().backward()
        grads[backend] = [h.detach()] + [t.grad for t in leaves]
    assert torch.isnan(grads["reference"][0]).any()
    assert torch.isnan(grads["reference"][3]).all()  # every unit's bias sees the NaN state
    for ref, got in zip(grads["reference"], grads["triton"]):
        assert torch.equal(torch.isnan(got), torch.isnan(ref))


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("asked", ["high", "medium"])
def test_kernel_backward_products_in_ieee_float32_under_tf32(kernel_device, asked, monkeypatch):
    """The backward recomputes z = h W^T + u on the host: under TF32 it would differ by ~1e-3
    from the forward's true-float32 z. The products run at "highest", and the process'
    setting comes back after."""
    from fastunitary.kernels import recurrence as K

    seen, launch = [], K.launch
    monkeypatch.setattr(K, "launch", lambda *a, **k: (
        seen.append(torch.get_float32_matmul_precision()), launch(*a, **k))[1])
    u, W, bias, h0 = [t.to(kernel_device).requires_grad_() for t in make_inputs(
        5, 3, 8, complex_=True, activation="modrelu", dtype=torch.float32, unitary=True)]
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(asked)
    try:
        F.recurrence(u, W, bias, h0, backend="triton").abs().sum().backward()
        assert seen == [asked, "highest"]  # forward launch, backward launch
        assert torch.get_float32_matmul_precision() == asked
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
def test_kernel_bfloat16_input(kernel_device):
    """bf16 u is accumulated in float32: within 2e-2 of the float64 reference of the exact input."""
    inputs64 = make_inputs(37, 3, 16, complex_=False, activation="modrelu", unitary=True)
    u64, W64, b64, h064 = inputs64
    h_ref = reference.recurrence_autograd(*inputs64)
    dev = kernel_device
    h = F.recurrence(u64.to(dev, torch.bfloat16), W64.float().to(dev), b64.float().to(dev),
                     h064.float().to(dev), backend="triton")
    assert h.dtype == torch.float32
    assert rms_rel(h.cpu(), h_ref) <= 2e-2


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
def test_kernel_deterministic(kernel_device, complex_):
    u, W, bias, h0 = [None if t is None else t.to(kernel_device) for t in make_inputs(
        11, 20, 40, complex_=complex_, activation="modrelu", dtype=torch.float32)]
    gh = torch.randn_like(u)
    runs = [grads(lambda *a: F.recurrence(*a, backend="triton"), [u, W, bias, h0], gh)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
def test_kernel_norm_preserved_1000_steps(kernel_device, complex_):
    """Zero input, bias 0: the fused kernel keeps |h_T| = |h_0| like the reference (1e-4)."""
    n, B, T = 16, 4, 1000
    kind = torch.complex64 if complex_ else torch.float32
    W = F.cayley(random_skew(n, complex_=complex_)).to(kind).to(kernel_device)
    h0 = torch.randn(B, n, dtype=kind, device=kernel_device)
    h = F.recurrence(torch.zeros(T, B, n, dtype=kind, device=kernel_device), W,
                     torch.zeros(n, device=kernel_device), h0, backend="triton")
    ratio = torch.linalg.vector_norm(h[-1], dim=-1) / torch.linalg.vector_norm(h0, dim=-1)
    assert (ratio - 1).abs().max().item() < 1e-4


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
def test_kernel_expanded_gradient_and_once_differentiable(kernel_device):
    u, W, bias, h0 = [None if t is None else t.to(kernel_device).requires_grad_() for t in
                      make_inputs(5, 3, 6, complex_=True, activation="modrelu", dtype=torch.float32)]
    h = F.recurrence(u, W, bias, h0, backend="triton")
    g1 = torch.autograd.grad(h.real.sum(), (u, W))  # a stride-0 gradient reaches the kernel
    h = F.recurrence(u, W, bias, h0, backend="triton")
    g2 = torch.autograd.grad(h.real, (u, W), torch.ones_like(h.real).contiguous())
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    second = {}
    for backend in ("triton", "reference"):  # a double backward: the same on both
        h = F.recurrence(u, W, bias, h0, backend=backend)
        (gu,) = torch.autograd.grad(h.real.square().sum(), u, create_graph=True)
        second[backend] = torch.autograd.grad(gu.real.square().sum(), W)[0]
    torch.testing.assert_close(second["triton"], second["reference"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
def test_kernel_compiled_matches_eager(kernel_device):
    """torch.compile(fullgraph=True) through the op on the Triton backend: one graph, same result."""
    torch._dynamo.reset()
    u, W, bias, h0 = [None if t is None else t.to(kernel_device) for t in
                      make_inputs(9, 3, 8, complex_=True, activation="modrelu", dtype=torch.float32)]
    W.requires_grad_()

    def f(u, W):
        return torch.view_as_real(F.recurrence(u, W, bias, h0, backend="triton")).square().sum()

    assert torch._dynamo.explain(f)(u, W).graph_break_count == 0
    out_c = torch.compile(f, fullgraph=True)(u, W)
    (g_c,) = torch.autograd.grad(out_c, W)
    out_e = f(u, W)
    (g_e,) = torch.autograd.grad(out_e, W)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_c, g_e, rtol=1e-5, atol=1e-5)


def test_kernel_eps_matches_reference():
    from fastunitary.kernels import recurrence as K
    from fastunitary.reference.modrelu import MODRELU_EPS

    assert K.MODRELU_EPS.value == MODRELU_EPS


def test_plan_depends_on_n_only():
    from fastunitary.kernels import recurrence as K

    assert K.plan(32, True)["design"] == "resident" and K.plan(33, True)["design"] == "split"
    assert K.plan(64, False)["design"] == "resident" and K.plan(65, False)["design"] == "split"
    assert K.plan(1024, True)["design"] == "split"


def _per_sample_backward_case(backend, complex_, leak, device):
    """The backward on 3 samples of 2 rows stacked sample-major (planes layout), once told
    ``samples=3`` and once per sample: ``(joint, separate, rows of each sample)``."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    S, B, T, n = 3, 2, 7, 4
    d = 2 * n if complex_ else n
    u, h0 = torch.randn(T, S * B, d, dtype=dtype) * 0.5, torch.randn(S * B, d, dtype=dtype)
    W, bias = torch.randn(d, d, dtype=dtype) / d**0.5, torch.randn(n, dtype=dtype) * 0.2
    u, W, bias, h0 = (t.to(device) for t in (u, W, bias, h0))
    if backend == "reference":
        backward = reference.recurrence_backward
    else:
        from fastunitary.kernels import recurrence as K

        def backward(*args, samples=1):  # the kernel runs the plain form: no leak argument
            return K.backward(*args[:-1], samples=samples)

    h = reference.recurrence_forward(u, W, bias, h0, "modrelu", complex_, leak)
    gh = torch.randn_like(h)
    joint = backward(gh, u, W, bias, h0, h, "modrelu", complex_, leak, samples=S)
    rows = [slice(s * B, (s + 1) * B) for s in range(S)]
    separate = [backward(gh[:, r], u[:, r], W, bias, h0[r], h[:, r], "modrelu", complex_, leak)
                for r in rows]
    return joint, separate, rows


@pytest.mark.parametrize("chunk", [1 << 20, 2 * 6 * 8])
@pytest.mark.parametrize("complex_", [False, True])
def test_backward_sums_weight_gradients_per_sample(complex_, chunk, monkeypatch):
    """``samples=S`` (vmap's rule): grad_W and grad_bias per sample equal each sample's own
    backward; the rest is the backward of the whole batch. Chunked too (3 steps a chunk)."""
    monkeypatch.setattr(ref_rec, "_CHUNK_ELEMENTS", chunk)
    (gu, gW, gb, gh0), separate, rows = _per_sample_backward_case("reference", complex_, 0.6,
                                                                  "cpu")
    assert gW.shape[0] == gb.shape[0] == 3
    for s, (r, (su, sW, sb, sh0)) in enumerate(zip(rows, separate)):
        for got, want in ((gu[:, r], su), (gW[s], sW), (gb[s], sb), (gh0[r], sh0)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [1 << 20, 2 * 6 * 8])
@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
def test_kernel_backward_sums_weight_gradients_per_sample(kernel_device, complex_, chunk,
                                                          monkeypatch):
    """As above on the kernel, whose bias partial sums run over blocks of rows: the
    per-sample gradients are rebuilt from grad_u over chunks of steps (float32)."""
    from fastunitary.reference import _samples

    monkeypatch.setattr(ref_rec, "_CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(_samples, "CHUNK_ELEMENTS", chunk)
    (gu, gW, gb, gh0), separate, rows = _per_sample_backward_case("triton", complex_, 1.0,
                                                                  kernel_device)
    for s, (r, (su, sW, sb, sh0)) in enumerate(zip(rows, separate)):
        for got, want in ((gu[:, r], su), (gW[s], sW), (gb[s], sb), (gh0[r], sh0)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("leak", [1.0, 0.3])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_form_equals_the_forward(activation, complex_, leak, with_h0):
    """``recurrence_hop`` (export's form: one scan, a complex state as two planes) gives
    ``recurrence_forward``'s states (float64, 1e-12)."""
    T, B, n = 9, 3, 5
    d = 2 * n if complex_ else n
    u, W = torch.randn(T, B, d, dtype=torch.float64), torch.randn(d, d, dtype=torch.float64) / d**0.5
    bias = torch.randn(n, dtype=torch.float64) * 0.2 if activation == "modrelu" else None
    h0 = torch.randn(B, d, dtype=torch.float64) if with_h0 else None
    args = (u, W, bias, h0, activation, complex_, leak)
    torch.testing.assert_close(reference.recurrence_hop(*args),
                               reference.recurrence_forward(*args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("leak", [1.0, 0.4])
def test_double_backward_gradgradcheck(activation, complex_, leak):
    """Second derivatives (a gradient differentiated again: input-gradient penalties,
    Hessian-vector products) by finite differences of the gradient, float64, every input
    (``u`` not saved for tanh, relu and identity at leak 1: the closed form off the states)."""
    T, B, n = 4, 2, 3
    d = 2 * n if complex_ else n
    u = torch.randn(T, B, d, dtype=torch.float64, requires_grad=True)
    W = (torch.randn(d, d, dtype=torch.float64) / d**0.5).requires_grad_()
    h0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    bias = ((torch.rand(n, dtype=torch.float64) - 0.5) * 0.2).requires_grad_() \
        if activation == "modrelu" else None
    inputs = [t for t in (u, W, bias, h0) if t is not None]

    def fn(*args):
        args = list(args)
        b = args.pop(2) if bias is not None else None
        return F.recurrence_planes(args[0], args[1], b, args[2], activation=activation,
                                   is_complex=complex_, backend="reference", leak=leak)

    assert gradgradcheck_each(fn, inputs)


@pytest.mark.parametrize("activation, leak", [("modrelu", 1.0), ("tanh", 0.5), ("tanh", 1.0)])
@pytest.mark.parametrize("autocast", [False, True])
def test_create_graph_keeps_the_first_derivative(activation, leak, autocast):
    """The double-backward path's gradient is the fused one: with an ``h0`` computed from
    ``u`` (inputs that depend on each other: autograd's total derivative would count the
    shared path twice), and under bfloat16 autocast (float32; neither path lets it in)."""
    dtype = torch.float32 if autocast else torch.float64
    u = torch.randn(6, 3, 4, dtype=dtype, requires_grad=True)
    W = (torch.randn(4, 4, dtype=dtype) * 0.5).requires_grad_()
    loss = lambda: F.recurrence(u, W, h0=u.mean(0), activation=activation,  # noqa: E731
                                leak=leak).square().sum()
    tol = dict(rtol=1e-5, atol=1e-6) if autocast else {}
    assert_create_graph_keeps_the_gradient(loss, [u, W], autocast=autocast, **tol)
