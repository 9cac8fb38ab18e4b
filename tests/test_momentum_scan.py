"""fastunitary.functional.momentum_scan and its reference (the log-depth scan)."""

import importlib

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


@pytest.mark.parametrize("T", [1, 2, 5, 33])
def test_log_depth_and_sequential_scans_agree(T):
    """The CUDA form (log-depth) equals the CPU form (one pass) and the loop."""
    mod = importlib.import_module("fastunitary.reference.momentum_scan")
    a = torch.rand(T, 3, 4, dtype=torch.float64)
    b = torch.randn(T, 3, 4, dtype=torch.float64)
    expected = reference.linear_scan_loop(a, b, None)
    torch.testing.assert_close(mod._log_depth_scan(a, b), expected)
    torch.testing.assert_close(mod._sequential_scan(a, b), expected)


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
        (lambda: F.momentum_scan(torch.zeros(3, 2, 4), "0.5"), TypeError,
         "mu must be a float or a tensor, got str"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_numpy_scalar_coefficients_are_floats():
    """np.float32 is no Python float (np.float64 is): both count as a fixed coefficient."""
    import numpy as np

    u = torch.randn(5, 2, 3)
    expected = F.momentum_scan(u, 0.5, 0.25)
    for kind in (np.float32, np.float64):
        torch.testing.assert_close(F.momentum_scan(u, kind(0.5), kind(0.25)), expected)


# -- the Triton kernel (kernels/momentum_scan.py) ----------------------------------------
# The Triton kernel of momentum_scan (kernels/momentum_scan.py) against the reference and the loop.
#
# Under TRITON_INTERPRET=1 these run the kernel on CPU tensors (CI); with CUDA they run
# compiled. Each test draws fresh random inputs and compares the float32 kernel's output and
# gradients (of u, of a learnable mu, of a per-channel step, of v0) with the float64 loop
# (``reference.linear_scan_loop`` under autograd) and with the float32 reference backend.
# Tolerance: max abs error <= 1e-5 x max |expected| per tensor (float32 rounding of a
# contractive scan stays ~1e-6 of the largest value, T = 4097 included).
#
# The interpreter runs ``tl.associative_scan`` with a custom combine one element at a time
# (~0.2 ms per element of a padded tile), so most tests shrink the tile to ``CHUNK = BLOCK_C
# = 8`` (fixture ``small_tile``), which also puts more chunk and channel-block boundaries in
# a small tensor; the dispatched tile (64 x 32) has its own tests. Outputs are allocated
# NaN-filled, so an element the kernel fails to write fails the comparison.

TOL = 1e-5
KERNEL_DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]
MU_KINDS = ["float", "()", "(d,)", "(T,1,1)", "(T,B,d)"]


@pytest.fixture(params=KERNEL_DEVICES)
def scan_device(request, monkeypatch):
    """Device for kernel tests; NaN-filled kernel outputs so unwritten elements fail."""
    from fastunitary.kernels import momentum_scan as K

    monkeypatch.setattr(K, "FILL_OUTPUTS_WITH_NAN", True)
    return torch.device(request.param)


@pytest.fixture
def small_tile(monkeypatch):
    """An 8-step x 8-channel tile (2 warps: no replicated lanes), for fast interpreted tests."""
    from fastunitary.kernels import momentum_scan as K

    monkeypatch.setattr(K, "CHUNK", 8)
    monkeypatch.setattr(K, "BLOCK_C", 8)
    monkeypatch.setattr(K, "NUM_WARPS", 2)


def make_mu(kind, T, B, d):
    """The coefficient in one of the shapes momentum_scan takes, float64 (|mu| < 1)."""
    if kind == "float":
        return 0.9
    if kind == "()":
        return torch.tensor(0.9, dtype=torch.float64)
    if kind == "(d,)":
        return 0.5 + 0.5 * torch.rand(d, dtype=torch.float64)
    if kind == "(T,1,1)":  # Nesterov's schedule k / (k + 3), restarted every 50 steps
        k = torch.arange(T, dtype=torch.float64) % 50
        return (k / (k + 3)).reshape(T, 1, 1)
    return 2 * torch.rand(T, B, d, dtype=torch.float64) - 1  # (T,B,d), signs mixed


def make_inputs(T, B, d, mu_kind, with_v0, step_per_channel=False):
    u = torch.randn(T, B, d, dtype=torch.float64)
    step = torch.rand(d, dtype=torch.float64) + 0.5 if step_per_channel else 0.5
    v0 = torch.randn(B, d, dtype=torch.float64) if with_v0 else None
    return u, make_mu(mu_kind, T, B, d), step, v0


