"""Behaviour shared by ScuRNN and ScoRNN (fastunitary/nn/_cayley_rnn.py), tested on both;
at the end, the dtype policy and the torch.nn.LSTM-only options of every module of
fastunitary.nn (fastunitary/nn/_base.py)."""

import copy
import io

import numpy as np
import pytest
import torch

import fastunitary.nn as fnn
from fastunitary import reference
from fastunitary.nn import ScoRNN, ScoRNNCell, ScuRNN, ScuRNNCell

from .conftest import DEVICES, rel_err

MODELS = [(ScuRNN, ScuRNNCell), (ScoRNN, ScoRNNCell)]
IDS = ["scurnn", "scornn"]


def width(cls, n):
    return 2 * n if cls in (ScuRNN, ScuRNNCell) else n


def oracle(cell, x, h0=None):
    """The layer straight from METHODS.md: per-step autograd on natural tensors."""
    W = cell.recurrent_matrix()
    u = cell.input_term(x)
    if cell.is_complex:
        n = cell.hidden_size
        u = torch.complex(u[..., :n], u[..., n:])
        h0 = None if h0 is None else torch.complex(h0[..., :n], h0[..., n:])
    h = reference.recurrence_autograd(u, W, cell.modrelu_bias, h0, "modrelu")
    return torch.cat([h.real, h.imag], -1) if h.is_complex() else h


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
@pytest.mark.parametrize("T, B", [(1, 1), (1, 5), (7, 1), (12, 3)])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
def test_shapes(cls, cell_cls, T, B, num_layers, batch_first):
    n, m = 5, 3
    rnn = cls(m, n, num_layers, batch_first=batch_first)
    x = torch.randn(B, T, m) if batch_first else torch.randn(T, B, m)
    out, h_n = rnn(x)
    d = width(cls, n)
    assert rnn.output_size == d
    assert out.shape == ((B, T, d) if batch_first else (T, B, d))
    assert h_n.shape == (num_layers, B, d)
    last = out[:, -1] if batch_first else out[-1]
    torch.testing.assert_close(h_n[-1], last)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_unbatched(cls, cell_cls):
    rnn = cls(3, 4, 2)
    x = torch.randn(6, 3)
    out, h_n = rnn(x)
    out_b, h_b = rnn(x.unsqueeze(1))
    torch.testing.assert_close(out, out_b.squeeze(1))
    torch.testing.assert_close(h_n, h_b.squeeze(1))
    out2, _ = rnn(x, h_n)  # an unbatched state is accepted back
    assert out2.shape == out.shape
    cell = cell_cls(3, 4)
    assert cell(x[0]).shape == (width(cls, 4),)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_oracle_and_cell_steps(cls, cell_cls, device):
    torch.manual_seed(0)
    rnn = cls(3, 6, 2, trainable_h0=True).to(device)
    x = torch.randn(9, 4, 3, device=device)
    out, h_n = rnn(x)
    # layer by layer, straight from the equations
    inp = x
    for cell in rnn.layers:
        inp = oracle(cell, inp, cell.h0.expand(4, -1))
    torch.testing.assert_close(out, inp, rtol=1e-5, atol=1e-5)
    # stepping the cells one input at a time gives the same states
    hs = [None] * 2
    for t in range(9):
        inp = x[t]
        for k, cell in enumerate(rnn.layers):
            hs[k] = cell(inp, hs[k])
            inp = hs[k]
        torch.testing.assert_close(inp, out[t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_h_n_continues_a_sequence(cls, cell_cls):
    rnn = cls(2, 5, 2)
    x = torch.randn(20, 3, 2)
    full, h_full = rnn(x)
    a, h_a = rnn(x[:8])
    b, h_b = rnn(x[8:], h_a)
    torch.testing.assert_close(torch.cat([a, b]), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_b, h_full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_state_dict_round_trip(cls, cell_cls):
    a = cls(3, 7, 2, trainable_h0=True)
    b = cls(3, 7, 2, trainable_h0=True)
    x = torch.randn(5, 2, 3)
    assert not torch.allclose(a(x)[0], b(x)[0])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=0)
    # also after the weights were cached in eval mode
    b.eval()
    with torch.no_grad():
        b(x)
        b.load_state_dict(cls(3, 7, 2, trainable_h0=True).state_dict())
        assert not torch.allclose(b(x)[0], a(x)[0])


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_stays_unitary_under_large_optimizer_steps(cls, cell_cls):
    """A is skew by construction, so W stays unitary whatever the optimizer does."""
    rnn = cls(3, 16)
    opt = torch.optim.Adam(rnn.param_groups(lr=1.0, lr_A=1.0, lr_D=1.0))
    for _ in range(20):
        out, _ = rnn(torch.randn(10, 4, 3))
        opt.zero_grad()
        out.square().sum().backward()
        opt.step()
    A = rnn.layers[0].skew_matrix()
    assert A.abs().max() > 5.0  # the steps were large
    torch.testing.assert_close(A, -A.mH, rtol=0, atol=0)
    W = rnn.recurrent_matrix()
    err = (W.mH @ W - torch.eye(16, dtype=W.dtype)).abs().max().item()
    assert err < 1e-5


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_param_groups_partition_parameters(cls, cell_cls):
    rnn = cls(3, 4, 2, trainable_h0=True)
    groups = rnn.param_groups(lr=1e-3, lr_A=1e-4, lr_D=2e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in rnn.parameters())
    by_name = {g["name"]: g for g in groups}
    assert by_name["A"]["lr"] == 1e-4 and by_name["other"]["lr"] == 1e-3
    a_ids = {id(p) for p in by_name["A"]["params"]}
    for cell in rnn.layers:
        assert id(cell.skew_re) in a_ids
    torch.optim.Adam(groups)  # usable as is


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_computed_once_and_cached_in_eval(cls, cell_cls, monkeypatch):
    rnn = cls(3, 4, 2)
    calls = []
    for cell in rnn.layers:
        orig = cell._compute_recurrent_weight
        monkeypatch.setattr(cell, "_compute_recurrent_weight",
                            lambda orig=orig: calls.append(1) or orig())
    x = torch.randn(30, 2, 3)
    rnn(x)
    assert len(calls) == 2  # once per layer per forward call, not per step
    rnn(x)
    assert len(calls) == 4  # training: recomputed every call
    rnn.eval()
    with torch.no_grad():
        y1 = rnn(x)[0]
        y2 = rnn(x)[0]
    assert len(calls) == 6  # eval + no_grad: second call reused the cache
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    with torch.no_grad():
        rnn.layers[0].skew_re.add_(0.1)  # an in-place update invalidates layer 0's entry
        y3 = rnn(x)[0]
    assert len(calls) == 7
    assert not torch.allclose(y3, y1)
    rnn(x)[0].sum().backward()  # eval with grad enabled: not cached, gradients flow
    assert len(calls) == 9 and rnn.layers[0].skew_re.grad is not None


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_sees_every_change_to_the_values(cls, cell_cls):
    """The cached W is reused only while its sources hold the same values, however they
    were changed: through ``.data`` (no version counter moves), ``Tensor.set_``, a NumPy
    view, a tracked in-place op, or while in training mode. ``clear_weight_cache`` only
    frees the entry."""
    x = torch.randn(6, 2, 3)
    rnn = cls(3, 4, 2).eval()
    cell = cell_cls(3, 4).eval()

    def check():
        torch.testing.assert_close(rnn(x)[0], copy.deepcopy(rnn).train()(x)[0], rtol=0, atol=0)
        torch.testing.assert_close(cell(x[0]), copy.deepcopy(cell).train()(x[0]), rtol=0, atol=0)

    with torch.no_grad():
        check()  # both cache W
        for change in (lambda p: p.data.mul_(3).add_(0.5),
                       lambda p: p.set_(p.detach() * 0.5),
                       lambda p: p.detach().numpy().__imul__(-1.0),
                       lambda p: p.mul_(2)):
            for p in (rnn.layers[1].skew_re, rnn.layers[0].skew_re, cell.skew_re):
                change(p)
            check()
        rnn.train()
        rnn.layers[0].skew_re.data.add_(0.5)
        rnn.eval()
        check()
    rnn.clear_weight_cache()
    assert all(c._weight_cache is None for c in rnn.layers)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_and_an_ema_swap(cls, cell_cls):
    """``torch_ema``'s ``average_parameters()`` validates with the averages by
    ``param.data.copy_``, which moves no version counter: the cache once kept the raw
    weights' W there (ScuRNN 0.48 off). Also a vector reused by ``vector_to_parameters``
    (same address, same version: 20 off). Both as those libraries do it, by hand."""
    rnn = cls(3, 4, 2).eval()
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        raw_out = rnn(x)[0]  # validation with the raw weights caches their W
        averages = [p.detach() * 0.5 + 0.1 for p in rnn.parameters()]
        stored = [p.detach().clone() for p in rnn.parameters()]
        for p, a in zip(rnn.parameters(), averages):  # ema.store(); ema.copy_to()
            p.data.copy_(a)
        ema_out = rnn(x)[0]
        torch.testing.assert_close(ema_out, copy.deepcopy(rnn).train()(x)[0], rtol=0, atol=0)
        for p, s in zip(rnn.parameters(), stored):  # ema.restore()
            p.data.copy_(s)
        torch.testing.assert_close(rnn(x)[0], raw_out, rtol=0, atol=0)
        vec = torch.nn.utils.parameters_to_vector(rnn.parameters())
        for trial in range(3):
            vec.add_(torch.randn_like(vec))  # one buffer, reused
            torch.nn.utils.vector_to_parameters(vec, rnn.parameters())
            torch.testing.assert_close(rnn(x)[0], copy.deepcopy(rnn).train()(x)[0],
                                       rtol=0, atol=0, msg=f"trial {trial}")


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_with_parameters_made_in_inference_mode(cls, cell_cls):
    """A model built (or loaded) under ``inference_mode`` has inference-tensor parameters,
    which have no version counter; run later under ``no_grad`` it works, as torch.nn.LSTM
    does, and a NaN source keeps matching its copy (bits, not numbers, are compared)."""
    with torch.inference_mode():
        rnn = cls(3, 4).eval()
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        first = rnn(x)[0]
        torch.testing.assert_close(rnn(x)[0], first, rtol=0, atol=0)
    nan_rnn = cls(3, 4).eval()
    with torch.no_grad():
        nan_rnn.layers[0].skew_re[0] = float("nan")
        nan_rnn(x)
        entry = nan_rnn.layers[0]._weight_cache
        nan_rnn(x)
        assert nan_rnn.layers[0]._weight_cache is entry  # reused, not rebuilt every call


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_sees_a_write_made_while_w_was_computed(cls, cell_cls, monkeypatch):
    """Another thread's optimizer step may land while this call computes W: the copy the
    cache compares with is taken before, so the next call sees the step. (Taken after, it
    paired the old W with the new values for good: 2.8 off in a two-thread run.) The
    write is made here by the computation itself."""
    rnn = cls(3, 4).eval()
    cell = rnn.layers[0]
    compute = type(cell)._compute_recurrent_weight

    def compute_then_step(self):
        weight = compute(self)
        with torch.no_grad():
            self.skew_re.add_(0.5)
        return weight

    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        monkeypatch.setattr(type(cell), "_compute_recurrent_weight", compute_then_step)
        rnn(x)
        monkeypatch.undo()
        torch.testing.assert_close(rnn(x)[0], copy.deepcopy(rnn).train()(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_off_on_meta_and_while_a_cuda_graph_is_captured(cls, cell_cls, monkeypatch):
    """A CUDA graph's replays must rebuild W from the parameters (a cached W would be
    baked into the graph), and meta tensors have no values to compare."""
    from fastunitary.nn import _base

    rnn = cls(3, 4).eval()
    x = torch.randn(5, 2, 3)
    monkeypatch.setattr(_base, "_capturing_cuda_graph", lambda sources: True)
    with torch.no_grad():
        rnn(x)
    assert rnn.layers[0]._weight_cache is None
    monkeypatch.undo()
    meta = cls(3, 4, device="meta").eval()
    with torch.no_grad():
        assert meta(torch.randn(5, 2, 3, device="meta"))[0].shape == (5, 2, rnn.state_size)
    assert meta.layers[0]._weight_cache is None


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_never_leaks_inference_tensors(cls, cell_cls):
    """Frozen A, eval, a run under inference_mode, then training of the rest still works."""
    rnn = cls(3, 4)
    for cell in rnn.layers:
        for p in (cell.skew_re, cell.skew_im, getattr(cell, "theta", None)):
            if p is not None:
                p.requires_grad_(False)
    rnn.eval()
    x = torch.randn(5, 2, 3)
    with torch.inference_mode():
        rnn(x)
    rnn(x)[0].sum().backward()
    assert rnn.layers[0].weight_ih.grad is not None


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_vmap_ensemble_in_eval(cls, cell_cls):
    """torch.func ensembles (stacked parameters under vmap) bypass the weight cache."""
    models = [cls(3, 4).eval() for _ in range(3)]
    params, buffers = torch.func.stack_module_state(models)
    x = torch.randn(5, 2, 3)

    def run(p, b):
        return torch.func.functional_call(models[0], (p, b), (x,))[0]

    with torch.no_grad():
        out = torch.vmap(run)(params, buffers)
        for k, m in enumerate(models):
            torch.testing.assert_close(out[k], m(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_trainable_h0(cls, cell_cls):
    rnn = cls(3, 4, trainable_h0=True)
    h0 = rnn.layers[0].h0
    assert h0.shape == (width(cls, 4),) and h0.abs().max() <= 0.01
    out, _ = rnn(torch.randn(5, 2, 3))
    out.sum().backward()
    assert h0.grad is not None and h0.grad.abs().sum() > 0
    # an explicit hx overrides it: with h0 zeroed, no hx gives what hx = 0 gave
    x = torch.randn(5, 2, 3)
    with_hx = rnn(x, torch.zeros(1, 2, width(cls, 4)))[0]
    assert not torch.allclose(rnn(x)[0], with_hx, rtol=0, atol=1e-7)
    with torch.no_grad():
        h0.zero_()
    torch.testing.assert_close(rnn(x)[0], with_hx, rtol=0, atol=0)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_gradcheck_cell_and_sequence_float64(cls, cell_cls):
    cell = cell_cls(2, 3, trainable_h0=True).double()
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, width(cls, 3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cell, (x, h))
    rnn = cls(2, 3, 2).double()
    xs = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(2, 2, width(cls, 3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rnn(a, b)[0], (xs, hx))
    # and the parameters, through the Cayley map, for one layer
    layer = rnn.layers[0]
    names = ["skew_re", "weight_ih", "modrelu_bias"] + (["skew_im", "theta"] if layer.is_complex else [])
    params = {k: getattr(layer, k).detach().clone().requires_grad_() for k in names}

    def f(*vals):
        return torch.func.functional_call(layer, dict(zip(names, vals)), (xs[0].detach(),))

    assert torch.autograd.gradcheck(f, tuple(params.values()))


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_dropout_between_layers(cls, cell_cls):
    rnn = cls(3, 4, 2, dropout=0.5)
    x = torch.randn(6, 2, 3)
    rnn.eval()
    torch.testing.assert_close(rnn(x)[0], rnn(x)[0])
    rnn.train()
    assert not torch.allclose(rnn(x)[0], rnn(x)[0])
    with pytest.warns(UserWarning, match="dropout"):
        cls(3, 4, 1, dropout=0.2)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_autocast_bfloat16(cls, cell_cls):
    rnn = cls(3, 4)
    x = torch.randn(6, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = rnn(x)
    assert out.dtype == torch.float32  # the state accumulates in float32
    # exactly the float32 recurrence of the bf16-rounded input term
    cell = rnn.layers[0]
    u = torch.nn.functional.linear(x.bfloat16(), cell.weight_ih.bfloat16(),
                                   cell.bias_ih.bfloat16()).float()
    from fastunitary.functional import recurrence_planes

    expected = recurrence_planes(u, cell._recurrent_weight(), cell.modrelu_bias, None,
                                 activation="modrelu", is_complex=cell.is_complex, backend="reference")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_deepcopy_and_repr(cls, cell_cls):
    rnn = cls(3, 4, 2, batch_first=True, trainable_h0=True)
    clone = copy.deepcopy(rnn)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(clone(x)[0], rnn(x)[0])
    assert "batch_first=True" in repr(rnn) and "num_layers=2" in repr(rnn)


def _bad_call(cls, x, hx=None, **kw):
    return lambda: cls(3, 4, 2, **kw)(x, hx)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_bad_input(cls, cell_cls):
    d = width(cls, 4)
    cases = [
        (_bad_call(cls, torch.randn(5, 2, 3, 1)), ValueError, r"input must have shape \(T, B, input_size\)"),
        (_bad_call(cls, torch.randn(5)), ValueError, r"input must have shape"),
        (_bad_call(cls, torch.randn(5, 2, 3, 1), batch_first=True), ValueError, r"\(B, T, input_size\)"),
        (_bad_call(cls, torch.randn(5, 2, 4)), ValueError, "input_size = 3"),
        (_bad_call(cls, torch.randn(5, 2, 3), torch.zeros(1, 2, d)), ValueError, rf"hx must have shape \(2, 2, {d}\)"),
        (_bad_call(cls, torch.randn(5, 2, 3), torch.zeros(2, 3, d)), ValueError, "num_layers, B"),
        (_bad_call(cls, torch.randint(0, 3, (5, 2, 3))), TypeError, "input must be a floating"),
        (_bad_call(cls, torch.randn(5, 2, 3, dtype=torch.complex64)), TypeError, "input must be a real"),
        (_bad_call(cls, torch.randn(5, 2, 3, dtype=torch.float64)), TypeError, "float64 but the module's parameters are torch.float32"),
        (_bad_call(cls, torch.randn(5, 2, 3, device="meta")), ValueError, "input is on meta"),
        (_bad_call(cls, torch.randn(5, 2, 3), torch.zeros(2, 2, d, device="meta")), ValueError, "hx is on meta"),
        (_bad_call(cls, torch.randn(0, 2, 3)), ValueError, "T >= 1"),
        (_bad_call(cls, torch.randn(5, 2, 3), torch.zeros(2, 2, d, dtype=torch.float64)), TypeError, "hx is torch.float64"),
        (lambda: cell_cls(3, 4)(torch.randn(2, 3, dtype=torch.float64)), TypeError,
         "input is torch.float64 but the module's parameters are torch.float32"),
        (lambda: cell_cls(3, 4)(torch.randn(2, 3), torch.zeros(2, d, dtype=torch.float64)), TypeError,
         "hx is torch.float64 but the module's parameters are torch.float32"),
        (lambda: cls(3, 0), ValueError, "hidden_size must be a positive int"),
        (lambda: cls(3, -1), ValueError, "hidden_size must be a positive int, got -1"),
        # the class called, not RecurrentCell.__init__ where **kwargs ends
        (lambda: cls(3, 4, foo=1), TypeError,
         rf"^{cls.__name__}\(\) got an unexpected keyword argument 'foo'$"),
        (lambda: cell_cls(3, 4, foo=1), TypeError,
         rf"^{cell_cls.__name__}\(\) got an unexpected keyword argument 'foo'$"),
        (lambda: cls(3, 4, num_layers=0), ValueError, "num_layers must be a positive int"),
        (lambda: cls(3, 4, backend="gpu"), ValueError, "backend must be one of"),
        (lambda: cls(3, 4, dropout=1.5), ValueError, r"dropout must be in \[0, 1\]"),
        (lambda: cell_cls(3, 4)(torch.randn(2, 5)), ValueError, "input_size = 3"),
        (lambda: cell_cls(3, 4)(torch.randn(2, 3), torch.zeros(3, d)), ValueError, rf"hx must have shape \(2, {d}\)"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_check_finite(cls, cell_cls, bad):
    x = torch.randn(5, 2, 3)
    x[2, 1, 0] = bad
    with pytest.raises(ValueError, match="input contains NaN or Inf"):
        cls(3, 4, check_finite=True)(x)
    with pytest.raises(ValueError, match="input contains NaN or Inf"):
        cell_cls(3, 4, check_finite=True)(x[2])
    hx = torch.zeros(1, 2, width(cls, 4))
    hx[0, 0, 0] = bad
    with pytest.raises(ValueError, match="hx contains NaN or Inf"):
        cls(3, 4, check_finite=True)(torch.randn(5, 2, 3), hx)
    out, _ = cls(3, 4)(x)  # off by default: no check, no sync
    assert not torch.isfinite(out).all()


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_triton_backend_matches_reference(cls, cell_cls):
    """Both kernels (Cayley map, fused recurrence) through a two-layer module: outputs and
    every parameter gradient equal the reference backend's (CUDA, or the interpreter)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rnn = cls(3, 5, 2, trainable_h0=True).to(device)
    x = torch.randn(7, 4, 3, device=device)
    results = {}
    for backend in ("triton", "reference"):
        rnn.backend = backend
        rnn.zero_grad()
        out, h_n = rnn(x)
        (out.square().sum() + h_n.sum()).backward()
        results[backend] = (out.detach(), {k: p.grad.clone() for k, p in rnn.named_parameters()})
    (out_t, g_t), (out_r, g_r) = results["triton"], results["reference"]
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-6)
    for k in g_r:
        assert rel_err(g_t[k], g_r[k]) < 1e-5, k


@pytest.mark.slow
@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_compile_fullgraph_matches_eager(cls, cell_cls):
    """One graph, no breaks, no complex values in it; outputs and gradients equal eager."""
    torch._dynamo.reset()
    rnn = cls(3, 8, 2, trainable_h0=True)
    x = torch.randn(16, 4, 3)
    explanation = torch._dynamo.explain(rnn)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    for node in explanation.graphs[0].graph.nodes:
        val = node.meta.get("example_value")
        if isinstance(val, torch.Tensor):
            assert not val.is_complex(), f"complex value in the compiled graph: {node}"
    compiled = torch.compile(rnn, fullgraph=True)
    out_c, h_c = compiled(x)
    (out_c.square().sum() + h_c.sum()).backward()
    grads_c = {k: p.grad.clone() for k, p in rnn.named_parameters()}
    rnn.zero_grad()
    out_e, h_e = rnn(x)
    (out_e.square().sum() + h_e.sum()).backward()
    # Inductor fuses and reorders the float32 arithmetic around the ops: rounding-level gaps
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h_c, h_e, rtol=1e-4, atol=1e-5)
    for k, p in rnn.named_parameters():
        assert rel_err(grads_c[k], p.grad) < 1e-5, k
    # a new sequence length reuses the graph with a dynamic T instead of unrolling it
    out_long, _ = compiled(torch.randn(40, 4, 3))
    assert out_long.shape == (40, 4, rnn.output_size)


def test_complex_hx_of_another_precision_names_its_complex_dtype():
    """Checked before the complex state becomes real planes (float64 for complex128)."""
    with pytest.raises(TypeError, match=r"hx is torch.complex128 but the module's parameters are "
                                        r"torch.float32 \(a complex hx must be torch.complex64\)"):
        ScuRNN(3, 4)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.complex128))
    with pytest.raises(TypeError, match="hx is torch.complex128"):
        ScuRNNCell(3, 4)(torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.complex128))
    # complex128 is the complex state of a float64 module, as planes of float64
    rnn, x = ScuRNN(3, 4).double(), torch.randn(5, 2, 3, dtype=torch.float64)
    h = torch.randn(1, 2, 4, dtype=torch.complex128)
    torch.testing.assert_close(rnn(x, h)[0], rnn(x, torch.cat([h.real, h.imag], -1))[0],
                               rtol=0, atol=0)
    torch._dynamo.reset()  # and the check compiles without a graph break
    compiled = torch.compile(rnn, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, h)[0], rnn(x, h)[0], rtol=0, atol=0)


def test_autocast_takes_its_own_dtype_for_hx_but_not_float64():
    """A float64 hx under bf16 autocast would turn the whole recurrence float64."""
    rnn, x = ScoRNN(3, 4), torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rnn(x, torch.zeros(1, 2, 4, dtype=torch.bfloat16))[0].dtype == torch.float32
        with pytest.raises(TypeError, match="hx is torch.float64"):
            rnn(x, torch.zeros(1, 2, 4, dtype=torch.float64))
        with pytest.raises(TypeError, match="input is torch.float64"):
            rnn(x.double())


def test_eval_twice_keeps_the_cached_weight():
    rnn = ScoRNN(3, 4).eval()
    with torch.no_grad():
        rnn(torch.randn(5, 2, 3))
        cached = rnn.layers[0]._weight_cache
        rnn.eval()
        assert cached is not None and rnn.layers[0]._weight_cache is cached


def test_dropout_one_is_accepted_as_in_torch():
    rnn = ScoRNN(3, 4, 2, dropout=1.0)
    assert rnn.dropout == 1.0 and torch.nn.LSTM(3, 4, 2, dropout=1.0).dropout == 1.0
    out, _ = rnn(torch.randn(5, 2, 3))  # training: layer 1 sees zeros
    torch.testing.assert_close(out, rnn.layers[1].run_sequence(torch.zeros(5, 2, 4)))


# -- every module of fastunitary.nn ---------------------------------------------------------
ALL_MODULES = sorted(fnn.__all__)
STACKED = [name for name in ALL_MODULES if not name.endswith("Cell")]


def _make(name, num_layers=None, **kwargs):
    """``name`` with input_size 3, hidden 4 (ENRNN: 3 + 2), ``num_layers`` if stacked."""
    sizes = (3, 3, 2) if name.startswith("ENRNN") else (3, 4)
    return getattr(fnn, name)(*sizes, *(() if num_layers is None else (num_layers,)), **kwargs)


def _run(model, x):
    out = model(x)
    return out if torch.is_tensor(out) else out[0]


@pytest.mark.parametrize("name", ALL_MODULES)
def test_autocast_bfloat16_forward_and_backward(name):
    """The supported route to bf16 compute: float32 parameters under autocast."""
    model = _make(name)
    x = torch.randn(2, 3) if name.endswith("Cell") else torch.randn(6, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _run(model, x)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ALL_MODULES)
def test_half_precision_parameters_are_refused_clearly(name, dtype):
    """Parameters are float32 (or float64): a .bfloat16()/.half() module raises at the
    call, pointing to autocast, instead of crashing inside an op or running in float32."""
    models = [_make(name)] if name.endswith("Cell") else [_make(name, 1), _make(name, 2)]
    x = torch.randn(2, 3) if name.endswith("Cell") else torch.randn(6, 2, 3)
    for model in models:
        with pytest.raises(TypeError, match=rf"the module's parameters are {dtype}; keep them "
                                            r"in float32 \(or float64\) and run under torch.autocast"):
            _run(model.to(dtype), x.to(dtype))
    _run(_make(name).double(), x.double())  # float64 modules are supported


@pytest.mark.parametrize("name", STACKED)
def test_bf16_state_accepted_under_autocast(name):
    """Under autocast every module takes a bf16 hx, as torch.nn.LSTM does."""
    model = _make(name, 2)
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        _, h_n = model(x)
    hx = tuple(h.bfloat16() for h in h_n) if isinstance(h_n, tuple) else h_n.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = model(x, hx)
    assert out.dtype == torch.float32
    with pytest.raises(TypeError, match="is torch.bfloat16 but the module's parameters are torch.float32"):
        model(x, hx)  # outside autocast: refused


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL_MODULES)
def test_device_and_dtype_keywords_as_torch_factory_kwargs(name, device):
    """``device=``/``dtype=`` as in ``torch.nn.LSTM(..., device=, dtype=)``: the module is
    initialized as without them and then moved, so one seed gives the same weights."""
    torch.manual_seed(0)
    model = _make(name, device=device, dtype=torch.float64)
    torch.manual_seed(0)
    moved = _make(name).to(device, torch.float64)
    got, want = model.state_dict(), moved.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].device == want[key].device and got[key].dtype == want[key].dtype, key
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    x = torch.randn(2, 3) if name.endswith("Cell") else torch.randn(6, 2, 3)
    out = _run(model, x.to(device, torch.float64))
    assert out.dtype == torch.float64 and out.device.type == device
    # torch's defaults, given explicitly
    default = _make(name, device=None, dtype=None)
    assert {p.dtype for p in default.parameters()} == {torch.float32}


@pytest.mark.parametrize("name", ALL_MODULES)
def test_device_meta_then_materialized(name):
    """The deferred-initialization routes of PyTorch: a module built on the meta device,
    then given real tensors by ``load_state_dict(assign=True)``, or by ``to_empty`` and
    either ``load_state_dict`` or ``reset_parameters``, computes what the original does."""
    model = _make(name, device="meta")
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    x = torch.randn(2, 3) if name.endswith("Cell") else torch.randn(6, 2, 3)
    source = _make(name)
    want = _run(source, x)

    assigned = _make(name, device="meta")
    assigned.load_state_dict(source.state_dict(), assign=True)
    torch.testing.assert_close(_run(assigned, x), want, rtol=0, atol=0)

    emptied = _make(name, device="meta").to_empty(device="cpu")
    emptied.load_state_dict(source.state_dict())
    torch.testing.assert_close(_run(emptied, x), want, rtol=0, atol=0)

    torch.manual_seed(7)
    fresh = _make(name)
    reset = _make(name, device="meta").to_empty(device="cpu")
    torch.manual_seed(7)
    reset.reset_parameters()
    for (key, got), want_t in zip(reset.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(got, want_t, rtol=0, atol=0, msg=key)


def test_device_keyword_builds_on_cpu_whatever_the_default_device():
    with torch.device("meta"):  # as torch.nn.LSTM: the keyword wins over the context
        model = ScoRNN(3, 4, device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_a_user_mixin_before_a_library_class_is_moved_too():
    class Extra(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.extra = torch.nn.Linear(2, 2)

    class Mixed(Extra, ScoRNN):
        pass

    model = Mixed(3, 4, dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.complex64])
@pytest.mark.parametrize("name", ALL_MODULES)
def test_unsupported_dtype_keyword_is_refused_at_construction(name, dtype):
    with pytest.raises(TypeError, match=rf"the module's parameters are {dtype}; keep them in "
                                        r"float32 \(or float64\) and run under torch.autocast"):
        _make(name, dtype=dtype)
    with pytest.raises(TypeError, match=r"dtype must be a torch.dtype \(torch.float32 or "
                                        r"torch.float64\), got 'float64'"):
        _make(name, dtype="float64")


def test_a_subclass_may_take_dtype_itself():
    class Tagged(ScoRNN):
        def __init__(self, input_size, hidden_size, dtype="tag"):
            super().__init__(input_size, hidden_size)
            self.tag = dtype

    model = Tagged(3, 4, dtype=torch.float64)
    assert model.tag is torch.float64 and model.layers[0].weight_ih.dtype == torch.float32


#: the stacked modules that are LSTMs, and so take torch.nn.LSTM's proj_size
PROJECTING = ["AdamLSTM", "MomentumLSTM", "NesterovLSTM", "RMSPropLSTM"]


@pytest.mark.parametrize("name", STACKED)
def test_torch_lstm_options_we_lack_are_named(name):
    if name in PROJECTING:  # taken as torch.nn.LSTM takes it
        assert _run(_make(name, proj_size=2), torch.randn(6, 2, 3)).shape == (6, 2, 2)
    else:
        with pytest.raises(NotImplementedError, match=rf"^{name} has no proj_size option"):
            _make(name, proj_size=2)
    # torch.nn.LSTM's defaults are accepted, so code written for it runs unchanged
    model = _make(name, bidirectional=False, proj_size=0)
    assert _run(model, torch.randn(6, 2, 3)).shape[:2] == (6, 2)


@pytest.mark.parametrize("name", STACKED)
def test_the_one_layer_dropout_warning_names_the_callers_line(name):
    """Whatever the module's depth of constructors, the warning points at the user's code
    (so Python's once-per-location filter shows it for each place that builds one)."""
    with pytest.warns(UserWarning, match="dropout acts between layers") as caught:
        _make(name, 1, dropout=0.5)
    assert caught[0].filename == __file__


@pytest.mark.parametrize("name", STACKED)
def test_flatten_parameters_is_there_for_torch_lstm_code(name):
    model = _make(name)
    x = torch.randn(6, 2, 3)
    before = _run(model, x)
    model.flatten_parameters()  # torch.nn.LSTM code calls it, e.g. after DataParallel
    torch.testing.assert_close(_run(model, x), before, rtol=0, atol=0)


def test_a_subclass_may_take_a_torch_only_option_itself():
    class Projected(ScoRNN):
        def __init__(self, input_size, hidden_size, proj_size=0):
            super().__init__(input_size, hidden_size)
            self.proj = torch.nn.Linear(hidden_size, proj_size) if proj_size else None

    assert Projected(3, 4, proj_size=2).proj.out_features == 2  # its own option, kept

    class Plain(ScoRNN):
        def __init__(self, input_size, hidden_size, **kwargs):
            super().__init__(input_size, hidden_size, **kwargs)

    with pytest.raises(NotImplementedError, match="Plain has no proj_size option"):
        Plain(3, 4, proj_size=2)


@pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated")
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("name", ["ScuRNN", "ScoRNN", "ENRNN"])
def test_hooks_on_a_layers_cell_run(name):
    """The stacked module calls each cell through ``__call__``: hooks on a cell run, so a
    hook-based reparametrization (``torch.nn.utils.weight_norm``, pruning) takes effect.
    It once called ``run_sequence`` directly and the hooks never ran (weight_norm's gain
    doubled: ScuRNN off by 5.1, silently; pruning kept its first masked weight)."""
    from torch.nn.utils import prune

    model = _make(name, num_layers=2, bidirectional=True).eval()
    x = torch.randn(7, 2, 3)
    seen = []
    model.layers_reverse[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    model.layers[0].register_full_backward_hook(lambda m, gin, gout: seen.append("backward"))
    cell, pruned = model.layers[0], model.layers[1]
    torch.nn.utils.weight_norm(cell, "weight_ih")
    prune.random_unstructured(pruned, "weight_ih", amount=0.5)
    with torch.no_grad():
        cell.weight_ih_g.mul_(2.0)
        pruned.weight_ih_orig.mul_(3.0)  # the pre-hook recomputes weight_ih from it
    got = _run(model, x)
    got.sum().backward()
    # layer 1 reads both directions of layer 0: output_size features
    assert seen == [torch.Size([7, 2, model.output_size]), "backward"]
    folded = _make(name, num_layers=2, bidirectional=True).eval()
    state = {k: v for k, v in model.state_dict().items() if "weight_ih_" not in k}
    state["layers.0.weight_ih"] = torch._weight_norm(cell.weight_ih_v, cell.weight_ih_g, 0)
    state["layers.1.weight_ih"] = pruned.weight_ih_orig * pruned.weight_ih_mask
    folded.load_state_dict(state)
    torch.testing.assert_close(got, _run(folded, x), rtol=1e-6, atol=1e-6)
    # after .double() the hooks' weight_ih is float64 only once they run: the input
    # checks compare with a registered parameter, not with it
    # (folded's weight_ih was rounded to float32 before it became float64)
    model.double(), folded.double()
    torch.testing.assert_close(_run(model, x.double()), _run(folded, x.double()),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("name", STACKED)
def test_activation_checkpointing(name, use_reentrant):
    """``torch.utils.checkpoint`` (PyTorch recommends ``use_reentrant=False``): gradients
    equal a plain backward's. The non-reentrant form lets each saved tensor be unpacked
    once; the ops' backward read them twice and raised until the unpacked tensors were
    shared (``_dispatch._UnpackedContext``)."""
    from torch.utils.checkpoint import checkpoint

    model = _make(name, num_layers=2)
    x = torch.randn(6, 2, 3, requires_grad=True)
    _run(model, x).square().sum().backward()
    want = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    checkpoint(lambda t: _run(model, t), x, use_reentrant=use_reentrant).square().sum().backward()
    got = [x.grad] + [p.grad for p in model.parameters()]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore")  # torch.jit.trace is deprecated; its shape warnings
@pytest.mark.parametrize("name", STACKED)
def test_jit_trace_records_the_weights_from_the_parameters(name):
    """``torch.jit.trace`` (deprecated by PyTorch, still in deployment code), run as it
    usually is, in evaluation under ``no_grad`` after the model has been called: the eval
    weight cache must not hand the tracer W as a tensor, which the trace would keep as a
    constant (ScuRNN's traced output was 1.2 off once the parameters changed). The traced
    program follows its parameters, runs other lengths and batches, and survives
    ``torch.jit.save``/``load``."""
    model = _make(name, num_layers=2).eval()
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        model(x)  # an eval call fills the cache, as in a deployment script
        traced = torch.jit.trace(model, (x,), check_trace=False)
        for p in model.parameters():  # the traced module shares them
            p.add_(0.1 * torch.randn_like(p))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        for t, b in [(5, 2), (9, 3), (1, 1)]:
            x = torch.randn(t, b, 3)
            want = _run(copy.deepcopy(model), x)  # a fresh copy has no cache
            torch.testing.assert_close(_run(traced, x), want, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(_run(loaded, x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", STACKED)
def test_torch_export_with_dynamic_batch_and_length(name):
    """``torch.export`` with batch and length dynamic from 1 (two layers, bidirectional,
    batch first, a given ``hx``; the LSTMs with ``proj_size``): the exported program, saved
    and loaded, gives the module's output and states on shapes other than the traced one."""
    from torch.export import Dim

    kw = dict(num_layers=2, bidirectional=True, batch_first=True)
    if name in PROJECTING:
        kw["proj_size"] = 2
    if name == "SBORNN":
        kw["method"] = "gd"
    model = _make(name, **kw).eval()

    def initial_state(B):
        with torch.no_grad():
            _, h_n = model(torch.randn(B, 2, 3))
        return tuple(torch.randn_like(h) for h in h_n) if isinstance(h_n, tuple) else torch.randn_like(h_n)

    B, T = Dim("B", min=1), Dim("T", min=1)
    hx = initial_state(2)
    hx_dims = tuple({1: B} for _ in hx) if isinstance(hx, tuple) else {1: B}
    program = torch.export.export(model, (torch.randn(2, 6, 3), hx),
                                  dynamic_shapes={"input": {0: B, 1: T}, "hx": hx_dims})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    for b, t in [(5, 11), (1, 1), (1, 7), (3, 1)]:
        x, hx = torch.randn(b, t, 3), initial_state(b)
        got, want = loaded(x, hx), model(x, hx)
        torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
        states = zip(*(s if isinstance(s, tuple) else (s,) for s in (got[1], want[1])))
        for g, w in states:
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ScuRNN", "ENRNN", "AdamLSTM"])
def test_aot_inductor_package_of_an_exported_module(name, tmp_path):
    """AOTInductor compiles the exported program around the library's ops (the Cayley map,
    the spectral radius, the recurrences, the scans) into a package that, loaded again,
    gives the module's output at shapes other than the traced one."""
    from torch.export import Dim

    model = _make(name, batch_first=True).eval()
    B, T = Dim("B", min=1), Dim("T", min=1)
    program = torch.export.export(model, (torch.randn(2, 6, 3),),
                                  dynamic_shapes={"input": {0: B, 1: T}})
    path = torch._inductor.aoti_compile_and_package(program,
                                                    package_path=str(tmp_path / "model.pt2"))
    loaded = torch._inductor.aoti_load_package(path)
    for b, t in [(5, 11), (1, 1)]:
        x = torch.randn(b, t, 3)
        torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL_MODULES if n.endswith("Cell")])
def test_torch_export_of_a_cell_with_dynamic_batch(name):
    from torch.export import Dim

    cell = _make(name).eval()
    h = cell(torch.randn(2, 3))
    B = Dim("B", min=1)
    program = torch.export.export(cell, (torch.randn(2, 3), h),
                                  dynamic_shapes={"input": {0: B}, "hx": {0: B}})
    for b in (1, 5):
        x, hx = torch.randn(b, 3), torch.randn(b, h.shape[1])
        torch.testing.assert_close(program.module()(x, hx), cell(x, hx), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_misses_fresh_tensors_at_a_reused_address(cls, cell_cls):
    """Candidate parameters through functional_call are new tensors at version 0, which the
    allocator may place where a freed candidate was. The cache once keyed on (address,
    version) alone and returned the previous candidate's W. Here the reuse is certain:
    each candidate is a new tensor over the same NumPy buffers, refilled."""
    rnn = cls(3, 4).eval()
    reference_rnn = copy.deepcopy(rnn).train()  # training mode never caches
    x = torch.randn(5, 2, 3)
    buffers = {n: p.detach().numpy().copy() for n, p in rnn.named_parameters()}
    with torch.no_grad():
        for trial in range(3):
            for buffer in buffers.values():
                buffer[...] = np.random.default_rng(trial).standard_normal(buffer.shape)
            candidate = {n: torch.from_numpy(b) for n, b in buffers.items()}
            got = torch.func.functional_call(rnn, candidate, (x,))[0]
            want = torch.func.functional_call(reference_rnn, candidate, (x,))[0]
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"trial {trial}")


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
def test_weight_cache_off_for_parameters_in_shared_memory(cls, cell_cls):
    """After ``share_memory()`` other processes (Hogwild workers, a trainer beside this
    evaluator) write the parameters, and no version counter here moves: an evaluator kept
    the W of its first call (outputs off by 1.3 after three Adam steps of a worker). Such
    parameters are never cached (the values would change under every check). The write
    here goes through a NumPy view of the shared storage, as another process's would."""
    rnn = cls(3, 4, 2).eval().share_memory()
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        rnn(x)
        for p in rnn.parameters():
            p.detach().numpy()[...] *= 1.5
        fresh = copy.deepcopy(rnn).train()  # training mode never caches
        torch.testing.assert_close(rnn(x)[0], fresh(x)[0], rtol=0, atol=0)
    assert all(cell._weight_cache is None for cell in rnn.layers)


@pytest.mark.parametrize("cls, trainable_h0", [(ScoRNN, False), (ScoRNN, True),
                                               (ScuRNN, True)])
def test_zero_input_prefix_from_the_zero_state_trains(cls, trainable_h0):
    """Left padding (20 zero steps) before the data, modReLU biases > 0: the README's
    claims. The real state is safe with the zero h0 (its modReLU gradient is 1 at z = 0;
    it was 1e4 a step, NaN here); the complex one needs trainable_h0 (with the zero h0 its
    gain at z = 0 is the map's own, 1 + b / 1e-6)."""
    torch.manual_seed(0)
    rnn = cls(3, 8, trainable_h0=trainable_h0)
    with torch.no_grad():
        rnn.layers[0].modrelu_bias.fill_(0.01)
    x = torch.cat([torch.zeros(20, 2, 3), torch.randn(5, 2, 3)])
    out, _ = rnn(x)
    out[-1].sum().backward()
    for name, p in rnn.named_parameters():
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() < 1e3, name


@pytest.mark.parametrize("cls, cell_cls", MODELS, ids=IDS)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_attributes_that_code_reads(cls, cell_cls, bias):
    """Code written for torch.nn.LSTM reads these to size its own tensors."""
    rnn = cls(3, 4, 2, bias=bias)
    lstm = torch.nn.LSTM(3, 4, 2, bias=bias)
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size"):
        assert getattr(rnn, name) == getattr(lstm, name), name
