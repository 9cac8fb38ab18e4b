"""Input layouts and directions of the stacked modules (fastunitary/nn/_sequence.py and the
stacks that use it): PackedSequence input against each sequence run on its own, the
backward direction of a bidirectional module against a forward module on reversed input,
and both against torch.nn.LSTM / torch.nn.RNN."""

import re

import pytest
import torch
from torch.nn.utils.rnn import (PackedSequence, pack_padded_sequence, pack_sequence,
                                pad_packed_sequence)

import fastunitary as fu
import fastunitary.nn as fnn
from fastunitary.nn._sequence import PackedIndex

from .conftest import DEVICES, rel_err

STACKED = sorted(name for name in fnn.__all__ if not name.endswith("Cell"))
LENGTHS = [3, 7, 1, 5, 7]  # unsorted, with a tie and a length-1 sequence


def _make(name, **kwargs):
    """``name`` with input_size 3, hidden 4 (ENRNN: 3 + 2), two layers; SBORNN in "gd"."""
    sizes = (3, 3, 2) if name == "ENRNN" else (3, 4)
    if name == "SBORNN":
        kwargs.setdefault("method", "gd")
    kwargs.setdefault("num_layers", 2)
    return getattr(fnn, name)(*sizes, **kwargs)


def _states(s):
    return s if isinstance(s, tuple) else (s,)


