"""fastunitary.functional.lstm_recurrence and its reference (closed-form backward)."""

import pytest
import torch

import fastunitary.functional as F
from fastunitary import reference

from .conftest import assert_create_graph_keeps_the_gradient, gradgradcheck_each, rel_err


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
    """Both ops, with and without W_hr, autograd included (inputs that require grad), at
    sizes that all differ (T = 4, B = 3, n = 5, p = 2), so a fake shape with two sizes
    swapped fails; the backward also with per-sample weight gradients."""
    def leaves(tensors):
        return [None if t is None else t.detach().float().requires_grad_() for t in tensors]

    forward, backward = torch.ops.fastunitary.lstm_recurrence, torch.ops.fastunitary.lstm_recurrence_backward
    for W_hr_used in (False, True):
        if W_hr_used:
            g, W, h0, c0, W_hr = leaves(projected_inputs(4, 3, 5, 2))
        else:
            (g, W, h0, c0), W_hr = leaves(inputs(4, 3, 5)), None
        torch.library.opcheck(forward, (g, W, h0, c0, W_hr, "reference"))
        with torch.no_grad():
            h, c = forward(g, W, h0, c0, W_hr, "reference")
        grads = (torch.randn_like(h), torch.randn_like(c))
        args = [t if t is None else t.detach() for t in (g, W, h0, c0, h, c, W_hr)]
        for samples in (1, 3):  # 3: per-sample weight gradients (vmap's rule), B = 3
            torch.library.opcheck(backward, (*grads, *args[:6], args[6], "reference", samples))


# -- the projection W_hr (torch.nn.LSTM's proj_size) ---------------------------------------


def projected_inputs(T, B, n, p, dtype=torch.float64, states=True):
    """``g (T, B, 4n)``, ``W_hh (4n, p)``, ``h0 (B, p)``, ``c0 (B, n)``, ``W_hr (p, n)``."""
    g = torch.randn(T, B, 4 * n, dtype=dtype, requires_grad=True)
    W = (torch.randn(4 * n, p, dtype=dtype) / p**0.5).requires_grad_()
    W_hr = (torch.randn(p, n, dtype=dtype) / n**0.5).requires_grad_()
    h0 = torch.randn(B, p, dtype=dtype, requires_grad=True) if states else None
    c0 = torch.randn(B, n, dtype=dtype, requires_grad=True) if states else None
    return g, W, h0, c0, W_hr


@pytest.mark.parametrize("T, B, n, p", [(1, 1, 2, 1), (7, 3, 5, 2), (20, 2, 8, 3), (6, 2, 3, 5)])
@pytest.mark.parametrize("states", [True, False])
def test_projection_matches_autograd_oracle(T, B, n, p, states):
    """Outputs and the gradients of every input, W_hr included, against the per-step loop
    differentiated by autograd (float64, assert_close's default tolerance for it); p > n
    too, which the op allows though torch.nn.LSTM does not."""
    g, W, h0, c0, W_hr = projected_inputs(T, B, n, p, states=states)
    h, c = F.lstm_recurrence(g, W, h0, c0, W_hr=W_hr, backend="reference")
    h_ref, c_ref = reference.lstm_autograd(g, W, h0, c0, W_hr)
    assert h.shape == (T, B, p) and c.shape == (T, B, n)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    wrt = [a for a in (g, W, h0, c0, W_hr) if a is not None]
    got = torch.autograd.grad((h * gh).sum() + (c * gc).sum(), wrt)
    want = torch.autograd.grad((h_ref * gh).sum() + (c_ref * gc).sum(), wrt)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y)


def test_projection_gradcheck_float64():
    g, W, h0, c0, W_hr = projected_inputs(4, 2, 3, 2)
    f = lambda g, W, h0, c0, W_hr: F.lstm_recurrence(g, W, h0, c0, W_hr=W_hr)  # noqa: E731
    assert torch.autograd.gradcheck(f, (g, W, h0, c0, W_hr))
    assert torch.autograd.gradcheck(lambda *a: f(*a)[0], (g, W, h0, c0, W_hr))  # h only


