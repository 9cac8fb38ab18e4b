"""fastunitary.functional.onednn_lstm: PyTorch's oneDNN LSTM layer as a registered op.

The reference is ``torch.nn.LSTM`` itself, which runs the same oneDNN kernels on the CPU:
outputs and every gradient must agree to float32 rounding (stated tolerance 1e-5
relative; measured: equal to the last bit on these shapes, as both call oneDNN)."""

import pytest
import torch

from fastunitary.functional.onednn_lstm import onednn_lstm, onednn_lstm_supported

from .conftest import mkldnn_disabled, rel_err

# only a PyTorch built without oneDNN skips: one that has it but whose aten LSTM ops
# changed form fails test_supported_only_for_float32_cpu_tensors, so it is noticed
pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                reason="this PyTorch was built without oneDNN")
TOL = 1e-5


def _lstm_and_inputs(T, B, m, n, with_state=True, bias=True):
    lstm = torch.nn.LSTM(m, n, bias=bias)
    x = torch.randn(T, B, m, requires_grad=True)
    h0 = torch.randn(B, n, requires_grad=True) if with_state else None
    c0 = torch.randn(B, n, requires_grad=True) if with_state else None
    return lstm, x, h0, c0


def _params(lstm):
    return [lstm.weight_ih_l0, lstm.weight_hh_l0, getattr(lstm, "bias_ih_l0", None),
            getattr(lstm, "bias_hh_l0", None)]


def _compare(fn, lstm, x, h0, c0, loss):
    """``fn``'s outputs and the gradients of ``loss(y, h_n, c_n)`` against torch.nn.LSTM."""
    hx = None if h0 is None else (h0.unsqueeze(0), c0.unsqueeze(0))
    y_ref, (h_ref, c_ref) = lstm(x, hx)
    y, h_n, c_n = fn(x, *_params(lstm), h0, c0)
    for got, want in ((y, y_ref), (h_n, h_ref[0]), (c_n, c_ref[0])):
        assert rel_err(got, want) <= TOL
    wrt = [t for t in (x, *lstm.parameters(), h0, c0) if t is not None]
    got = torch.autograd.grad(loss(y, h_n, c_n), wrt)
    want = torch.autograd.grad(loss(y_ref, h_ref[0], c_ref[0]), wrt)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= TOL


LOSSES = {
    "all": lambda y, h, c: y.square().sum() + h.sum() + c.sum(),
    "y only": lambda y, h, c: y.square().sum(),
    "c_n only": lambda y, h, c: c.sum(),
}


@pytest.mark.parametrize("loss", LOSSES, ids=str)
@pytest.mark.parametrize("T, B, m, n", [(1, 1, 1, 1), (7, 3, 4, 5), (12, 2, 9, 16)])
def test_equals_torch_lstm_outputs_and_gradients(T, B, m, n, loss):
    lstm, x, h0, c0 = _lstm_and_inputs(T, B, m, n)
    _compare(onednn_lstm, lstm, x, h0, c0, LOSSES[loss])


@pytest.mark.parametrize("with_state, bias", [(False, True), (True, False), (False, False)])
def test_zero_states_and_no_bias(with_state, bias):
    lstm, x, h0, c0 = _lstm_and_inputs(6, 2, 3, 4, with_state=with_state, bias=bias)
    _compare(onednn_lstm, lstm, x, h0, c0, LOSSES["all"])


def test_without_autograd():
    lstm, x, h0, c0 = _lstm_and_inputs(5, 2, 3, 4)
    with torch.no_grad():
        y, h_n, c_n = onednn_lstm(x, *_params(lstm), h0, c0)
        y_ref, (h_ref, c_ref) = lstm(x, (h0[None], c0[None]))
    assert y.grad_fn is None and rel_err(y, y_ref) <= TOL and rel_err(c_n, c_ref[0]) <= TOL