def oracle(u, mu, step, v0):
    """The step-by-step loop (float64 under autograd)."""
    return reference.linear_scan_loop(torch.as_tensor(mu, dtype=u.dtype).expand_as(u), step * u, v0)


def output_and_grads(fn, inputs, gv, dtype, device):
    """``fn(*inputs)`` and the gradients of every tensor input for the upstream ``gv``."""
    ins = [x.detach().to(device=device, dtype=dtype).requires_grad_()
           if isinstance(x, torch.Tensor) else x for x in inputs]
    v = fn(*ins)
    leaves = [x for x in ins if isinstance(x, torch.Tensor)]
    grads = torch.autograd.grad(v, leaves, gv.to(device=device, dtype=dtype))
    return v.detach(), grads


def assert_close(actual, expected, tol=TOL):
    actual = actual.detach().cpu().double()
    expected = expected.detach().cpu().double()
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all()
    err = (actual - expected).abs().max().item()
    assert err <= tol * expected.abs().max().clamp_min(1e-30).item(), err


def check_kernel(shape, mu_kind, with_v0, device, step_per_channel=False):
    """Output and every gradient: kernel vs float64 loop and vs the float32 reference."""
    inputs = make_inputs(*shape, mu_kind, with_v0, step_per_channel)
    gv = torch.randn(shape, dtype=torch.float64)
    v64, g64 = output_and_grads(oracle, inputs, gv, torch.float64, "cpu")
    v_ref, g_ref = output_and_grads(
        lambda *a: F.momentum_scan(*a, backend="reference"), inputs, gv, torch.float32, device)
    v, g = output_and_grads(
        lambda *a: F.momentum_scan(*a, backend="triton"), inputs, gv, torch.float32, device)
    assert v.device.type == device.type and v.dtype == torch.float32 and v.is_contiguous()
    assert len(g) == len(g64) == len(g_ref)
    for actual, ref32, exact in zip((v, *g), (v_ref, *g_ref), (v64, *g64)):
        assert_close(actual, exact)
        assert_close(actual, ref32)


# T = 1, T = 2, odd T, T = chunk + 1, exact multiples, B = 1, d = 1, d not a power of two,
# C = B d below, at and above the block (8) and several blocks with a partial last one.
SMALL_TILE_CASES = (
    [((37, 3, 5), kind, with_v0) for kind in MU_KINDS for with_v0 in (False, True)]
    + [
        ((1, 1, 1), "float", True),
        ((1, 3, 5), "(T,B,d)", True),
        ((2, 1, 7), "(d,)", False),
        ((9, 1, 8), "(T,1,1)", True),
        ((16, 2, 4), "()", False),
        ((23, 5, 13), "(T,B,d)", True),
        ((11, 2, 1), "(d,)", True),
    ]
)


@pytest.mark.parametrize("shape, mu_kind, with_v0", SMALL_TILE_CASES)
def test_kernel_matches_reference(scan_device, small_tile, shape, mu_kind, with_v0):
    check_kernel(shape, mu_kind, with_v0, scan_device)


def test_kernel_per_channel_step(scan_device, small_tile):
    check_kernel((13, 2, 6), "(d,)", True, scan_device, step_per_channel=True)


@pytest.mark.parametrize("shape, mu_kind, with_v0", [
    ((65, 2, 20), "(T,B,d)", True),  # 2 chunks (the last partial), 2 channel blocks (C = 40)
    ((70, 1, 5), "(d,)", False),
    ((3, 3, 7), "(T,1,1)", True),
])
def test_kernel_dispatched_tile(scan_device, shape, mu_kind, with_v0):
    """The tile the dispatch launches (CHUNK = 64, BLOCK_C = 32)."""
    from fastunitary.kernels import momentum_scan as K

    assert (K.CHUNK, K.BLOCK_C) == (64, 32)
    check_kernel(shape, mu_kind, with_v0, scan_device)


@pytest.mark.slow
def test_kernel_long_sequence(scan_device, monkeypatch):
    """T = 4097 (65 chunks of the dispatched 64 steps, the last of one step), small B d."""
    from fastunitary.kernels import momentum_scan as K

    monkeypatch.setattr(K, "BLOCK_C", 2)  # C = 2: the interpreter's cost is T x BLOCK_C
    monkeypatch.setattr(K, "NUM_WARPS", 4)
    check_kernel((4097, 2, 1), "(T,1,1)", True, scan_device)