def _random_hx(model, B, device):
    """A random initial state of ``model``'s shape for batch ``B``."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        _, h_n = model(torch.randn(2, B, 3, device=device, dtype=dtype))
    hx = tuple(torch.randn_like(h) for h in _states(h_n))
    return hx if isinstance(h_n, tuple) else hx[0]


def _select(hx, b):
    return None if hx is None else (
        tuple(h[:, b:b + 1] for h in hx) if isinstance(hx, tuple) else hx[:, b:b + 1])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", STACKED)
def test_packed_equals_each_sequence_on_its_own(name, device, with_hx, enforce_sorted,
                                                bidirectional):
    """Output, final states and gradients of a packed batch equal those of each sequence run
    alone; ``hx`` and ``h_n`` are in the batch's original order, as for torch.nn.LSTM. A
    bidirectional module's backward direction starts at each sequence's own end. In
    float64: the batch and the single sequences sum in different orders, which float32
    gradients (ENRNN's above all) do not survive at a tolerance that would still catch a
    bug."""
    model = _make(name, bidirectional=bidirectional, dtype=torch.float64).to(device)
    lengths = sorted(LENGTHS, reverse=True) if enforce_sorted else LENGTHS
    B, T = len(lengths), max(lengths)
    x = torch.randn(T, B, 3, device=device, dtype=torch.float64)
    hx = _random_hx(model, B, device) if with_hx else None
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)

    out, h_n = model(packed, hx)
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    for got, given in ((out.sorted_indices, packed.sorted_indices),
                       (out.unsorted_indices, packed.unsorted_indices)):
        assert (got is None and given is None) or torch.equal(got, given)
    padded, got_lengths = pad_packed_sequence(out)
    assert got_lengths.tolist() == lengths
    with torch.no_grad():  # the route without autograd (MomentumLSTM: PyTorch's, on CPU)
        out_ng, h_ng = model(packed, hx)
    torch.testing.assert_close(out_ng.data, out.data, rtol=1e-10, atol=1e-10)
    for got, want in zip(_states(h_ng), _states(h_n)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    (out.data.square().sum() + sum(h.square().sum() for h in _states(h_n))).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}

    model.zero_grad()
    loss = 0
    for b, L in enumerate(lengths):
        want_out, want_h = model(x[:L, b:b + 1], _select(hx, b))
        torch.testing.assert_close(padded[:L, b], want_out[:, 0], rtol=1e-10, atol=1e-10)
        for got, want in zip(_states(h_n), _states(want_h)):
            torch.testing.assert_close(got[:, b], want[:, 0], rtol=1e-10, atol=1e-10)
        loss = loss + want_out.square().sum() + sum(h.square().sum() for h in _states(want_h))
    loss.backward()
    for k, p in model.named_parameters():
        assert rel_err(grads[k], p.grad) < 1e-10, k


@pytest.mark.parametrize("packed_input", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_momentum_lstm_matches_torch_lstm(device, bidirectional, packed_input):
    """``MomentumLSTM(mu=0, step=1)`` is an LSTM: with torch.nn.LSTM's weights (its state
    dict, bidirectional names included) it gives torch.nn.LSTM's output and final states,
    on a padded or a packed batch."""
    lstm = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=bidirectional).to(device)
    ours = fnn.MomentumLSTM(3, 6, num_layers=2, mu=0.0, step=1.0,
                            bidirectional=bidirectional).to(device)
    ours.load_state_dict(lstm.state_dict())
    seqs = [torch.randn(L, 3, device=device) for L in LENGTHS]
    batch = (pack_sequence(seqs, enforce_sorted=False) if packed_input
             else torch.randn(7, len(seqs), 3, device=device))
    D = 2 if bidirectional else 1
    hx = tuple(torch.randn(2 * D, len(seqs), 6, device=device) for _ in range(2))
    # cuDNN's LSTM runs TF32 by default; the comparison needs IEEE float32 on both sides
    with torch.backends.cudnn.flags(allow_tf32=False):
        want_out, (want_h, want_c) = lstm(batch, hx)
    # with autograd the library's op runs; without it, on the CPU, PyTorch's LSTM
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out, (h_n, c_n) = ours(batch, hx)
        got, want = (out.data, want_out.data) if packed_input else (out, want_out)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(h_n, want_h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c_n, want_c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("packed_input", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_bidirectional_momentum_rnn_matches_torch_rnn(device, packed_input):
    """``MomentumRNN(mu=0, step=1)`` is ``torch.nn.RNN``, bidirectional too."""
    rnn = torch.nn.RNN(3, 6, num_layers=2, bidirectional=True).to(device)
    ours = fnn.MomentumRNN(3, 6, num_layers=2, mu=0.0, step=1.0, bidirectional=True).to(device)
    ours.load_state_dict(rnn.state_dict())
    seqs = [torch.randn(L, 3, device=device) for L in LENGTHS]
    batch = (pack_sequence(seqs, enforce_sorted=False) if packed_input
             else torch.randn(7, len(seqs), 3, device=device))
    hx = torch.randn(4, len(seqs), 6, device=device)
    with torch.backends.cudnn.flags(allow_tf32=False):
        want_out, want_h = rnn(batch, hx)
    out, h_n = ours(batch, hx)
    got, want = (out.data, want_out.data) if packed_input else (out, want_out)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_n, want_h, rtol=1e-5, atol=1e-5)


def _layer_state(state: dict, k: int, reverse: bool) -> dict:
    """Layer ``k``'s (``reverse``: backward direction's) entries of a bidirectional
    module's state dict, named as in a one-layer unidirectional module: ``layers.k.x`` and
    ``layers_reverse.k.x`` become ``layers.0.x``, ``weight_ih_lk(_reverse)`` and
    ``mu_lk(_reverse)`` become ``..._l0``; entries of neither kind (shared momentum
    coefficients) are kept."""
    out = {}
    for key, value in state.items():
        stacked = re.fullmatch(r"(layers|layers_reverse)\.(\d+)\.(.*)", key)
        torch_style = re.fullmatch(r"(.*)_l(\d+)(_reverse)?", key)
        if stacked:
            if int(stacked[2]) == k and (stacked[1] == "layers_reverse") == reverse:
                out[f"layers.0.{stacked[3]}"] = value
        elif torch_style:
            if int(torch_style[2]) == k and bool(torch_style[3]) == reverse:
                out[f"{torch_style[1]}_l0"] = value
        else:
            out[key] = value
    return out


#: every stacked module, plus variants with state beyond h (SBO-RNN's m) or coefficients
#: that both directions share (learnable momentum)
VARIANTS = [(name, {}) for name in STACKED] + [
    ("SBORNN", {"method": "heavy_ball"}), ("MomentumLSTM", {"learnable": True})]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name, options", VARIANTS,
                         ids=[n + "".join(f"-{k}={v}" for k, v in o.items()) for n, o in VARIANTS])
def test_bidirectional_is_forward_and_backward_modules_layer_by_layer(name, options, batch_first):
    """Three layers, a given ``hx``: each layer's output is ``[forward(x), flip(backward(
    flip(x)))]``, the two being one-layer unidirectional modules that hold that layer's two
    sets of weights and their own entries of ``hx`` (at ``2 k`` and ``2 k + 1``, torch's
    order); the next layer reads that output, and ``h_n`` lists the final states in the
    same order. The input's gradient and every weight's agree too (a coefficient both
    directions share gets the sum of theirs)."""
    L, B, T = 3, 2, 7
    bi = _make(name, num_layers=L, bidirectional=True, batch_first=batch_first, **options)
    hx = _random_hx(bi, B, "cpu")
    t = 1 if batch_first else 0
    x = torch.randn(B, T, 3) if batch_first else torch.randn(T, B, 3)
    x_bi = x.clone().requires_grad_()
    out, h_n = bi(x_bi, hx)
    (out.square().sum() + sum(h.square().sum() for h in _states(h_n))).backward()

    cls, sizes = type(bi), ((3, 2) if name == "ENRNN" else (4,))
    options = {"method": "gd", **options} if name == "SBORNN" else options
    x_parts = x.clone().requires_grad_()
    inp, finals, parts = x_parts, [], {}
    for k in range(L):
        halves = []
        for reverse in (False, True):
            one = cls(inp.shape[-1], *sizes, num_layers=1, batch_first=batch_first, **options)
            one.load_state_dict(_layer_state(bi.state_dict(), k, reverse))
            i = 2 * k + int(reverse)
            h0 = (tuple(h[i:i + 1] for h in hx) if isinstance(hx, tuple) else hx[i:i + 1])
            o, h = one(inp.flip(t) if reverse else inp, h0)
            halves.append(o.flip(t) if reverse else o)
            finals.append(_states(h))
            parts[(k, reverse)] = one
        inp = torch.cat(halves, -1)
    want_h = [torch.cat(f) for f in zip(*finals)]
    torch.testing.assert_close(out, inp, rtol=1e-6, atol=1e-6)
    for got, want in zip(_states(h_n), want_h):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    (inp.square().sum() + sum(h.square().sum() for h in want_h)).backward()
    torch.testing.assert_close(x_bi.grad, x_parts.grad, rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in bi.named_parameters()}
    for (k, reverse), one in parts.items():
        own = {n: p for n, p in one.named_parameters() if not n.startswith("momentum.")}
        mine = {n: g for n, g in _layer_state(grads, k, reverse).items()
                if not n.startswith("momentum.")}
        assert mine.keys() == own.keys()
        for n, g in mine.items():
            assert rel_err(g, own[n].grad) < 1e-5, (k, reverse, n)
    for n, g in grads.items():
        if n.startswith("momentum."):
            shared = sum(dict(one.named_parameters())[n].grad for one in parts.values())
            assert rel_err(g, shared) < 1e-5, n


@pytest.mark.parametrize("name", STACKED)
def test_bidirectional_state_shape_is_checked(name):
    model = _make(name, bidirectional=True)
    with pytest.raises(ValueError, match=r"must have shape \(4, 2, .*\(2 \* num_layers, B, "):
        model(torch.randn(5, 2, 3), _random_hx(_make(name), 2, "cpu"))  # (2, B, ...): one direction
    unidirectional = _make(name)
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional module"):
        unidirectional.recurrent_matrix(0, reverse=True)
    want = (model.layers_reverse[1].recurrent_matrix() if hasattr(model, "layers_reverse")
            else model.weight_hh_l1_reverse)
    torch.testing.assert_close(model.recurrent_matrix(-1, reverse=True), want, rtol=0, atol=0)
    assert "bidirectional=True" in repr(model)


@pytest.mark.parametrize("name", STACKED)
def test_batch_first_does_not_apply_to_packed_input(name):
    """As torch.nn.LSTM: a PackedSequence carries its own layout, whatever ``batch_first``."""
    x = torch.randn(5, 7, 3)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True,
                                  enforce_sorted=False)
    torch.manual_seed(0)
    first = _make(name, batch_first=True)
    torch.manual_seed(0)
    second = _make(name)
    got, want = first(packed), second(packed)
    torch.testing.assert_close(got[0].data, want[0].data, rtol=0, atol=0)


def test_sbornn_momentum_methods_refuse_packed_input():
    packed = pack_sequence([torch.randn(L, 3) for L in LENGTHS], enforce_sorted=False)
    packed.data[0, 0] = float("nan")  # refused for what it is, before any other check
    for method in ("heavy_ball", "nesterov"):
        with pytest.raises(NotImplementedError,
                           match=rf"SBORNN\(method='{method}'\) takes no PackedSequence"):
            fnn.SBORNN(3, 4, method=method, check_finite=True)(packed)


@pytest.mark.parametrize("name", STACKED)
def test_check_finite_counts_the_packed_data_not_the_padding(name):
    packed = pack_sequence([torch.randn(L, 3) for L in LENGTHS], enforce_sorted=False)
    packed.data[4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"input contains NaN or Inf \(1 of 69 entries"):
        _make(name, check_finite=True)(packed)


@pytest.mark.parametrize("name", STACKED)
def test_bad_packed_input_is_refused(name):
    model = _make(name)
    packed = pack_sequence([torch.randn(L, 2) for L in LENGTHS], enforce_sorted=False)
    with pytest.raises(ValueError, match=r"PackedSequence input must hold data of shape "
                                         r"\(N, input_size = 3\) with N >= 1, got \(23, 2\)"):
        model(packed)
    empty = PackedSequence(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"with N >= 1, got \(0, 3\)"):
        model(empty)
    packed = pack_sequence([torch.randn(L, 3, dtype=torch.float64) for L in LENGTHS],
                           enforce_sorted=False)
    with pytest.raises(TypeError, match="input is torch.float64"):
        model(packed)
    packed = pack_sequence([torch.randn(L, 3) for L in LENGTHS], enforce_sorted=False)
    hx = _random_hx(model, 4, "cpu")  # batch 4: the packed batch holds 5
    with pytest.raises(ValueError, match=r"must have shape \(2, 5, "):
        model(packed, hx)


@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_index_pads_and_packs_as_torch(enforce_sorted):
    lengths = sorted(LENGTHS, reverse=True) if enforce_sorted else LENGTHS
    seqs = [torch.randn(L, 2) for L in lengths]
    packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
    index = PackedIndex(packed)
    want, _ = pad_packed_sequence(packed)
    torch.testing.assert_close(index.padded(packed.data), want, rtol=0, atol=0)
    torch.testing.assert_close(index.pack(want).data, packed.data, rtol=0, atol=0)
    last = index.last(want)
    for b, s in enumerate(seqs):
        torch.testing.assert_close(last[b], s[-1], rtol=0, atol=0)


def test_packed_input_compiles_in_one_graph():
    rnn = fnn.ScuRNN(3, 4, 2)
    packed = pack_sequence([torch.randn(L, 3) for L in LENGTHS], enforce_sorted=False)
    compiled = torch.compile(rnn, fullgraph=True, backend="eager")
    (out, h_n), (want_out, want_h) = compiled(packed), rnn(packed)
    torch.testing.assert_close(out.data, want_out.data, rtol=0, atol=0)
    torch.testing.assert_close(h_n, want_h, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda: fnn.MomentumLSTM(3, 6, mu=0.5, step=1.0, bidirectional=True),
    lambda: fnn.ScoRNN(3, 6, momentum=0.5, bidirectional=True),
], ids=["MomentumLSTM", "ScoRNN-momentum"])
def test_compiled_bidirectional_momentum_on_packed_input_equals_eager(make):
    """Inductor (PyTorch 2.13, CPU) miscompiled the momentum factorization's ones channel
    (torch.cat) of a padded packed batch that the backward direction also reads reversed:
    that direction's outputs were off by 0.3 and its gradients by 2, with no error.
    Outputs, final states and every gradient against eager, 1e-5."""
    torch.manual_seed(0)
    model = make()
    seqs = [torch.randn(L, 3, requires_grad=True) for L in (5, 2, 4)]
    results = []
    for run in (model, torch.compile(model, fullgraph=True)):
        out, state = run(pack_sequence(seqs, enforce_sorted=False))
        states = state if isinstance(state, tuple) else (state,)
        loss = (out.data.square().sum() + sum(s.sum() for s in states))
        grads = torch.autograd.grad(loss, [*model.parameters(), *seqs])
        results.append([out.data.detach(), *(s.detach() for s in states), *grads])
    for got, want in zip(*reversed(results)):
        assert rel_err(got, want) <= 1e-5


def test_sorted_packed_input_compiles_with_momentum():
    """A sorted batch (pack_sequence's default) gave Dynamo an unbacked B from batch_sizes,
    on which momentum_scan's size check could not decide: 'Could not guard on
    data-dependent expression'. PackedIndex now states B >= 1."""
    model = fnn.MomentumRNN(3, 4, mu=0.5)
    packed = pack_sequence([torch.randn(L, 3) for L in (5, 4, 2)])
    out = torch.compile(model, fullgraph=True, backend="eager")(packed)[0]
    torch.testing.assert_close(out.data, model(packed)[0].data, rtol=0, atol=0)


def test_each_decorated_forward_has_its_own_recompile_budget():
    """Dynamo limits recompiles per code object. The empty-batch decorator once gave every
    module class one shared code object, so a ninth differently configured module in a
    process failed to compile under fullgraph=True. With a budget of 1, modules with
    different forward methods (cells and stacks) each still compile; classes that share a
    forward (ScuRNN, ScoRNN, ENRNN) share its budget, as the README says."""
    x = torch.randn(4, 2, 3)
    with torch._dynamo.config.patch(recompile_limit=1):
        torch._dynamo.reset()
        for model in (fnn.ScoRNN(3, 4), fnn.MomentumRNN(3, 4), fnn.MomentumLSTM(3, 4),
                      fnn.SBORNN(3, 4)):
            torch.compile(model, fullgraph=True, backend="eager")(x)
        cell = fnn.ScoRNNCell(3, 4)
        torch.compile(cell, fullgraph=True, backend="eager")(x[0])
    torch._dynamo.reset()


def test_bidirectional_scurnn_output_splits_into_two_complex_states():
    """The layout the README and ``as_complex`` describe: ``[Re f, Im f, Re b, Im b]``."""
    bi = fnn.ScuRNN(3, 4, bidirectional=True)
    fwd, bwd = fnn.ScuRNN(3, 4), fnn.ScuRNN(3, 4)
    fwd.load_state_dict(_layer_state(bi.state_dict(), 0, False))
    bwd.load_state_dict(_layer_state(bi.state_dict(), 0, True))
    x = torch.randn(6, 2, 3)
    z = fu.as_complex(bi(x)[0].unflatten(-1, (2, -1)))
    assert z.shape == (6, 2, 2, 4) and z.dtype == torch.complex64
    torch.testing.assert_close(z[:, :, 0], fu.as_complex(fwd(x)[0]), rtol=0, atol=0)
    torch.testing.assert_close(z[:, :, 1], fu.as_complex(bwd(x.flip(0))[0]).flip(0),
                               rtol=0, atol=0)


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name", STACKED)
def test_empty_batch_gives_empty_outputs_as_torch_lstm(name, batch_first, with_hx):
    """As torch.nn.LSTM, a batch of zero sequences returns outputs with zero rows, shaped
    as a batch of two's with B = 0, whose backward reaches the parameters (with zeros), the
    input and ``hx``."""
    model = _make(name, batch_first=batch_first, bidirectional=True)
    full = _make(name, batch_first=batch_first, bidirectional=True)
    batch_dim = 0 if batch_first else 1
    x = torch.randn(2, 5, 3) if batch_first else torch.randn(5, 2, 3)
    hx = _random_hx(full, 2, "cpu") if with_hx else None
    want_out, want_state = full(x, hx)
    x0 = x.narrow(batch_dim, 0, 0).requires_grad_()
    hx0 = None if hx is None else tuple(h[:, :0].requires_grad_() for h in _states(hx))
    out, state = model(x0, hx0 if hx0 is None or len(hx0) > 1 else hx0[0])
    assert out.shape == want_out.narrow(batch_dim, 0, 0).shape and out.dtype == want_out.dtype
    for s, w in zip(_states(state), _states(want_state), strict=True):
        assert s.shape == w[:, :0].shape
    (out.sum() + sum(s.sum() for s in _states(state))).backward()
    assert x0.grad.shape == x0.shape
    for h in hx0 or ():
        assert h.grad.shape == h.shape
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)