def test_projection_equals_torch_lstm_proj_size():
    lstm = torch.nn.LSTM(4, 6, proj_size=2, dtype=torch.float64)
    x = torch.randn(9, 3, 4, dtype=torch.float64)
    h0, c0 = torch.randn(1, 3, 2, dtype=torch.float64), torch.randn(1, 3, 6, dtype=torch.float64)
    g = x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + lstm.bias_hh_l0
    h, c = F.lstm_recurrence(g, lstm.weight_hh_l0, h0[0], c0[0], W_hr=lstm.weight_hr_l0)
    out, (h_n, c_n) = lstm(x, (h0, c0))
    torch.testing.assert_close(h, out)
    torch.testing.assert_close(h[-1], h_n[0])
    torch.testing.assert_close(c[-1], c_n[0])


@pytest.mark.slow
def test_projection_compiles_without_graph_breaks():
    torch._dynamo.reset()
    g, W, h0, c0, W_hr = (t.detach().float() for t in projected_inputs(6, 2, 5, 3))
    W_hr.requires_grad_()

    def f(g, W, W_hr):
        h, c = F.lstm_recurrence(g, W, h0, c0, W_hr=W_hr)
        return h.sum() + c.square().sum()

    assert torch._dynamo.explain(f)(g, W, W_hr).graph_break_count == 0
    out_c = torch.compile(f, fullgraph=True)(g, W, W_hr)
    out_e = f(g, W, W_hr)
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(torch.autograd.grad(out_c, W_hr)[0], torch.autograd.grad(out_e, W_hr)[0])


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
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8), torch.zeros(8, 1), W_hr=torch.zeros(1, 3)),
         ValueError, r"W_hr must have shape \(\*, 2\) = \(p, n\)"),
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8), torch.zeros(8, 2), W_hr=torch.zeros(1, 2)),
         ValueError, r"W_hh must have shape \(8, 1\) = \(4n, p\)"),
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8), torch.zeros(8, 1), torch.zeros(2, 2),
                                   W_hr=torch.zeros(1, 2)),
         ValueError, r"h0 must have shape \(2, 1\) = \(B, p\)"),
        (lambda: F.lstm_recurrence(torch.zeros(3, 2, 8), torch.zeros(8, 0), W_hr=torch.zeros(0, 2)),
         ValueError, "W_hr must have p >= 1 rows"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- the Triton kernels (kernels/lstm_recurrence.py) ------------------------------------
# Triton kernels of fastunitary::lstm_recurrence (kernels/lstm_recurrence.py).
#
# Under TRITON_INTERPRET=1 (conftest, no CUDA) the kernels run on CPU tensors; with CUDA they
# run compiled. Each test draws fresh random float32 inputs and compares the op on
# ``backend="triton"`` with ``backend="reference"`` (the same float32 op in plain PyTorch):
# outputs h and c, and the gradients of g, W_hh, h0 and c0. Stated tolerance: max-norm
# relative error (``max |a - b| / max |b|``) <= 1e-5 for outputs and gradients (measured:
# <= 2e-6 on every shape here; the two differ only in the order of float32 sums). Every
# kernel output is allocated NaN-filled (fixture), so an element a kernel fails to write
# fails the comparison.

LSTM_KERNEL_DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]
LSTM_OUT_TOL = 1e-5
LSTM_GRAD_TOL = 1e-5


@pytest.fixture
def lstm_kernel_device(request, monkeypatch):
    """Device for the LSTM kernel tests; NaN-filled kernel outputs so unwritten elements fail."""
    from fastunitary.kernels import lstm_recurrence as K

    monkeypatch.setattr(K, "FILL_OUTPUTS_WITH_NAN", True)
    return torch.device(request.param)


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
def test_lstm_kernel_backward_products_in_ieee_float32_under_tf32(lstm_kernel_device, monkeypatch):
    """As for the recurrence: the host-side products of the backward (the recomputed gate
    pre-activations) run in true float32 whatever the process asked for."""
    from fastunitary.kernels import lstm_recurrence as K

    seen, launch = [], K.launch
    monkeypatch.setattr(K, "launch", lambda *a, **k: (
        seen.append(torch.get_float32_matmul_precision()), launch(*a, **k))[1])
    g, W, h0, c0 = [t.requires_grad_() for t in lstm_inputs(4, 3, 5, lstm_kernel_device)]
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        h, c = F.lstm_recurrence(g, W, h0, c0, backend="triton")
        (h.sum() + c.sum()).backward()
        assert seen == ["high", "highest"] and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)