def test_kernel_reads_expanded_gradient(scan_device, small_tile, monkeypatch):
    """A ``.sum()`` loss sends a stride-0 gradient to the kernel's backward: same result."""
    from fastunitary.kernels import momentum_scan as K

    strides = []
    backward = K.backward

    def recording(grad_v, a):
        strides.append(grad_v.stride())
        return backward(grad_v, a)

    monkeypatch.setattr(K, "backward", recording)
    T, B, d = 19, 3, 5
    u, mu, _, v0 = make_inputs(T, B, d, "(T,B,d)", True)
    u, mu, v0 = (t.float().to(scan_device) for t in (u, mu, v0))
    ins = [t.requires_grad_() for t in (u, mu, v0)]
    g_sum = torch.autograd.grad(F.momentum_scan(u, mu, 0.5, v0, backend="triton").sum(), ins)
    assert strides == [(0, 0, 0)]
    g_ones = torch.autograd.grad(F.momentum_scan(u, mu, 0.5, v0, backend="triton"), ins,
                                 torch.ones(T, B, d, device=scan_device))
    u64, mu64, v064 = (t.detach().double().cpu().requires_grad_() for t in (u, mu, v0))
    g64 = torch.autograd.grad(oracle(u64, mu64, 0.5, v064).sum(), (u64, mu64, v064))
    for a, b, exact in zip(g_sum, g_ones, g64):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert_close(a, exact)


def test_kernel_direct_calls(scan_device, small_tile):
    """forward/backward of the module on broadcast and non-contiguous views, vs the reference."""
    from fastunitary.kernels import momentum_scan as K

    T, B, d = 13, 3, 6  # 2 chunks, 3 channel blocks
    dev = scan_device
    b = torch.randn(d, B, T, device=dev).permute(2, 1, 0)  # non-contiguous input
    v0 = torch.randn(d, B, device=dev).t()  # non-contiguous v0
    g = torch.randn(T, B, d, device=dev)
    coefs = {
        "scalar": torch.full((), 0.8, device=dev).expand(T, B, d),
        "(d,)": torch.rand(d, device=dev).expand(T, B, d),
        "(T,1,1)": torch.rand(T, 1, 1, device=dev).expand(T, B, d),
        "(B,d) over time": torch.rand(B, d, device=dev).expand(T, B, d),
        "non-contiguous (T,B,d)": torch.rand(B, T, d, device=dev).transpose(0, 1),
        "unexpanded (T,1,1)": torch.rand(T, 1, 1, device=dev),
    }
    for name, a in coefs.items():
        a_full = a.expand(T, B, d).cpu().double()
        v = K.forward(a, b, v0)
        assert v.is_contiguous() and v.shape == (T, B, d), name
        assert_close(v, reference.linear_scan_loop(a_full, b.cpu().double(), v0.cpu().double()))
        assert_close(K.forward(a, b, None),
                     reference.linear_scan_loop(a_full, b.cpu().double(), None))
        gbar = K.backward(g, a)
        assert gbar.is_contiguous() and gbar.shape == (T, B, d), name
        assert_close(gbar, reference.linear_scan_backward(g.cpu().double(), a_full))
        assert_close(K.backward(torch.ones((), device=dev).expand(T, B, d), a),
                     reference.linear_scan_backward(torch.ones(T, B, d, dtype=torch.float64),
                                                    a_full))


def test_coefficient_layout_never_materializes_broadcasts():
    from fastunitary.kernels import momentum_scan as K

    T, B, d = 5, 3, 4
    cases = {
        (): (K.A_PER_STEP, (0, 0, 0)),
        (T, 1, 1): (K.A_PER_STEP, (1, 0, 0)),
        (d,): (K.A_PER_CHANNEL, (0, 0, 1)),
        (B, d): (K.A_PER_CHANNEL, (0, d, 1)),
        (T, B, d): (K.A_FULL, (0, 0, 0)),
    }
    for shape, (mode, strides) in cases.items():
        mu = torch.rand(shape)
        a = mu.expand(T, B, d)
        got_mode, tensor, got_strides = K._coef_layout(a)
        assert (got_mode, got_strides) == (mode, strides), shape
        assert tensor.data_ptr() == mu.data_ptr()  # a view of the user's tensor, no copy
    # B = 1 and d = 1 dims: their strides do not matter
    assert K._coef_layout(torch.rand(T, 1, 1))[0] == K.A_PER_STEP
    assert K._coef_layout(torch.rand(1, 1, d).expand(T, 1, d))[0] == K.A_PER_CHANNEL