def test_empty_batch_shapes_match_torch_lstm():
    lstm, ours = torch.nn.LSTM(3, 4, 2, bidirectional=True), fnn.MomentumLSTM(3, 4, 2,
                                                                             bidirectional=True)
    x, hx = torch.randn(5, 0, 3), (torch.randn(4, 0, 4), torch.randn(4, 0, 4))
    (o, (h, c)), (want_o, (want_h, want_c)) = ours(x, hx), lstm(x, hx)
    assert (o.shape, h.shape, c.shape) == (want_o.shape, want_h.shape, want_c.shape)


@pytest.mark.parametrize("name", [n for n in fnn.__all__ if n.endswith("Cell")])
def test_cell_takes_an_empty_batch(name):
    cell = getattr(fnn, name)(*((3, 3, 2) if name == "ENRNNCell" else (3, 4)))
    x = torch.randn(0, 3, requires_grad=True)
    h = cell(x, torch.zeros(0, cell.state_size))
    assert h.shape == (0, cell.state_size) and cell(x).shape == h.shape
    h.sum().backward()
    assert x.grad.shape == (0, 3)
    wide = cell.state_size + 1
    with pytest.raises(ValueError, match=rf"given: input \(0, 3\), hx \[\(0, {wide}\)\]"):
        cell(x, torch.zeros(0, wide))


