"""fastunitary.functional.cayley and fastunitary.reference.cayley."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastunitary.functional as F
from fastunitary import BackendUnavailableError, reference
from fastunitary.reference.cayley import cayley_backward

from .conftest import DEVICES


def random_skew(n, *, complex_=False, scale=1.0, batch=(), dtype=None):
    dtype = dtype or (torch.complex128 if complex_ else torch.float64)
    X = torch.randn(*batch, n, n, dtype=dtype)
    A = X - X.mH
    if n > 1 and scale is not None:
        A = A / torch.linalg.matrix_norm(A, 2, keepdim=True).clamp_min(1e-30) * scale
    return A


def random_d(n, *, complex_, batch=(), dtype=torch.float64):
    if complex_:
        return torch.polar(torch.ones(*batch, n, dtype=dtype), torch.rand(*batch, n, dtype=dtype) * 2 * math.pi)
    return torch.where(torch.rand(*batch, n) < 0.5, -1.0, 1.0).to(dtype)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 129])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("device", DEVICES)
def test_unitary_float32_any_norm(complex_, n, scale, device):
    """W^H W = I to 1e-5 in float32 even when I + A is ill-conditioned (||A|| = 1e3)."""
    A = random_skew(n, complex_=complex_, scale=scale, batch=(3,)).to(
        device=device, dtype=torch.complex64 if complex_ else torch.float32)
    d = random_d(n, complex_=complex_, batch=(3,)).to(A)
    W = F.cayley(A, d)
    assert W.dtype == A.dtype and W.shape == (3, n, n) and W.device == A.device
    W = W.cpu().to(torch.complex128 if complex_ else torch.float64)  # measure exactly
    err = (W.mH @ W - torch.eye(n, dtype=W.dtype)).abs().max().item()
    assert err < 1e-5


@pytest.mark.parametrize("complex_", [False, True])
def test_matches_definition(complex_):
    n = 9
    A = random_skew(n, complex_=complex_)
    d = random_d(n, complex_=complex_)
    eye = torch.eye(n, dtype=A.dtype)
    expected = torch.linalg.inv(eye + A) @ (eye - A) @ torch.diag(d.to(A.dtype))
    torch.testing.assert_close(F.cayley(A, d), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F.cayley(A), torch.linalg.inv(eye + A) @ (eye - A))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("n", [1, 2, 5, 16, 33])
@pytest.mark.parametrize("with_d", [False, True])
def test_closed_form_gradient_matches_autograd(complex_, n, with_d):
    """The closed-form backward equals autograd through torch.linalg.solve (float64)."""
    A = random_skew(n, complex_=complex_, batch=(2,)).requires_grad_()
    d = random_d(n, complex_=complex_, batch=(2,)).to(A.dtype).requires_grad_() if with_d else None
    G = torch.randn(2, n, n, dtype=A.dtype)
    inputs = [A] + ([d] if with_d else [])
    ours = torch.autograd.grad((F.cayley(A, d) * G.conj()).real.sum(), inputs)
    oracle = torch.autograd.grad((reference.cayley_autograd(A, d) * G.conj()).real.sum(), inputs)
    for a, b in zip(ours, oracle):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_theta_gradient_closed_form():
    """grad theta = -Im diag(G^H W) for D = diag(exp(i theta)) (METHODS.md section 1)."""
    n = 6
    A = random_skew(n, complex_=True)
    theta = (torch.rand(n, dtype=torch.float64) * 2 * math.pi).requires_grad_()
    G = torch.randn(n, n, dtype=torch.complex128)
    W = F.cayley(A, torch.polar(torch.ones_like(theta), theta))
    (grad,) = torch.autograd.grad((W * G.conj()).real.sum(), theta)
    expected = -torch.diagonal(G.mH @ W.detach()).imag
    torch.testing.assert_close(grad, expected)


def test_skew_gradient_is_published_scornn_update():
    """For A = X - X^T, grad of the upper entries is V^T - V, V = (I + A)^-T G (D + W^T)."""
    n = 7
    A0 = random_skew(n)
    d = random_d(n, complex_=False)
    X = torch.triu(A0, 1).requires_grad_()
    W = F.cayley(X - X.t(), d)
    G = torch.randn(n, n, dtype=torch.float64)
    (gX,) = torch.autograd.grad((W * G).sum(), X)
    eye = torch.eye(n, dtype=torch.float64)
    V = torch.linalg.solve((eye + A0).t(), G @ (torch.diag(d) + W.detach().t()))
    torch.testing.assert_close(torch.triu(gX, 1), torch.triu(V.t() - V, 1))


@pytest.mark.parametrize("complex_", [False, True])
def test_gradcheck_float64(complex_):
    A = random_skew(4, complex_=complex_).requires_grad_()
    d = random_d(4, complex_=complex_).to(A.dtype).requires_grad_()
    assert torch.autograd.gradcheck(lambda A, d: F.cayley(A, d), (A, d))
    assert torch.autograd.gradcheck(lambda A: F.cayley(A), (A,))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("batch", [(), (2,)], ids=["single", "batched"])
def test_double_backward_gradgradcheck(complex_, batch):
    """Second derivatives in A and d (a gradient in A differentiated again: Hessian-vector
    products, MAML), by finite differences of the gradient (float64); the create_graph
    path's first derivative is the closed form's. Batched: ENRNN's and a stacked model's
    matrices go through one call."""
    from .conftest import assert_create_graph_keeps_the_gradient, gradgradcheck_each

    A = random_skew(4, complex_=complex_, batch=batch).requires_grad_()
    d = random_d(4, complex_=complex_, batch=batch).to(A.dtype).requires_grad_()
    assert gradgradcheck_each(lambda A, d: F.cayley(A, d), [A, d])
    assert_create_graph_keeps_the_gradient(lambda: F.cayley(A, d).abs().square().sum()
                                           + F.cayley(A).real.sum(), [A, d])


def test_backward_reads_expanded_gradients():
    """A stride-0 gradient (from .sum()) gives the same result as a materialized one."""
    A = random_skew(5).requires_grad_()
    (g1,) = torch.autograd.grad(F.cayley(A).sum(), A)
    (g2,) = torch.autograd.grad(F.cayley(A), A, torch.ones(5, 5, dtype=A.dtype))
    torch.testing.assert_close(g1, g2)


def test_batch_and_broadcast():
    A = random_skew(5, batch=(2, 3))
    d = random_d(5, complex_=False)
    W = F.cayley(A, d)
    assert W.shape == (2, 3, 5, 5)
    torch.testing.assert_close(W[1, 2], F.cayley(A[1, 2], d))
    # gradients reach both the batched A and the broadcast d
    A.requires_grad_()
    d.requires_grad_()
    gA, gd = torch.autograd.grad(F.cayley(A, d).square().sum(), (A, d))
    assert gA.shape == A.shape and gd.shape == d.shape


def test_real_d_with_complex_A_is_promoted():
    A = random_skew(4, complex_=True)
    d = random_d(4, complex_=False)
    torch.testing.assert_close(F.cayley(A, d), F.cayley(A, d.to(A.dtype)))


def test_closed_form_backward_function_shapes():
    A = random_skew(3)
    M_inv = reference.cayley_inverse(A)
    W = reference.cayley(A)
    gA, gd = cayley_backward(torch.ones_like(W), M_inv, None, W)
    assert gA.shape == A.shape and gd is None
    d = random_d(3, complex_=False)
    gA2, gd = cayley_backward(torch.ones_like(W), M_inv, d, W * d, want_grad_d=False)
    assert gd is None and gA2.shape == A.shape


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.cayley(torch.zeros(3, 4)), ValueError, r"A must have shape \(\.\.\., n, n\)"),
        (lambda: F.cayley(torch.zeros(3)), ValueError, "square"),
        (lambda: F.cayley(torch.zeros(3, 3, dtype=torch.int64)), TypeError, "A must be a floating"),
        (lambda: F.cayley(torch.zeros(3, 3), torch.ones(4)), ValueError, r"d must have shape \(\.\.\., n\) with n = 3"),
        (lambda: F.cayley(torch.zeros(3, 3), torch.ones(3, dtype=torch.complex64)), TypeError, "d is complex but A is real"),
        (lambda: F.cayley(torch.zeros(2, 3, 3), torch.ones(4, 3)), ValueError, "do not broadcast"),
        (lambda: F.cayley(torch.zeros(3, 3), torch.ones(3, device="meta")), ValueError, "d is on meta"),
        (lambda: F.cayley([[0.0]]), TypeError, "A must be a torch.Tensor"),
        (lambda: F.cayley(torch.zeros(3, 3), backend="cuda"), ValueError, "backend must be one of"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: F.cayley_planes(torch.zeros(3, 4, 4), None, "reference"), r"P = 1 \(real\) or 2"),
    (lambda: F.cayley_planes(torch.zeros(4, 4), None, "reference"), r"P = 1 \(real\) or 2"),
    (lambda: F.cayley_planes(torch.zeros(1, 4, 4), torch.ones(4), "reference"),
     r"d must have shape \(1, 4\)"),
])
def test_cayley_planes_checks_the_plane_count(call, match):
    # a third plane was silently dropped
    with pytest.raises(ValueError, match=match):
        call()


def test_to_planes_takes_complex_only():
    with pytest.raises(TypeError, match="to_planes expects a complex tensor"):
        F.to_planes(torch.zeros(3))


def test_triton_backend_refuses_float64(dispatch_interprets):
    # with the interpreter, CPU tensors reach the dtype reason (without it, on a GPU
    # machine, they would be refused first for their device)
    with pytest.raises(BackendUnavailableError, match="float32 planes"):
        F.cayley(random_skew(4), backend="triton")
    F.cayley(random_skew(4), backend="auto")  # auto falls back to the reference


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    log_scale=st.floats(-3, 3),
    complex_=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_unitary_property(n, log_scale, complex_, seed):
    """Property: for any skew A and any D of unit modulus, W is unitary to 1e-5 in float32."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.complex64 if complex_ else torch.float32
    X = torch.randn(n, n, dtype=dt, generator=g) * 10**log_scale
    d = torch.polar(torch.ones(n), torch.rand(n, generator=g) * 6.3) if complex_ else \
        torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    W = F.cayley(X - X.mH, d)
    assert (W.mH @ W - torch.eye(n, dtype=dt)).abs().max().item() < 1e-5


