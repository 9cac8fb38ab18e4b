"""ONNX export (fastunitary.onnx): ONNX Runtime's outputs equal the module's.

Every model is exported once with a dynamic length and batch and run by ONNX Runtime on
fresh inputs of other shapes (T = 1 and B = 1 included). Float32 throughout; the scan
sums ``W h`` in another order than the library's ops (a complex state as four blocks),
so outputs agree to float32 rounding grown over the steps: ``ATOL``/``RTOL``.
"""

import numpy as np
import pytest
import torch

import fastunitary.functional as F
from fastunitary.functional.onednn_lstm import onednn_lstm
import fastunitary.nn as fnn

pytest.importorskip("onnxscript")  # the dev extra (CI); not on the GPU machines' image
ort = pytest.importorskip("onnxruntime")
fonnx = pytest.importorskip("fastunitary.onnx")

ATOL = RTOL = 1e-4
SHAPES = [(23, 5), (1, 1), (2, 7)]  # (T, B) other than the traced (6, 3)
TRACED = (6, 3)
M = 4  # input size

MODELS = {
    "ScuRNN-bidirectional-2-layers": lambda: fnn.ScuRNN(M, 6, num_layers=2, bidirectional=True),
    "ScuRNN-momentum-h0": lambda: fnn.ScuRNN(M, 6, momentum=0.5, trainable_h0=True),
    "ScoRNN": lambda: fnn.ScoRNN(M, 8),
    "ENRNN": lambda: fnn.ENRNN(M, 6, 2),
    "MomentumRNN-relu": lambda: fnn.MomentumRNN(M, 8, nonlinearity="relu"),
    "MomentumLSTM": lambda: fnn.MomentumLSTM(M, 8),
    "AdamLSTM-2-layers": lambda: fnn.AdamLSTM(M, 8, num_layers=2),
    "RMSPropLSTM": lambda: fnn.RMSPropLSTM(M, 8),
    "NesterovLSTM-proj": lambda: fnn.NesterovLSTM(M, 8, proj_size=3),
    "SBORNN-gd": lambda: fnn.SBORNN(M, 8, method="gd", steps=2),
    "SBORNN-heavy-ball": lambda: fnn.SBORNN(M, 8, method="heavy_ball", steps=2),
    "SBORNN-nesterov": lambda: fnn.SBORNN(M, 8, method="nesterov", steps=3),
}