@pytest.mark.parametrize("name", STACKED)
def test_empty_batch_errors_name_the_input_as_given(name):
    model = _make(name)
    hx = _random_hx(model, 2, "cpu")  # two rows: the input has none
    first = _states(hx)[0]
    with pytest.raises(ValueError, match=rf"empty batch \(B = 0\), so each initial state must "
                                         rf"have B = 0 rows \(dimension 1\) as well, got "
                                         rf"\({first.shape[0]}, 2, {first.shape[2]}\)"):
        model(torch.randn(5, 0, 3), hx)
    with pytest.raises(ValueError, match=r"input_size = 3, got shape \(5, 0, 2\)"):
        model(torch.randn(5, 0, 2))
    wide = tuple(torch.randn(h.shape[0], 0, h.shape[2] + 1) for h in _states(hx))
    with pytest.raises(ValueError, match=rf"one row of zeros; given: input \(5, 0, 3\), hx "
                                         rf"\[\({first.shape[0]}, 0, {first.shape[2] + 1}\)"):
        model(torch.randn(5, 0, 3), wide if len(wide) > 1 else wide[0])
    with pytest.raises(ValueError, match=r"T >= 1 steps, got shape \(0, 0, 3\)"):
        model(torch.randn(0, 0, 3))
    with pytest.raises(ValueError, match=r"T >= 1 steps, got shape \(0, 2, 3\)"):
        model(torch.randn(0, 2, 3))


