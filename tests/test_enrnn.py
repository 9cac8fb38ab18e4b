"""ENRNN / ENRNNCell (fastunitary/nn/enrnn.py)."""

import copy
import io

import pytest
import torch

import fastunitary.functional as F
from fastunitary import reference
from fastunitary.nn import ENRNN, ENRNNCell

from .conftest import rel_err


def radius(W2):
    return torch.linalg.eigvals(W2.detach().double()).abs().max().item()


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("T, B", [(1, 1), (9, 3)])
def test_shapes(batch_first, num_layers, T, B):
    rnn = ENRNN(2, 7, 4, num_layers, batch_first=batch_first)
    x = torch.randn(B, T, 2) if batch_first else torch.randn(T, B, 2)
    out, h_n = rnn(x)
    assert rnn.output_size == 11
    assert out.shape == ((B, T, 11) if batch_first else (T, B, 11))
    assert h_n.shape == (num_layers, B, 11)
    out_u, h_u = rnn(x[0] if batch_first else x[:, 0])  # unbatched
    assert out_u.shape == (T, 11) and h_u.shape == (num_layers, 11)


def test_block_structure_and_blocks():
    cell = ENRNNCell(3, 10, 6, num_negative=3)
    W = cell.recurrent_matrix()
    assert W.shape == (16, 16)
    assert torch.equal(W[10:, :10], torch.zeros(6, 10))  # never short -> ... <- long
    W1 = W[:10, :10]
    assert (W1.t() @ W1 - torch.eye(10)).abs().max() < 1e-5
    assert torch.equal(cell.D1, torch.tensor([1.0] * 7 + [-1.0] * 3))
    torch.testing.assert_close(W[:10, 10:], cell.C.detach())
    assert radius(W[10:, 10:]) < 1.0  # M starts inside the unit disc
    assert not cell.normalization_on
    uncoupled = ENRNNCell(3, 10, 6, coupled=False)
    assert uncoupled.C is None
    assert torch.equal(uncoupled.recurrent_matrix()[:10, 10:], torch.zeros(10, 6))


def test_matches_the_equations():
    """The module equals a per-step loop on the block W straight from METHODS.md."""
    rnn = ENRNN(3, 5, 4)
    cell = rnn.layers[0]
    x = torch.randn(8, 2, 3)
    out, _ = rnn(x)
    W = cell.recurrent_matrix()
    expected = reference.recurrence_autograd(cell.input_term(x), W, cell.modrelu_bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["sticky", "max1"])
@pytest.mark.parametrize("short_size", [8, 72])  # 72: above FULL_EIG_MAX_N, the squaring route
def test_short_term_radius_stays_at_most_one_under_large_steps(rule, short_size):
    rnn = ENRNN(3, 6, short_size, normalization=rule)
    opt = torch.optim.Adam(rnn.parameters(), lr=0.5)
    for _ in range(15):
        out, _ = rnn(torch.randn(10, 4, 3))
        opt.zero_grad()
        (-out.square().sum()).backward()  # pushes the short-term block to grow
        opt.step()
        cell = rnn.layers[0]
        assert radius(cell.recurrent_matrix()[6:, 6:]) <= 1 + 1e-6
        W1 = cell.recurrent_matrix()[:6, :6]
        assert (W1.t() @ W1 - torch.eye(6)).abs().max() < 1e-5
    assert F.spectral_radius(rnn.layers[0].M).item() > 1  # the steps did push M out
    if rule == "sticky":
        assert rnn.layers[0].normalization_on


def test_sticky_switch_moves_only_with_training_forwards():
    """Eval forwards (with or without grad), no_grad forwards of an eval model and
    inspection use the switch but never set it; the first training-mode forward with
    sigma(M) > 1 does. It once flipped on any call, inspection included."""
    rnn = ENRNN(2, 4, 5)
    cell = rnn.layers[0]
    with torch.no_grad():
        cell.M.mul_(3.0 / F.spectral_radius(cell.M))  # sigma(M) = 3
    x = torch.randn(6, 2, 2)
    cell.recurrent_matrix()
    cell.short_term_matrix()
    rnn.eval()
    out_eval = rnn(x)[0]
    with torch.no_grad():
        rnn(x)
    assert not cell.normalization_on
    # the eval forward normalized all the same: what the training step would use
    W2 = cell.recurrent_matrix()[4:, 4:]
    assert abs(radius(W2) - 1.0) < 1e-5
    rnn.train()
    out_train = rnn(x)[0]
    assert cell.normalization_on
    torch.testing.assert_close(out_eval, out_train, rtol=0, atol=0)