def _session(program) -> "ort.InferenceSession":
    return ort.InferenceSession(program.model_proto.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _flat(output) -> list[torch.Tensor]:
    """``(out, h_n)`` or ``(out, (h_n, c_n))`` as one list, in ONNX's output order."""
    out, state = output
    return [out, *(state if isinstance(state, tuple) else (state,))]


def _assert_close(session, inputs: list[torch.Tensor], expected: list[torch.Tensor]):
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    got = session.run(None, feed)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.detach().numpy(), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_runtime_matches_the_module_at_other_shapes(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    program = fonnx.export(model, (torch.randn(*TRACED, M),),
                           dynamic_shapes=({0: "T", 1: "B"},))
    session = _session(program)
    for T, B in SHAPES:
        x = torch.randn(T, B, M)
        with torch.no_grad():
            _assert_close(session, [x], _flat(model(x)))


def test_a_given_state_and_batch_first_export():
    torch.manual_seed(1)
    model = fnn.ScuRNN(M, 6, num_layers=2, batch_first=True).eval()
    x, h0 = torch.randn(3, 6, M), torch.randn(2, 3, 12)
    program = fonnx.export(model, (x, h0), dynamic_shapes=({0: "B", 1: "T"}, {1: "B"}))
    session = _session(program)
    x, h0 = torch.randn(5, 11, M), torch.randn(2, 5, 12)
    with torch.no_grad():
        _assert_close(session, [x, h0], _flat(model(x, h0)))


def test_the_lstm_state_pair_exports():
    torch.manual_seed(2)
    model = fnn.MomentumLSTM(M, 8, proj_size=5).eval()
    x, h0, c0 = torch.randn(*TRACED, M), torch.randn(1, 3, 5), torch.randn(1, 3, 8)
    program = fonnx.export(model, (x, (h0, c0)),
                           dynamic_shapes=({0: "T", 1: "B"}, ({1: "B"}, {1: "B"})))
    session = _session(program)
    x, h0, c0 = torch.randn(9, 4, M), torch.randn(1, 4, 5), torch.randn(1, 4, 8)
    with torch.no_grad():
        _assert_close(session, [x, h0, c0], _flat(model(x, (h0, c0))))


class _OneDNN(torch.nn.Module):
    """The oneDNN LSTM op (the MomentumLSTM's route under torch.compile), called directly."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(M, 8)

    def forward(self, x, h0, c0):
        p = self.lstm
        return onednn_lstm(x, p.weight_ih_l0, p.weight_hh_l0, p.bias_ih_l0, p.bias_hh_l0, h0, c0)


def test_the_onednn_lstm_op_exports():
    torch.manual_seed(3)
    model = _OneDNN().eval()
    args = (torch.randn(*TRACED, M), torch.randn(3, 8), torch.randn(3, 8))
    program = fonnx.export(model, args, dynamic_shapes=({0: "T", 1: "B"}, {0: "B"}, {0: "B"}))
    session = _session(program)
    args = (torch.randn(13, 2, M), torch.randn(2, 8), torch.randn(2, 8))
    with torch.no_grad():
        _assert_close(session, list(args), list(model(*args)))


def test_the_graph_has_one_scan_per_layer_and_direction_whatever_t():
    """The loop is one ONNX Scan node, not T unrolled steps, and no op of ours is left."""
    model = fnn.ScuRNN(M, 6, bidirectional=True).eval()
    program = fonnx.export(model, (torch.randn(50, 2, M),))
    ops = [node.op_type for node in program.model_proto.graph.node]
    assert ops.count("Scan") == 2
    assert len(ops) < 50
    assert not any(node.domain.startswith("fastunitary") for node in program.model_proto.graph.node)


def test_the_frozen_weight_is_the_modules_and_is_released():
    """W enters as a constant computed at export; afterwards the module is as before."""
    torch.manual_seed(4)
    model = fnn.ENRNN(M, 6, 2).eval()
    x = torch.randn(*TRACED, M)
    with torch.no_grad():
        before = model(x)[0]
    fonnx.export(model, (x,))
    assert all(getattr(cell, "_frozen_weight", None) is None for cell in model.modules())
    with torch.no_grad():
        model.layers[0].skew_re.add_(0.1)  # a changed W must be seen by the next forward
        after = model(x)[0]
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("hook", ["prune", "spectral_norm"])
def test_a_hook_set_source_of_w_is_exported_with_its_current_value(hook):
    """Pruning and spectral_norm set a cell's W source in a forward pre-hook: after an
    optimizer step (no forward since) W was frozen from the previous step's values (ONNX
    Runtime 20% off with spectral_norm on ENRNN's M, 4x the output with pruning)."""
    import torch.nn.utils.prune as prune

    torch.manual_seed(0)
    if hook == "prune":
        model = fnn.ScoRNN(M, 8)
        prune.l1_unstructured(model.layers[0], "skew_re", amount=0.3)
    else:
        model = fnn.ENRNN(M, 6, 2)
        torch.nn.utils.spectral_norm(model.layers[0], "M")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(10, 2, M)
    model(x)[0].square().sum().backward()
    optimizer.step()
    model.eval()
    session = _session(fonnx.export(model, (torch.randn(*TRACED, M),),
                                    dynamic_shapes=({0: "T", 1: "B"},)))
    with torch.no_grad():
        _assert_close(session, [x], _flat(model(x)))


def test_named_dimensions_keep_their_names():
    """Strings in dynamic_shapes name the ONNX axes, as torch.onnx.export names them (they
    came out as the program's symbols, s31, s81)."""
    model = fnn.MomentumLSTM(M, 8).eval()
    x, h0, c0 = torch.randn(*TRACED, M), torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    program = fonnx.export(model, (x, (h0, c0)),
                           dynamic_shapes=({0: "T", 1: "B"}, ({1: "B"}, {1: "B"})))
    graph = program.model_proto.graph
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)]
    assert dims == [["T", "B", M], [1, "B", 8], [1, "B", 8], ["T", "B", 8], [1, "B", 8],
                    [1, "B", 8]]