def lstm_inputs(T, B, n, device, *, with_state=True):
    """``g (T, B, 4n)``, ``W_hh (4n, n)``, ``h0``, ``c0`` (float32; states optionally None)."""
    g = torch.randn(T, B, 4 * n, device=device)
    W = torch.randn(4 * n, n, device=device) / n**0.5
    h0 = torch.randn(B, n, device=device) * 0.5 if with_state else None
    c0 = torch.randn(B, n, device=device) * 0.5 if with_state else None
    return g, W, h0, c0


def lstm_run(backend, inputs, gh, gc):
    """``(h, c)`` and the gradients of every non-None input of ``sum(h gh) [+ sum(c gc)]``."""
    ins = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    h, c = F.lstm_recurrence(*ins, backend=backend)
    loss = (h * gh).sum() + ((c * gc).sum() if gc is not None else 0)
    grads = torch.autograd.grad(loss, [t for t in ins if t is not None])
    return h.detach(), c.detach(), grads


def assert_lstm_kernel_close(T, B, n, device, *, with_state=True, use_c=True):
    inputs = lstm_inputs(T, B, n, device, with_state=with_state)
    gh = torch.randn(T, B, n, device=device)
    gc = torch.randn(T, B, n, device=device) if use_c else None  # None: grad_c arrives as zeros
    h, c, grads = lstm_run("triton", inputs, gh, gc)
    h_ref, c_ref, grads_ref = lstm_run("reference", inputs, gh, gc)
    assert h.device.type == device.type and h.dtype == torch.float32
    assert rel_err(h, h_ref) <= LSTM_OUT_TOL
    assert rel_err(c, c_ref) <= LSTM_OUT_TOL
    assert len(grads) == len(grads_ref) == (4 if with_state else 2)
    for a, b in zip(grads, grads_ref):
        assert torch.isfinite(a).all()
        assert rel_err(a, b) <= LSTM_GRAD_TOL


# (T, B, n): B = 1 and B = 17 (a partial second tile of 16 rows), T = 1 and odd T, n not a
# power of two, n at the resident limit (32) and just beyond it (33, 40: split, with a
# partial last tile of 16 columns).
LSTM_KERNEL_SHAPES = [(1, 1, 1), (1, 17, 5), (7, 1, 16), (5, 3, 32), (9, 17, 7), (4, 2, 20),
                      (3, 17, 33), (2, 1, 40)]


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("shape", LSTM_KERNEL_SHAPES, ids=lambda s: "T%d-B%d-n%d" % s)
def test_lstm_kernel_matches_reference(lstm_kernel_device, shape):
    """Loss on both h and c, with initial states; resident (n <= 32) and split designs."""
    assert_lstm_kernel_close(*shape, lstm_kernel_device)


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("scale", [1e-4, 1e-6, 1e-9])
@pytest.mark.parametrize("n", [7, 33], ids=lambda n: f"n{n}")  # resident and split
def test_lstm_kernel_small_states(lstm_kernel_device, scale, n):
    """Small cell inputs and states: tanh of a small argument to float32 accuracy (the
    kernel's tanh once cancelled there: 4e-2 relative error in h at scale 1e-6)."""
    g, W, h0, c0 = lstm_inputs(6, 3, n, lstm_kernel_device)
    g = g.unflatten(-1, (4, n)) * torch.tensor([1.0, 1.0, scale, 1.0], device=g.device)[:, None]
    inputs = (g.flatten(-2), W, h0 * scale, c0 * scale)  # only the cell input z_g is small
    gh, gc = torch.randn(6, 3, n, device=g.device), torch.randn(6, 3, n, device=g.device)
    h, c, grads = lstm_run("triton", inputs, gh, gc)
    h_ref, c_ref, grads_ref = lstm_run("reference", inputs, gh, gc)
    assert rel_err(h, h_ref) <= 1e-6 and rel_err(c, c_ref) <= 1e-6
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("shape", [(5, 17, 7), (3, 2, 33)], ids=lambda s: "T%d-B%d-n%d" % s)
def test_lstm_kernel_h_only_loss_and_zero_states(lstm_kernel_device, shape):
    """A loss on h only (grad_c reaches the backward as zeros); h0 = c0 = None."""
    assert_lstm_kernel_close(*shape, lstm_kernel_device, with_state=False, use_c=False)
    assert_lstm_kernel_close(*shape, lstm_kernel_device, with_state=True, use_c=False)