def test_eval_cache_sees_the_switch_set_by_hand():
    rnn = ENRNN(2, 4, 5).eval()
    cell = rnn.layers[0]
    with torch.no_grad():
        cell.M.mul_(0.5 / F.spectral_radius(cell.M))  # inside the disc: W2 = M while off
        x = torch.randn(6, 2, 2)
        before = rnn(x)[0]
        cell.normalization_on.fill_(True)  # W2 = M / sigma(M) = 2 M from now on
        after = rnn(x)[0]
    assert not torch.allclose(before, after)
    fresh = ENRNN(2, 4, 5).eval()
    fresh.load_state_dict(rnn.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(after, fresh(x)[0], rtol=0, atol=0)


def test_sticky_switch_stays_on_and_round_trips():
    rnn = ENRNN(2, 4, 5)
    cell = rnn.layers[0]
    with torch.no_grad():
        cell.M.mul_(3.0)
    rnn(torch.randn(3, 2, 2))
    assert cell.normalization_on
    with torch.no_grad():
        cell.M.mul_(0.1)  # radius well below 1 now ...
    W2 = cell.recurrent_matrix()[4:, 4:]
    assert abs(radius(W2) - 1.0) < 1e-5  # ... but normalization stays on
    buf = io.BytesIO()
    torch.save(rnn.state_dict(), buf)
    buf.seek(0)
    fresh = ENRNN(2, 4, 5)
    assert not fresh.layers[0].normalization_on
    fresh.load_state_dict(torch.load(buf))
    assert fresh.layers[0].normalization_on
    x = torch.randn(6, 2, 2)
    torch.testing.assert_close(fresh(x)[0], rnn(x)[0], rtol=0, atol=0)


def test_max1_rule_needs_no_state():
    cell = ENRNNCell(2, 4, 5, normalization="max1")
    with torch.no_grad():
        cell.M.mul_(3.0)
    assert abs(radius(cell.recurrent_matrix()[4:, 4:]) - 1.0) < 1e-5
    with torch.no_grad():
        cell.M.mul_(0.1)
    torch.testing.assert_close(cell.recurrent_matrix()[4:, 4:], cell.M.detach())


def test_uncoupled_parts_evolve_independently():
    rnn = ENRNN(2, 5, 4, coupled=False)
    x = torch.randn(12, 3, 2)
    h0 = torch.randn(1, 3, 9)
    h0_other = h0.clone()
    h0_other[..., 5:] = torch.randn(1, 3, 4)  # change only the short-term start
    a, _ = rnn(x, h0)
    b, _ = rnn(x, h0_other)
    torch.testing.assert_close(a[..., :5], b[..., :5], rtol=0, atol=0)  # long-term untouched
    assert not torch.allclose(a[..., 5:], b[..., 5:])
    coupled = ENRNN(2, 5, 4)
    a, _ = coupled(x, h0)
    b, _ = coupled(x, h0_other)
    assert not torch.allclose(a[..., :5], b[..., :5])  # with C, short feeds long


def test_param_groups():
    rnn = ENRNN(2, 5, 4, num_layers=2)
    groups = {g["name"]: g for g in rnn.param_groups(lr=1e-3, lr_A=1e-5)}
    assert [p.shape for p in groups["A"]["params"]] == [(10,), (10,)]  # packed A1, 5*4/2
    assert groups["A"]["lr"] == 1e-5
    n_all = sum(len(g["params"]) for g in groups.values())
    assert n_all == len(list(rnn.parameters()))


def test_gradcheck_cell_float64():
    cell = ENRNNCell(2, 3, 3).double()
    with torch.no_grad():
        cell.M.mul_(4.0)  # normalization on: the closed-form gradient is in the path
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cell, (x, h))
    names = ["M", "C", "skew_re", "weight_ih"]
    params = {k: getattr(cell, k).detach().clone().requires_grad_() for k in names}

    def f(*vals):
        return torch.func.functional_call(cell, dict(zip(names, vals)), (x.detach(), h.detach()))

    assert torch.autograd.gradcheck(f, tuple(params.values()))