def test_export_writes_the_file(tmp_path):
    path = tmp_path / "scornn.onnx"
    model = fnn.ScoRNN(M, 8).eval()
    fonnx.export(model, (torch.randn(*TRACED, M),), str(path))
    assert path.stat().st_size > 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(*TRACED, M)
    with torch.no_grad():
        _assert_close(session, [x], _flat(model(x)))


ZERO_INPUT_MODELS = {
    "ScuRNN": lambda: fnn.ScuRNN(M, 6),          # z = 0 at h = 0: modReLU's |z| = 0
    "ScoRNN-no-bias": lambda: fnn.ScoRNN(M, 8, bias=False),
    "AdamLSTM": lambda: fnn.AdamLSTM(M, 8),      # m / sqrt(r + eps), r = 0 on zero input
    "RMSPropLSTM": lambda: fnn.RMSPropLSTM(M, 8),
}


@pytest.mark.parametrize("name", ZERO_INPUT_MODELS)
def test_zero_input_stays_finite(name):
    """Zero padding: the epsilons that keep 0 / 0 out survive the exporter's optimizer."""
    torch.manual_seed(6)
    model = ZERO_INPUT_MODELS[name]().eval()
    session = _session(fonnx.export(model, (torch.randn(*TRACED, M),),
                                    dynamic_shapes=({0: "T", 1: "B"},)))
    x = torch.cat([torch.zeros(4, 2, M), torch.randn(5, 2, M)])
    with torch.no_grad():
        expected = _flat(model(x))
    assert all(torch.isfinite(e).all() for e in expected)
    _assert_close(session, [x], expected)


@pytest.mark.parametrize("make", [lambda: fnn.ScuRNN(M, 6), lambda: fnn.ScoRNN(M, 8),
                                  lambda: fnn.AdamLSTM(M, 8)], ids=["ScuRNN", "ScoRNN", "AdamLSTM"])
@pytest.mark.parametrize("example", ["batch of one", "unbatched"])
def test_export_traced_at_a_batch_of_one_or_unbatched(make, example):
    torch.manual_seed(7)
    model = make().eval()
    shape = (5, 1, M) if example == "batch of one" else (5, M)
    session = _session(fonnx.export(model, (torch.randn(*shape),)))
    x = torch.randn(*shape)
    with torch.no_grad():
        _assert_close(session, [x], _flat(model(x)))


def test_frozen_weights_nest():
    from fastunitary.nn._base import frozen_recurrent_weights

    model = fnn.ScoRNN(M, 8).eval()
    cell = model.layers[0]
    with frozen_recurrent_weights(model):
        outer = cell._frozen_weight
        with frozen_recurrent_weights(model):
            assert cell._frozen_weight is not outer
        assert cell._frozen_weight is outer
    assert cell._frozen_weight is None


def test_bad_calls_raise():
    model = fnn.ScoRNN(M, 8)
    with pytest.raises(ValueError, match="eval"):
        fonnx.export(model, (torch.randn(*TRACED, M),))
    model.eval().layers[0].train()  # a submodule left in training mode
    with pytest.raises(ValueError, match="eval"):
        fonnx.export(model, (torch.randn(*TRACED, M),))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fonnx.export(lambda x: x, (torch.randn(*TRACED, M),))


def test_the_table_names_every_sequence_op():
    ops = torch.ops.fastunitary
    table = fonnx.decompositions()
    for op in (ops.recurrence, ops.lstm_recurrence, ops.momentum_scan, ops.sbo_recurrence,
               ops.onednn_lstm):
        assert op.default in table


@pytest.mark.parametrize("make", [lambda: fnn.ScuRNNCell(M, 6), lambda: fnn.ScoRNNCell(M, 8),
                                  lambda: fnn.ENRNNCell(M, 6, 2)],
                         ids=["ScuRNNCell", "ScoRNNCell", "ENRNNCell"])