def test_empty_batch_compiles_in_one_graph():
    rnn = fnn.ScoRNN(3, 4, 2)
    compiled = torch.compile(rnn, fullgraph=True, backend="eager")
    out, h_n = compiled(torch.randn(5, 0, 3))
    assert out.shape == (5, 0, 4) and h_n.shape == (2, 0, 4)


def test_all_weights_as_torch_lstm():
    """Same shapes in the same places as torch.nn.LSTM's (projection and reverse
    direction included), and the very parameters of the module."""
    options = dict(num_layers=2, bidirectional=True, proj_size=2)
    ours, lstm = fnn.MomentumLSTM(3, 4, **options), torch.nn.LSTM(3, 4, **options)
    assert ([[w.shape for w in layer] for layer in ours.all_weights]
            == [[w.shape for w in layer] for layer in lstm.all_weights])
    assert ours.all_weights[3][1] is ours.weight_hh_l1_reverse
    assert [len(layer) for layer in fnn.MomentumRNN(3, 4, bias=False).all_weights] == [2]


@pytest.mark.parametrize("name", STACKED)
def test_all_weights_lists_each_layer_once(name):
    model = _make(name, bidirectional=True)
    layers = model.all_weights
    assert len(layers) == 4
    flat = [id(p) for layer in layers for p in layer]
    assert len(flat) == len(set(flat))
    if hasattr(model, "layers"):  # a stack of cells: all of its parameters, layer by layer
        assert set(flat) == {id(p) for p in model.parameters()}
        assert [id(p) for p in layers[1]] == [id(p) for p in model.layers_reverse[0].parameters()]
    else:
        assert layers[2][0] is model.weight_ih_l1