@pytest.mark.slow
def test_compile_fullgraph_matches_eager_and_switches_alike():
    torch._dynamo.reset()
    x = torch.randn(10, 3, 2)
    eager, comp = ENRNN(2, 5, 4, num_layers=2), ENRNN(2, 5, 4, num_layers=2)
    comp.load_state_dict(eager.state_dict())
    for m in (eager, comp):
        with torch.no_grad():
            m.layers[1].M.mul_(5.0)  # layer 1 switches on during the call
    explanation = torch._dynamo.explain(ENRNN(2, 5, 4))(x)
    assert explanation.graph_break_count == 0
    compiled = torch.compile(comp, fullgraph=True)
    out_c, _ = compiled(x)
    out_e, _ = eager(x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    for (k, pc), pe in zip(comp.named_parameters(), eager.parameters()):
        assert rel_err(pc.grad, pe.grad) < 1e-4, k
    for m in (eager, comp):
        assert [bool(c.normalization_on) for c in m.layers] == [False, True]


def test_triton_backend_matches_reference():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rnn = ENRNN(2, 6, 5, num_layers=2).to(device)
    x = torch.randn(7, 3, 2, device=device)
    results = {}
    for backend in ("triton", "reference"):
        rnn.backend = backend
        rnn.zero_grad()
        out, _ = rnn(x)
        out.square().sum().backward()
        results[backend] = (out.detach(), [p.grad.clone() for p in rnn.parameters()])
    torch.testing.assert_close(results["triton"][0], results["reference"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results["triton"][1], results["reference"][1]):
        assert rel_err(a, b) < 1e-5


def test_bad_input():
    rnn = ENRNN(3, 4, 2, num_layers=2)
    cases = [
        (lambda: rnn(torch.randn(5, 2, 3, 1)), ValueError, r"input must have shape \(T, B, input_size\)"),
        (lambda: rnn(torch.randn(5, 2, 4)), ValueError, "input_size = 3"),
        (lambda: rnn(torch.randn(5, 2, 3), torch.zeros(1, 2, 6)), ValueError, r"hx must have shape \(2, 2, 6\)"),
        (lambda: rnn(torch.randint(0, 3, (5, 2, 3))), TypeError, "input must be a floating"),
        (lambda: rnn(torch.randn(5, 2, 3, device="meta")), ValueError, "input is on meta"),
        (lambda: rnn(torch.randn(5, 2, 3), torch.zeros(2, 2, 6, dtype=torch.complex64)), TypeError, "state is real"),
        (lambda: ENRNN(3, 0, 2), ValueError, "unitary_size must be a positive int"),
        (lambda: ENRNN(3, 4, 0), ValueError, "short_size must be a positive int"),
        (lambda: ENRNN(3, 4, 2, normalization="always"), ValueError, "normalization must be one of"),
        (lambda: ENRNN(3, 4, 2, num_negative=5), ValueError, "num_negative"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    x = torch.randn(5, 2, 3)
    x[1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="input contains NaN"):
        ENRNN(3, 4, 2, check_finite=True)(x)


@pytest.mark.parametrize("n1, official", [(172, 52), (96, 29)])
def test_default_num_negative_is_the_official_setups(n1, official):
    """METHODS.md: copying n1 = 172 with 52 of D1 negative, adding n1 = 96 with 29
    (3 * n1 // 10 gave 51 and 28)."""
    cell = ENRNNCell(2, n1, 4)
    assert cell.num_negative == official
    assert int((cell.D1 == -1).sum()) == official


def test_num_negative_follows_a_loaded_D1():
    rnn = ENRNN(3, 10, 2, num_layers=2, num_negative=0)
    rnn.load_state_dict(ENRNN(3, 10, 2, num_layers=2, num_negative=4).state_dict())
    assert [cell.num_negative for cell in rnn.layers] == [4, 4]
    assert "num_negative=4" in repr(rnn.layers[0])


def test_cell_refuses_input_of_another_precision():
    with pytest.raises(TypeError, match="input is torch.float64 but the module's parameters are torch.float32"):
        ENRNNCell(3, 4, 2)(torch.randn(2, 3, dtype=torch.float64))


def test_weight_cache_sees_changes_through_data_and_to_the_rule():
    """Every source's values (``.data`` writes included, and the switch buffer) and the
    ``normalization`` setting, which building W reads, decide whether the cached W holds."""
    x = torch.randn(6, 2, 3)
    rnn = ENRNN(3, 4, 2, num_layers=2).eval()

    def check():
        torch.testing.assert_close(rnn(x)[0], copy.deepcopy(rnn).train()(x)[0], rtol=0, atol=0)

    with torch.no_grad():
        check()  # caches W
        rnn.layers[0].M.data.mul_(0.5)
        rnn.layers[1].C.data.add_(1.0)
        check()
        rnn.layers[0].skew_re.add_(0.3)
        check()
        rnn.layers[0].normalization_on.fill_(True)
        check()
        rnn.layers[0].normalization = "max1"  # switched on above, so sigma(M) < 1 gives
        check()                               # another W2 under max1


@pytest.mark.parametrize("options", [
    dict(), dict(num_layers=2, coupled=False), dict(normalization="max1", num_negative=1),
    dict(bidirectional=True, batch_first=True, bias=False),
])
def test_repr_rebuilds_the_module(options):
    """``ENRNN(...)``'s repr gives its constructor's arguments: it once printed
    ``3, 10, ..., unitary_size=6, short_size=4`` (hidden_size as the second argument, which
    the constructor refuses) and left out the cell options."""
    model = ENRNN(3, 6, 4, **options)
    rebuilt = eval(f"ENRNN({model.extra_repr()})")
    assert repr(rebuilt) == repr(model)
    for key, value in options.items():
        assert f"{key}={value!r}" in model.extra_repr()