def test_opcheck():
    """Both ops; the backward also on a transposed (batch-first) x, whose gradient must
    still come back in the contiguous layout the fake promises."""
    lstm, x, h0, c0 = _lstm_and_inputs(4, 2, 3, 5)
    args = [x.detach(), *(p.detach() for p in _params(lstm)), h0.detach()[None], c0.detach()[None]]
    torch.library.opcheck(torch.ops.fastunitary.onednn_lstm, tuple(args))
    y, h_n, c_n = torch.ops.fastunitary.onednn_lstm(*args)
    grads = (torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n))
    backward = torch.ops.fastunitary.onednn_lstm_backward
    torch.library.opcheck(backward, (*args, *grads))
    args[0] = x.detach().transpose(0, 1).contiguous().transpose(0, 1)  # strides of batch first
    torch.library.opcheck(backward, (*args, *grads))
    got = backward(*args, *grads)
    assert all(g.is_contiguous() for g in got)
    assert got[3].data_ptr() != got[4].data_ptr()  # the two bias gradients, not aliased
    zero = backward(*args, None, None, None)  # no incoming gradient: zeros, as autograd's
    assert all(g.shape == a.shape and not g.any() for g, a in zip(zero, args))


def test_empty_batch_or_sequence_is_refused():
    lstm, _, _, _ = _lstm_and_inputs(1, 1, 3, 4)
    for shape in ((0, 2, 3), (4, 0, 3)):
        with pytest.raises(ValueError, match=r"x must have shape \(T, B, m\) with T, B >= 1"):
            onednn_lstm(torch.zeros(shape), *_params(lstm))


@pytest.mark.slow
def test_compiles_without_graph_breaks_fullgraph_or_not():
    """No data-dependent shape anywhere (the backward rebuilds oneDNN's workspace), so
    Dynamo keeps the op in the graph also without ``fullgraph``."""
    torch._dynamo.reset()
    lstm, x, h0, c0 = _lstm_and_inputs(6, 2, 3, 4)
    params = _params(lstm)  # as arguments: Dynamo refuses an nn.LSTM in the traced code

    def f(x, h0, c0, *params):
        y, h_n, c_n = onednn_lstm(x, *params, h0, c0)
        return y.square().sum() + c_n.sum()

    assert torch._dynamo.explain(f)(x, h0, c0, *params).graph_break_count == 0
    wrt = [x, h0, c0, *params]
    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(*wrt), wrt)
    want = torch.autograd.grad(f(*wrt), wrt)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= TOL


def test_supported_only_for_float32_cpu_tensors():
    assert onednn_lstm_supported(torch.zeros(2), torch.zeros(3))
    assert not onednn_lstm_supported(torch.zeros(2), torch.zeros(3, dtype=torch.float64))
    assert not onednn_lstm_supported(torch.zeros(2, device="meta"))
    with mkldnn_disabled():
        assert not onednn_lstm_supported(torch.zeros(2))


@pytest.mark.parametrize("how", ["eager create_graph", "torch.func grad of grad"])
def test_second_derivatives_equal_torch_lstm(how):
    """An input-gradient penalty differentiated in the weights: the op's create_graph path
    (autograd through the reference LSTM loop) against ``torch.nn.LSTM``'s own double
    backward, float32 (stated tolerance 1e-4 relative: two different computations)."""
    from torch.func import grad

    torch.manual_seed(0)
    lstm, x, h0, c0 = _lstm_and_inputs(6, 2, 3, 4)
    x, h0, c0 = x.detach(), h0.detach(), c0.detach()
    weights = [p.detach() for p in _params(lstm)]

    def penalty(forward, ws):
        def loss(x):
            return forward(x, ws).square().sum()
        if how == "eager create_graph":
            xr = x.clone().requires_grad_()
            (gx,) = torch.autograd.grad(loss(xr), xr, create_graph=True)
            return gx.square().sum()
        return grad(loss)(x).square().sum()

    def ours(x, ws):
        return onednn_lstm(x, *ws, h0, c0)[0]

    def torch_lstm(x, ws):
        return torch._VF.lstm(x, (h0[None], c0[None]), ws, True, 1, 0.0, False, False,
                              False)[0]

    if how == "eager create_graph":
        leaves = [w.clone().requires_grad_() for w in weights]
        got = torch.autograd.grad(penalty(ours, leaves), leaves)
    else:
        got = grad(lambda ws: penalty(ours, ws))(weights)
    with mkldnn_disabled():  # PyTorch's own LSTM double backward: its native kernels
        leaves = [w.clone().requires_grad_() for w in weights]
        want = torch.autograd.grad(penalty(torch_lstm, leaves), leaves)
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= 1e-4