def test_cells_export_with_a_dynamic_batch(make):
    torch.manual_seed(5)
    cell = make().eval()
    x, h = torch.randn(3, M), torch.randn(3, cell.state_size)
    session = _session(fonnx.export(cell, (x, h), dynamic_shapes=({0: "B"}, {0: "B"})))
    for B in (1, 7):
        x, h = torch.randn(B, M), torch.randn(B, cell.state_size)
        with torch.no_grad():
            _assert_close(session, [x, h], [cell(x, h)])


class _OwnCayleyCell(torch.nn.Module):
    """A user's own orthogonal RNN: ``W`` from ``F.cayley`` of a parameter in forward."""

    def __init__(self, n=8):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(n, n) * 0.3)
        self.register_buffer("d", torch.where(torch.rand(n) < 0.5, -1.0, 1.0))
        self.inp = torch.nn.Linear(M, n)
        self.bias = torch.nn.Parameter(torch.rand(n) * 0.1)

    def forward(self, x):
        W = F.cayley(self.A - self.A.T, self.d)
        return F.recurrence(self.inp(x), W, self.bias, activation="modrelu")


class _OwnNormalizedCell(torch.nn.Module):
    """A user's own ENRNN-like layer: ``F.spectral_normalize`` of a parameter in forward."""

    def __init__(self, n=8):
        super().__init__()
        self.M = torch.nn.Parameter(torch.randn(n, n) * 0.6)
        self.inp = torch.nn.Linear(M, n)

    def forward(self, x):
        W, _, _ = F.spectral_normalize(self.M, rule="max1")
        return F.recurrence(self.inp(x), W, None, activation="tanh")


@pytest.mark.parametrize("make", [_OwnCayleyCell, _OwnNormalizedCell])
def test_a_model_of_ones_own_calling_cayley_or_the_radius_exports(make):
    """Each call on weights is computed at export; the weight it was made from is gone."""
    torch.manual_seed(9)
    model = make().eval()
    program = fonnx.export(model, (torch.randn(*TRACED, M),),
                           dynamic_shapes=({0: "T", 1: "B"},))
    graph = program.model_proto.graph
    assert not any(node.domain.startswith("fastunitary") for node in graph.node)
    weight = "A" if make is _OwnCayleyCell else "M"
    assert not any(i.name.endswith(weight) for i in [*graph.initializer, *graph.input])
    session = _session(program)
    for T, B in SHAPES:
        x = torch.randn(T, B, M)
        with torch.no_grad():
            _assert_close(session, [x], [model(x)])


def test_the_folding_leaves_the_program_it_was_given():
    torch.manual_seed(9)
    model = _OwnCayleyCell().eval()
    x = torch.randn(*TRACED, M)
    program = torch.export.export(model, (x,))
    folded = fonnx.fold_weight_ops(program)
    cayley = torch.ops.fastunitary.cayley.default
    assert any(node.target is cayley for node in program.graph.nodes)
    assert not any(node.target is cayley for node in folded.graph.nodes)
    assert "A" in program.state_dict and "A" not in folded.state_dict
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(program.module()(x), expected)
        torch.testing.assert_close(folded.module()(x), expected)
    # A library module exported as it is (its forward argument is named ``input``, which a
    # copy of the graph renames): folded too, to the same output.
    scornn = fnn.ScoRNN(M, 8).eval()
    folded = fonnx.fold_weight_ops(torch.export.export(scornn, (x,)))
    assert not any(node.target is cayley for node in folded.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(folded.module()(x), scornn(x))


class _DataDependentCayley(torch.nn.Module):
    """``W`` made from the input (a hypernetwork): ONNX has no solve to compute it."""

    def __init__(self, n=8):
        super().__init__()
        self.inp = torch.nn.Linear(M, n)
        self.to_A = torch.nn.Linear(M, n * n)

    def forward(self, x):
        A = self.to_A(x.mean((0, 1))).view(8, 8)
        return F.recurrence(self.inp(x), F.cayley(A - A.T), None, activation="tanh")


def test_a_matrix_made_from_the_inputs_is_refused_with_the_reason():
    model = _DataDependentCayley().eval()
    with pytest.raises(ValueError, match="depends on the model's inputs"):
        fonnx.export(model, (torch.randn(*TRACED, M),))