@pytest.mark.parametrize("complex_", [False, True])
def test_opcheck_registered_ops(complex_):
    """torch.library.opcheck: schema, fake kernels (incl. strides), autograd registration."""
    A = random_skew(4, complex_=complex_).float() if not complex_ else random_skew(4, complex_=True).to(torch.complex64)
    Ap = torch.stack([A.real, A.imag]) if complex_ else A.unsqueeze(0)
    dp = torch.ones(Ap.shape[0], 4)
    for a in (Ap, Ap.transpose(-1, -2), Ap[:, :1].expand(-1, 4, 4)):
        torch.library.opcheck(torch.ops.fastunitary.cayley, (a.requires_grad_(), dp, "reference"))
        W, M_inv = torch.ops.fastunitary.cayley(a.detach(), dp, "reference")
        G = torch.randn_like(W).transpose(-1, -2)
        torch.library.opcheck(torch.ops.fastunitary.cayley_backward, (G, M_inv, dp, W, True))


@pytest.mark.slow
def test_compile_on_transposed_input():
    A = random_skew(5).float()
    f = lambda A: F.cayley(A.t()) * 2 + 1  # noqa: E731
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(A), f(A))


def test_backward_under_autocast_is_float32():
    A = random_skew(6).float().requires_grad_()
    (g_ref,) = torch.autograd.grad(F.cayley(A).square().sum(), A)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cayley(A).float().square().sum()
        (g,) = torch.autograd.grad(loss, A)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6)


