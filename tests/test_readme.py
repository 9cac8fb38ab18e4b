"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def run_block(marker: str, namespace: dict | None = None) -> dict:
    """Execute the README's first python block containing ``marker``; its namespace
    (``namespace``: continue that of an earlier block, for a block that builds on it)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if marker in b]
    assert blocks, f"README has no python example with {marker!r}"
    namespace = {} if namespace is None else namespace
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    return namespace


def test_readme_example_runs():
    ns = run_block("")
    assert ns["output"].shape == (32, 1000, 128)
    assert ns["h_complex"].shape == (2, 32, 64)


def test_readme_momentum_example_runs():
    ns = run_block("MomentumLSTM(")
    assert ns["output"].shape == (8, 784, 128)
    assert ns["c_n"].shape == (1, 8, 128)
    assert ns["out_orth"].shape == (8, 784, 128)
    assert ns["out_p"].shape == (8, 784, 32)
    assert ns["h_p"].shape == (1, 8, 32) and ns["c_p"].shape == (1, 8, 128)


def test_readme_export_example_runs():
    ns = run_block("torch.export.export(")
    assert ns["output"].shape == (5, 100, 16) and ns["h_n"].shape == (1, 5, 16)


def test_readme_splits_example_runs():
    pytest.importorskip("datasets")  # in the dev extra (CI); not on the GPU machines' image
    ns = run_block("load_task(")
    assert ns["batch"]["x"].shape == (32, 1020)
    assert ns["digits"]["test"][0]["x"].shape == (64, 1)


def test_readme_rflo_example_runs():
    ns = run_block("RFLO(")
    assert ns["step_losses"].shape == (200,)
    # a silent network scores mean(sin^2) / 2 = 0.25; 100 trials take seeds 0-5 to 0.0003-0.085
    assert ns["loss"].item() < 0.125


def test_readme_rflo_chunks_example_runs():
    first = run_block("RFLO(")
    ns = run_block("state=state", first)
    assert ns["losses"].shape == (50,) and ns["state"].p.shape == (1, 30, 30)


def test_readme_rflo_cues_example_runs():
    ns = run_block("segment_cues(")
    assert ns["x"].shape == (1600, 1, 8) and ns["step_losses"].shape == (1600,)
    # the silent start scores 0.25; 30 trials take seeds 0-3 to 0.008-0.013 (10x is 0.025)
    assert ns["loss"].item() < 0.025


def test_readme_sbornn_example_runs():
    ns = run_block("SBORNN(")
    assert ns["output"].shape == (64, 32, 64) and ns["h_n"].shape == (1, 32, 64)
    assert ns["m_n"].shape == (1, 32, 64) and ns["more"].shape == (10, 32, 64)


def test_readme_enrnn_example_runs():
    ns = run_block("ENRNN(")
    assert ns["output"].shape == (4, 50, 160) and ns["h_n"].shape == (1, 4, 160)
    assert ns["W"].shape == (160, 160)
    assert {g["name"] for g in ns["opt"].param_groups} == {"A", "other"}


def test_readme_packed_example_runs():
    ns = run_block("pack_sequence(")
    assert ns["h_n"].shape == (2, 3, 16) and ns["lengths"].tolist() == [5, 9, 2]
    assert ns["padded"].shape == (9, 3, 32)


def test_every_python_block_is_tested():
    """A README example no test runs goes stale unseen: every python block is the one that
    run_block picks for the marker of a test in this file (signature listings are fenced as
    text). The markers are read from this file, so removing a test shows up here."""
    markers = re.findall(r'run_block\("(.*?)"[,)]', Path(__file__).read_text())
    assert len(markers) >= 7
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    run = {next(i for i, b in enumerate(blocks) if m in b) for m in markers}
    untested = [blocks[i][:200] for i in range(len(blocks)) if i not in run]
    assert not untested, f"no test runs these README blocks: {untested}"


def test_readme_func_example_runs():
    ns = run_block("vmap(grad(loss)")
    assert ns["per_sample"]["layers.0.skew_re"].shape == (8, 120)


def test_readme_onnx_example_runs():
    pytest.importorskip("onnxruntime")  # the dev extra (CI); not on the GPU machines' image
    pytest.importorskip("onnxscript")
    ns = run_block("fastunitary.onnx.export(")
    assert ns["output"].shape == (100, 5, 32) and ns["h_n"].shape == (2, 5, 32)
    with torch.no_grad():
        expected = ns["model"](ns["x"])
    for got, want in zip((ns["output"], ns["h_n"]), expected):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=1e-4)


def test_readme_double_backward_example_runs():
    ns = run_block("create_graph=True")
    cell = ns["critic"].layers[0]
    for p in (cell.weight_ih, cell.skew_re):  # skew_re: through W's Cayley map
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # the real modReLU is piecewise linear: its biases only choose the active units, so
    # grad_x does not depend on them (as for the biases of a ReLU network)
    assert cell.bias_ih.grad is None and cell.modrelu_bias.grad is None


def test_readme_forward_mode_example_runs():
    """The dot-product test against the fused backward: <J t, w> = <t, J^T w> (float32; a
    finite difference is too coarse here, the outputs move ~1e3 per unit step)."""
    ns = run_block("d_out = jvp(")
    rnn, params, direction, x = ns["rnn"], ns["params"], ns["direction"], ns["x"]
    assert ns["d_out"].shape == ns["out"].shape == (100, 4, 16)
    w = torch.randn_like(ns["out"])
    rnn.zero_grad()
    (rnn(x)[0] * w).sum().backward()
    reverse = sum((p.grad * direction[k]).sum() for k, p in rnn.named_parameters())
    torch.testing.assert_close((ns["d_out"] * w).sum(), reverse, rtol=1e-4, atol=1e-3)


def test_readme_maml_example_runs():
    """The meta-gradient by ``grad`` of ``grad`` equals eager double backward's (float32)."""
    ns = run_block("meta_gradient = grad(after_one_step)")
    rnn, params, x, y = ns["rnn"], ns["params"], ns["x"], ns["y"]
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    inner = torch.autograd.grad(ns["loss"](leaves, x, y), list(leaves.values()),
                                create_graph=True)
    stepped = {k: leaves[k] - 0.1 * g for k, g in zip(leaves, inner)}
    want = torch.autograd.grad(ns["loss"](stepped, x, y), list(leaves.values()))
    assert set(ns["meta_gradient"]) == set(dict(rnn.named_parameters()))
    for (k, got), w in zip(ns["meta_gradient"].items(), want):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-6, msg=lambda m: f"{k}: {m}")