def test_kernel_refuses_non_float32():
    from fastunitary.kernels import momentum_scan as K

    a, b = torch.rand(4, 2, 3), torch.randn(4, 2, 3)
    with pytest.raises(TypeError, match="float32"):
        K.forward(a.double(), b, None)
    with pytest.raises(TypeError, match="float32"):
        K.forward(a, b.half(), None)
    with pytest.raises(TypeError, match="float32"):
        K.forward(a, b, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32"):
        K.backward(b.to(torch.bfloat16), a)


def test_opcheck_triton_backend(scan_device, small_tile):
    a = torch.rand(6, 2, 3, device=scan_device)
    b = torch.randn(6, 2, 3, device=scan_device, requires_grad=True)
    v0 = torch.randn(2, 3, device=scan_device)
    torch.library.opcheck(torch.ops.fastunitary.momentum_scan, (a, b, v0, "triton"))
    torch.library.opcheck(torch.ops.fastunitary.momentum_scan_backward, (b.detach(), a, "triton"))


@pytest.mark.slow
def test_kernel_compiled_matches_eager(scan_device, small_tile):
    """torch.compile(fullgraph=True) through the op, Triton backend: one graph, same result."""
    torch._dynamo.reset()
    T, B, d = 11, 3, 5
    u = torch.randn(T, B, d, device=scan_device)
    v0 = torch.randn(B, d, device=scan_device)
    mu = torch.rand(d, device=scan_device, requires_grad=True)

    def f(u, mu):
        return F.momentum_scan(u, mu, 0.5, v0, backend="triton").square().sum()

    assert torch._dynamo.explain(f)(u, mu).graph_break_count == 0
    out_c = torch.compile(f, fullgraph=True)(u, mu)
    (g_c,) = torch.autograd.grad(out_c, mu)
    out_e = f(u, mu)
    (g_e,) = torch.autograd.grad(out_e, mu)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_c, g_e, rtol=1e-5, atol=1e-5)


def test_aot_configs_cover_dispatch():
    """ci/compile_check.py compiles every (A_MODE, direction, v0) the dispatch can launch."""
    from fastunitary.kernels import momentum_scan as K

    configs = list(K.aot_configs())
    assert configs and all(dispatched for *_, dispatched in configs)
    launched = {(c["A_MODE"], c["REVERSE"], c["HAS_V0"]) for _, _, _, c, _, _ in configs}
    modes = (K.A_PER_STEP, K.A_PER_CHANNEL, K.A_FULL)
    directions = ((False, False), (False, True), (True, False))  # fwd, fwd with v0, bwd
    assert launched == {(m, r, h) for m in modes for r, h in directions}
    for _, kernel, sig, const, warps, _ in configs:
        assert kernel == "_scan" and warps == K.NUM_WARPS
        assert (const["CHUNK"], const["BLOCK_C"]) == (K.CHUNK, K.BLOCK_C)
        assert set(sig) == set(K._scan.arg_names)
    assert len(list(K.aot_configs(explore=True))) > len(configs)


@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("with_v0", [False, True])
def test_scan_form_equals_the_scan(broadcast, with_v0):
    """``linear_scan_hop`` (export's form: one scan op) gives ``linear_scan`` (float64,
    1e-12), for a per-element and for a broadcast decay."""
    T, B, d = 11, 3, 4
    b = torch.randn(T, B, d, dtype=torch.float64)
    a = (torch.rand((T, 1, 1) if broadcast else (T, B, d), dtype=torch.float64)).expand(T, B, d)
    v0 = torch.randn(B, d, dtype=torch.float64) if with_v0 else None
    torch.testing.assert_close(reference.linear_scan_hop(a, b, v0),
                               reference.linear_scan(a, b, v0), rtol=1e-12, atol=1e-12)


def test_double_backward_gradgradcheck():
    """Second derivatives in ``a``, ``b`` and ``v0`` (a learnable ``mu`` included), by
    finite differences of the gradient (float64)."""
    T, B, d = 5, 2, 3
    f64 = dict(dtype=torch.float64, requires_grad=True)
    a, b, v0 = torch.rand(T, B, d, **f64), torch.randn(T, B, d, **f64), torch.randn(B, d, **f64)
    from .conftest import gradgradcheck_each

    assert gradgradcheck_each(
        lambda a, b, v0: F.momentum_scan(b, a, 1.0, v0=v0, backend="reference"), [a, b, v0])


def test_create_graph_keeps_the_first_derivative():
    """The double-backward path's gradient is the fused one, with a learnable per-feature
    ``mu``, a ``step`` tensor and ``v0`` computed from ``u``."""
    from .conftest import assert_create_graph_keeps_the_gradient

    u = torch.randn(7, 2, 3, dtype=torch.float64, requires_grad=True)
    mu = torch.rand(3, dtype=torch.float64, requires_grad=True)
    step = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    loss = lambda: F.momentum_scan(u, mu, step, v0=u.mean(0)).square().sum()  # noqa: E731
    assert_create_graph_keeps_the_gradient(loss, [u, mu, step])