def force_lstm_design(monkeypatch, design):
    """Every n above 0 runs ``design`` ("split" or "streamed")."""
    from fastunitary.kernels import lstm_recurrence as K

    monkeypatch.setattr(K, "RESIDENT_MAX_N", 0)
    monkeypatch.setattr(K, "LARGE_N_DESIGN", design)


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("design", ["split", "streamed"])
def test_lstm_large_n_designs_at_small_sizes(lstm_kernel_device, design, monkeypatch):
    """The large-n designs, forced at sizes that would be resident (partial tiles, B=1,
    T=1; split: 1 or 2 groups of units)."""
    from fastunitary.kernels import lstm_recurrence as K

    force_lstm_design(monkeypatch, design)
    for shape, with_state, use_c in [((1, 1, 5), True, True), ((6, 3, 21), False, True),
                                     ((3, 17, 16), True, False)]:
        assert K.plan(shape[2])["design"] == design
        assert_lstm_kernel_close(*shape, lstm_kernel_device, with_state=with_state, use_c=use_c)


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("sms", ["groups", 1])
def test_lstm_split_design_in_batch_chunks_or_steps(lstm_kernel_device, sms, monkeypatch):
    """As the recurrence's split kernels: batch blocks in turn when a launch may hold one
    block's programs only, one step per launch with fewer SMs than groups of units
    (compiled on a GPU; the interpreter launches these 3 groups one step at a time
    either way). The cell state and the backward's carry then cross launches through
    memory. (One group per block, B = 17 in the test above: under the interpreter too, a
    launch per batch block over all its steps.)"""
    from fastunitary.kernels import _host
    from fastunitary.kernels import lstm_recurrence as K

    n = 40
    groups = -(-n // K.SPLIT_BLOCK_N)
    assert K.plan(n)["design"] == "split"
    monkeypatch.setattr(_host, "sm_count", lambda index: groups if sms == "groups" else sms)
    assert_lstm_kernel_close(7, 35, n, lstm_kernel_device)
    assert_lstm_kernel_close(4, 19, n, lstm_kernel_device, with_state=False, use_c=False)


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("n", [7, 33])
def test_lstm_kernel_expanded_gradient(lstm_kernel_device, n):
    """h.sum() + c.sum() hands the backward stride-0 gradients; same as materialized ones."""
    g, W, h0, c0 = [t.requires_grad_() for t in lstm_inputs(4, 3, n, lstm_kernel_device)]
    h, c = F.lstm_recurrence(g, W, h0, c0, backend="triton")
    g1 = torch.autograd.grad(h.sum() + c.sum(), (g, W, h0, c0))
    h, c = F.lstm_recurrence(g, W, h0, c0, backend="triton")
    g2 = torch.autograd.grad((h, c), (g, W, h0, c0),
                             (torch.ones_like(h).contiguous(), torch.ones_like(c).contiguous()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
def test_lstm_kernel_matches_torch_nn_lstm(lstm_kernel_device, monkeypatch):
    """g = x W_ih^T + b_ih + b_hh and W_hh = weight_hh_l0 reproduce torch.nn.LSTM (float32)."""
    # cuDNN's RNNs follow their own setting, "tf32" by default (about 1e-3 off); the
    # kernel computes in IEEE float32
    monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "ieee")
    T, B, n_in, n = 7, 17, 5, 12
    dev = lstm_kernel_device
    lstm = torch.nn.LSTM(n_in, n).to(dev)
    x = torch.randn(T, B, n_in, device=dev)
    h0 = torch.randn(1, B, n, device=dev)
    c0 = torch.randn(1, B, n, device=dev)
    out, (h_n, c_n) = lstm(x, (h0, c0))
    g = x @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
    h, c = F.lstm_recurrence(g, lstm.weight_hh_l0, h0[0], c0[0], backend="triton")
    # two IEEE float32 computations summing in different orders: on an H200 (cuDNN 9.19)
    # they differ by up to 4.8e-6 in h (values of order 1), on the CPU by less than 1e-6
    torch.testing.assert_close(h, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h[-1], h_n[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c[-1], c_n[0], rtol=1e-5, atol=1e-5)
    # and the gradient of W_hh, through the same loss
    (gW_ref,) = torch.autograd.grad(out.square().sum() + c_n.sum(), lstm.weight_hh_l0)
    (gW,) = torch.autograd.grad(h.square().sum() + c[-1].sum(), lstm.weight_hh_l0)
    assert rel_err(gW, gW_ref) <= 1e-5


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
def test_projection_on_the_kernel_under_autocast(lstm_kernel_device):
    """The products around the kernel (W_hh W_hr, ...) stay float32 under autocast: the
    kernel takes only float32."""
    g, W, h0, c0, W_hr = (t.detach().float().to(lstm_kernel_device)
                          for t in projected_inputs(5, 2, 6, 3))
    want = F.lstm_recurrence(g, W, h0, c0, W_hr=W_hr, backend="reference")
    with torch.autocast(lstm_kernel_device.type, dtype=torch.bfloat16):
        got = F.lstm_recurrence(g, W, h0, c0, W_hr=W_hr, backend="triton")
    for a, b in zip(got, want):
        assert a.dtype == torch.float32 and rel_err(a, b) <= LSTM_OUT_TOL


def test_the_op_refuses_w_hr_on_the_kernel():
    g, W, h0, c0, W_hr = (t.detach().float() for t in projected_inputs(3, 2, 4, 2))
    with pytest.raises(ValueError, match="the Triton LSTM kernel has no projection"):
        torch.ops.fastunitary.lstm_recurrence(g, W, h0, c0, W_hr, "triton")


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("with_state", [True, False])
def test_projection_on_the_kernel_matches_reference(lstm_kernel_device, with_state):
    """With W_hr the Triton backend runs the kernel on W_hh W_hr (no projection in the
    kernel): outputs and every gradient as the reference's projected loop, 1e-5."""
    ins = [None if t is None else t.detach().float().to(lstm_kernel_device)
           for t in projected_inputs(6, 3, 7, 3, states=with_state)]
    gh = torch.randn(6, 3, 3, device=lstm_kernel_device)
    gc = torch.randn(6, 3, 7, device=lstm_kernel_device)
    runs = []
    for backend in ("triton", "reference"):
        args = [None if t is None else t.clone().requires_grad_() for t in ins]
        h, c = F.lstm_recurrence(*args[:4], W_hr=args[4], backend=backend)
        grads = torch.autograd.grad((h * gh).sum() + (c * gc).sum(),
                                    [t for t in args if t is not None])
        runs.append([h, c, *grads])
    for got, want in zip(*runs):
        assert rel_err(got, want) <= LSTM_GRAD_TOL


@pytest.mark.slow
@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
def test_lstm_kernel_compiled_matches_eager(lstm_kernel_device):
    """torch.compile(fullgraph=True) through the op on the Triton backend: one graph, same result."""
    torch._dynamo.reset()
    g, W, h0, c0 = lstm_inputs(5, 3, 6, lstm_kernel_device)
    W.requires_grad_()

    def f(g, W):
        h, c = F.lstm_recurrence(g, W, h0, c0, backend="triton")
        return h.square().sum() + c.sum()

    assert torch._dynamo.explain(f)(g, W).graph_break_count == 0
    out_c = torch.compile(f, fullgraph=True)(g, W)
    (g_c,) = torch.autograd.grad(out_c, W)
    out_e = f(g, W)
    (g_e,) = torch.autograd.grad(out_e, W)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_c, g_e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lstm_kernel_device", LSTM_KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("shape", [(5, 19, 64), (2, 3, 257)], ids=lambda s: "T%d-B%d-n%d" % s)
@pytest.mark.parametrize("design", ["split", "streamed"])
def test_lstm_kernel_at_wider_n(lstm_kernel_device, shape, design, monkeypatch):
    """Several column tiles and a partial last one (n = 257), within the interpreter's
    reach: the margin of the 1e-5 tolerance beyond the n <= 40 shapes above."""
    from fastunitary.kernels import lstm_recurrence as K

    monkeypatch.setattr(K, "LARGE_N_DESIGN", design)
    assert K.plan(shape[2])["design"] == design
    assert_lstm_kernel_close(*shape, lstm_kernel_device)


if torch.cuda.is_available():  # defined only where it runs: too slow for the interpreter

    @pytest.mark.parametrize("n", [64, 257, 1024])
    @pytest.mark.parametrize("design", ["split", "streamed"])
    def test_lstm_kernel_large_n_cuda(n, design, monkeypatch):
        """The large-n designs at the sizes they exist for (compiled, CUDA only)."""
        from fastunitary.kernels import lstm_recurrence as K

        monkeypatch.setattr(K, "FILL_OUTPUTS_WITH_NAN", True)
        monkeypatch.setattr(K, "LARGE_N_DESIGN", design)
        assert K.plan(n)["design"] == design
        assert_lstm_kernel_close(5, 19, n, torch.device("cuda"))


def test_lstm_kernel_rejects_non_float32():
    from fastunitary.kernels import lstm_recurrence as K

    g, W, h0, c0 = lstm_inputs(2, 3, 4, "cpu")
    for args in ((g.double(), W, h0, c0), (g, W.bfloat16(), h0, c0), (g, W, h0.half(), c0),
                 (g, W, h0, c0.double())):
        with pytest.raises(TypeError, match="float32"):
            K.forward(*args)
    h, c = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    with pytest.raises(TypeError, match="float32"):
        K.backward(h, c, g.double(), W, h0, c0, h, c)


def test_lstm_kernel_plan_depends_on_n_only():
    from fastunitary.kernels import lstm_recurrence as K

    assert K.plan(1)["design"] == "resident" and K.plan(1)["BLOCK_N"] == 16
    assert K.plan(32)["design"] == "resident" and K.plan(32)["BLOCK_N"] == 32
    assert K.plan(33)["design"] == "split" and K.plan(1024)["design"] == "split"
    # every dispatched configuration is compiled ahead of time (ci/compile_check.py)
    keys = ("BLOCK_K", "num_warps", "PRECISION", "num_stages")
    dispatched = set()
    for n in range(1, 2049):
        p = K.plan(n)
        dispatched.add(("fwd", p["design"], p["BLOCK_N"]) + tuple(p[k] for k in keys))
        dispatched.add(("bwd", p["design"], p["BLOCK_N"])
                       + tuple(p[k + "_backward"] for k in keys))
    configs = [c for c in K.aot_configs() if c[5]]
    assert len(configs) == len(dispatched)
    compiled = set()
    for name, kernel, sig, const, options, _ in configs:
        assert hasattr(K, kernel) and const["BLOCK_B"] == K.BLOCK_B
        direction = "fwd" if kernel.startswith("_forward") else "bwd"
        compiled.add((direction, kernel.rsplit("_", 1)[1], const["BLOCK_N"], const.get("BLOCK_K", 0), options["num_warps"],
                      const.get("PRECISION", "ieee"), options.get("num_stages")))
    assert compiled == dispatched


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_backward_sums_weight_gradients_per_sample(backend, monkeypatch):
    """``samples=S`` (vmap's rule): grad_W_hh (and grad_W_hr with a projection, reference
    only) per sample equal each sample's own backward; the rest is the whole batch's. The
    kernel in float32 (its interpreter on the CPU without a GPU)."""
    S, B, T, n = 3, 2, 6, 4
    dtype, device = torch.float64, "cpu"
    if backend == "triton":
        from fastunitary.kernels import lstm_recurrence as K

        monkeypatch.setattr(K, "FILL_OUTPUTS_WITH_NAN", True)
        dtype, device = torch.float32, LSTM_KERNEL_DEVICES[0]
        p, W_hr = n, None

        def backward(*args, samples=1):  # the kernel has no projection
            return K.backward(*args[:-1], samples=samples)
    else:
        p, W_hr = 3, torch.randn(3, n, dtype=dtype)
        backward = reference.lstm_backward
    g = torch.randn(T, S * B, 4 * n, dtype=dtype, device=device)
    W = torch.randn(4 * n, p, dtype=dtype, device=device) * 0.4
    h0 = torch.randn(S * B, p, dtype=dtype, device=device)
    c0 = torch.randn(S * B, n, dtype=dtype, device=device)
    W_hr = None if W_hr is None else W_hr.to(device)
    h, c = reference.lstm_forward(g, W, h0, c0, W_hr)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    joint = backward(gh, gc, g, W, h0, c0, h, c, W_hr, samples=S)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for s in range(S):
        r = slice(s * B, (s + 1) * B)
        alone = backward(gh[:, r], gc[:, r], g[:, r], W, h0[r], c0[r], h[:, r], c[:, r], W_hr)
        torch.testing.assert_close(joint[0][:, r], alone[0], **tol)
        torch.testing.assert_close(joint[1][s], alone[1], **tol)
        torch.testing.assert_close(joint[2][r], alone[2], **tol)
        torch.testing.assert_close(joint[3][r], alone[3], **tol)
        if W_hr is not None:
            torch.testing.assert_close(joint[4][s], alone[4], **tol)


@pytest.mark.parametrize("proj", [None, 3])
@pytest.mark.parametrize("with_state", [False, True])
def test_scan_form_equals_the_forward(proj, with_state):
    """``lstm_hop`` (export's form: one scan) gives ``lstm_forward``'s ``h`` and ``c``
    (float64, 1e-12)."""
    T, B, n = 9, 3, 5
    p = proj or n
    g = torch.randn(T, B, 4 * n, dtype=torch.float64)
    W_hh = torch.randn(4 * n, p, dtype=torch.float64) / p**0.5
    W_hr = None if proj is None else torch.randn(p, n, dtype=torch.float64) / n**0.5
    h0 = torch.randn(B, p, dtype=torch.float64) if with_state else None
    c0 = torch.randn(B, n, dtype=torch.float64) if with_state else None
    for got, want in zip(reference.lstm_hop(g, W_hh, h0, c0, W_hr),
                         reference.lstm_forward(g, W_hh, h0, c0, W_hr)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("proj", [None, 2])
def test_double_backward_gradgradcheck(proj):
    """Second derivatives through both outputs, every input, by finite differences (float64)."""
    T, B, n = 4, 2, 3
    p = proj or n
    f64 = dict(dtype=torch.float64, requires_grad=True)
    g = torch.randn(T, B, 4 * n, **f64)
    W_hh = (torch.randn(4 * n, p, dtype=torch.float64) / p**0.5).requires_grad_()
    h0, c0 = torch.randn(B, p, **f64), torch.randn(B, n, **f64)
    inputs = [g, W_hh, h0, c0]
    if proj:
        inputs.append((torch.randn(p, n, dtype=torch.float64) / n**0.5).requires_grad_())

    def fn(g, W_hh, h0, c0, W_hr=None):
        return F.lstm_recurrence(g, W_hh, h0, c0, W_hr=W_hr, backend="reference")

    assert gradgradcheck_each(fn, inputs)


@pytest.mark.parametrize("autocast", [False, True])
def test_create_graph_keeps_the_first_derivative(autocast):
    """The double-backward path's gradient is the fused one, with ``h0`` and ``c0`` one
    tensor (aliased inputs), only ``h`` reaching the loss, and under bfloat16 autocast."""
    dtype = torch.float32 if autocast else torch.float64
    g = torch.randn(6, 2, 12, dtype=dtype, requires_grad=True)
    W_hh = (torch.randn(12, 3, dtype=dtype) * 0.5).requires_grad_()
    state = torch.randn(2, 3, dtype=dtype, requires_grad=True)
    loss = lambda: F.lstm_recurrence(g, W_hh, state, state)[0].square().sum()  # noqa: E731
    tol = dict(rtol=1e-5, atol=1e-6) if autocast else {}
    assert_create_graph_keeps_the_gradient(loss, [g, W_hh, state], autocast=autocast, **tol)