# -- Triton kernels (kernels/cayley.py) -----------------------------------------------------
# CUDA where present, else CPU tensors through the interpreter (tests/conftest.py).
KERNEL_DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture
def kernel_device(request, monkeypatch):
    """Device for kernel tests; NaN-filled side buffers so a read-before-write fails."""
    from fastunitary.kernels import cayley as KC

    monkeypatch.setattr(KC, "FILL_OUTPUTS_WITH_NAN", True)
    return torch.device(request.param)


def _kernel_case(n, complex_, scale, batch, device):
    """float32 inputs; the float64 reference of exactly those inputs; the Triton result."""
    kind = torch.complex64 if complex_ else torch.float32
    A = random_skew(n, complex_=complex_, scale=scale, batch=batch).to(kind)
    d = random_d(n, complex_=complex_, batch=batch).to(kind)
    wide = torch.complex128 if complex_ else torch.float64
    W_ref = F.cayley(A.to(wide), d.to(wide), backend="reference")
    W = F.cayley(A.to(device), d.to(device), backend="triton")
    return A, d, W, W_ref


KERNEL_CASES = [(n, c, s) for n in (1, 5, 16, 31, 64) for c in (False, True) for s in (1e-3, 1.0, 1e3)]
KERNEL_CASES += [(100, False, 1e3), (100, True, 1e3), (128, False, 1.0), (128, True, 1e3)]


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("n, complex_, scale", KERNEL_CASES)
def test_kernel_matches_float64_reference(kernel_device, n, complex_, scale):
    """W to relative error 1e-5 of the float64 map, unitary to 1e-5, for ||A|| 1e-3 .. 1e3."""
    _, _, W, W_ref = _kernel_case(n, complex_, scale, (), kernel_device)
    W = W.cpu().to(W_ref.dtype)
    assert W.device.type == "cpu" and W.shape == (n, n)
    assert ((W - W_ref).norm() / W_ref.norm()).item() <= 1e-5
    assert (W.mH @ W - torch.eye(n, dtype=W.dtype)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
def test_kernel_batched_and_gradients(kernel_device, complex_):
    """A leading batch (layers), and the gradients from the kernel's saved inverse."""
    A, d, W, W_ref = _kernel_case(37, complex_, 10.0, (3,), kernel_device)
    assert W.shape == (3, 37, 37)
    torch.testing.assert_close(W.cpu().to(W_ref.dtype), W_ref, rtol=0, atol=1e-6)
    G = torch.randn(3, 37, 37, dtype=A.dtype)
    grads = {}
    for backend, dev in (("triton", kernel_device), ("reference", torch.device("cpu"))):
        a = A.to(dev).requires_grad_()
        dd = d.to(dev).requires_grad_()
        out = F.cayley(a, dd, backend=backend)
        grads[backend] = [g.cpu() for g in torch.autograd.grad((out * G.to(dev).conj()).real.sum(), (a, dd))]
    for a, b in zip(grads["triton"], grads["reference"]):
        assert ((a - b).norm() / b.norm()).item() <= 1e-5


@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("shape", [(0, 0), (3, 0, 0)])
def test_kernel_empty_matrix_like_reference(kernel_device, complex_, shape):
    """n = 0 gives empty W and gradients on both backends (the kernel's reshape once failed
    on an ambiguous -1)."""
    kind = torch.complex64 if complex_ else torch.float32
    for backend, dev in (("triton", kernel_device), ("reference", torch.device("cpu"))):
        A = torch.zeros(shape, dtype=kind, device=dev, requires_grad=True)
        W = F.cayley(A, backend=backend)
        assert W.shape == shape and W.dtype == kind
        (W.real.sum()).backward()
        assert A.grad.shape == shape


@pytest.mark.slow
@pytest.mark.parametrize("kernel_device", KERNEL_DEVICES, indirect=True)
def test_kernel_compiled_matches_eager(kernel_device):
    torch._dynamo.reset()
    A = random_skew(20, complex_=True).to(torch.complex64).to(kernel_device)
    Ap = torch.stack([A.real, A.imag]).requires_grad_()

    def f(Ap):
        return F.cayley_planes(Ap, None, "triton").square().sum()

    assert torch._dynamo.explain(f)(Ap).graph_break_count == 0
    out_c = torch.compile(f, fullgraph=True)(Ap)
    (g_c,) = torch.autograd.grad(out_c, Ap)
    out_e = f(Ap)
    (g_e,) = torch.autograd.grad(out_e, Ap)
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(g_c, g_e)
