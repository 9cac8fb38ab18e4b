"""fastunitary/train.py and fastunitary/cli.py."""

import json

import pytest
import torch

from fastunitary import cli
from fastunitary.train import TrainConfig, train


@pytest.mark.parametrize("model", ["scurnn", "scornn", "enrnn", "lstm", "gru"])
def test_train_runs_and_reports(model, tmp_path):
    cfg = TrainConfig(model=model, hidden=8, length=5, batch=4, steps=6, eval_every=3, eval_size=8)
    m = train(cfg, out=tmp_path, progress=False)
    assert m["steps"] == 6 and len(m["history"]) == 2
    assert m["baseline_loss"] == pytest.approx(10 * 2.0794415 / 25, rel=1e-6)
    for key in ("task", "model", "final_eval_loss", "params", "seconds", "tokens_per_second"):
        assert key in m
    assert json.loads((tmp_path / "metrics.json").read_text())["model"] == model


def test_scurnn_learns_short_copying_task():
    """Loss falls well below the baseline in a few hundred steps (T = 10)."""
    cfg = TrainConfig(model="scurnn", hidden=32, length=10, batch=32, steps=400, lr=3e-3,
                      lr_A=3e-4, lr_D=3e-4, eval_every=400, seed=0)
    m = train(cfg, progress=False)
    assert m["final_eval_loss"] < 0.5 * m["baseline_loss"]


def test_budget_required_and_bad_values():
    with pytest.raises(ValueError, match="budget"):
        train(TrainConfig(), progress=False)
    with pytest.raises(ValueError, match="model must be one of"):
        train(TrainConfig(model="transformer", steps=1), progress=False)
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        train(TrainConfig(hidden=0, steps=1), progress=False)


def test_cli_prints_loss_beside_baseline(capsys, tmp_path):
    rc = cli.main(["train", "--model", "scornn", "--hidden", "8", "--length", "5", "--batch", "4",
                   "--steps", "3", "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "final eval loss" in out and "baseline 0.8318" in out
    assert (tmp_path / "metrics.json").exists()


def test_cli_reports_errors(capsys):
    assert cli.main(["train", "--hidden", "0", "--steps", "1", "--no-progress"]) == 2
    assert "hidden must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["enrnn", "scornn"])
def test_adding_task_runs(model):
    cfg = TrainConfig(task="adding", model=model, hidden=8, short=4, length=12, batch=8, steps=5,
                      eval_every=5, eval_size=16)
    m = train(cfg, progress=False)
    assert m["baseline_loss"] == pytest.approx(1 / 6)
    assert "final_eval_accuracy" not in m
    assert m["history"][0]["step"] == 5 and 0 < m["history"][0]["eval_loss"] < 10


def test_cli_adding(capsys):
    assert cli.main(["train", "--task", "adding", "--model", "enrnn", "--hidden", "8", "--short",
                     "4", "--length", "10", "--steps", "2", "--no-progress"]) == 0
    assert "enrnn on adding (L=10)" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["momentumlstm", "adamlstm", "rmsproplstm", "nesterovlstm",
                                   "momentumrnn"])
def test_momentum_models_train_on_copying(model):
    cfg = TrainConfig(model=model, hidden=8, length=5, batch=4, steps=3, eval_every=3, eval_size=8)
    m = train(cfg, progress=False)
    assert m["steps"] == 3 and m["final_eval_loss"] < 10


@pytest.mark.parametrize("task", ["digits", "permuted_digits"])
def test_digits_task_evaluates_on_the_fixed_test_half(task):
    cfg = TrainConfig(task=task, model="lstm", hidden=8, batch=16, steps=2, eval_every=2)
    m = train(cfg, progress=False)
    assert m["baseline_loss"] == pytest.approx(2.302585, rel=1e-6)
    assert 0.0 <= m["final_eval_accuracy"] <= 1.0


def test_momentum_lstm_learns_digits():
    """Sequential 8x8 digits (T = 64): well above chance (0.1) in 400 steps (0.34-0.50 seen
    over seeds 0-3; at 150 steps the seeds spread over 0.10-0.45)."""
    cfg = TrainConfig(task="digits", model="momentumlstm", hidden=32, batch=32, steps=400,
                      lr=1e-2, eval_every=400, seed=0)
    m = train(cfg, progress=False)
    assert m["final_eval_accuracy"] > 0.25, m["final_eval_accuracy"]


def test_cli_digits(capsys):
    assert cli.main(["train", "--task", "digits", "--model", "momentumlstm", "--hidden", "8",
                     "--steps", "2", "--mu", "0.3", "--momentum-step", "0.5",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "momentumlstm on digits (T=64)" in out and "test accuracy" in out


@pytest.mark.parametrize("model", ["scurnn", "enrnn", "momentumlstm"])
def test_resume_continues_bit_exactly(tmp_path, model):
    """10 steps straight equal 6 steps, a checkpoint, and 4 more: losses, evaluation history
    and every weight (ENRNN's sticky switch included), bit for bit on CPU."""
    base = dict(task="copying", model=model, hidden=6, short=4, length=5, batch=4,
                eval_every=3, eval_size=8, seed=3)
    straight = train(TrainConfig(**base, steps=10), out=tmp_path / "a", progress=False)
    train(TrainConfig(**base, steps=6), out=tmp_path / "b", progress=False)
    resumed = train(TrainConfig(**base, steps=10, resume=str(tmp_path / "b" / "checkpoint.pt")),
                    out=tmp_path / "b", progress=False)
    for key in ("steps", "final_train_loss", "final_eval_loss", "final_eval_accuracy"):
        assert resumed[key] == straight[key], key
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_run(tmp_path):
    base = dict(task="copying", model="scornn", hidden=6, length=5, batch=4, eval_every=2,
                eval_size=8)
    train(TrainConfig(**base, steps=2), out=tmp_path, progress=False)
    ckpt = str(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"hidden: 6 -> 8"):
        train(TrainConfig(**{**base, "hidden": 8}, steps=4, resume=ckpt), progress=False)
    with pytest.raises(ValueError, match="no checkpoint"):
        train(TrainConfig(**base, steps=4, resume=str(tmp_path / "none.pt")), progress=False)


def test_outputs_csv_plot_and_best_accuracy(tmp_path):
    m = train(TrainConfig(task="copying", model="scornn", hidden=6, length=5, batch=4,
                          eval_every=2, eval_size=8, steps=6), out=tmp_path, progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["step", "seconds", "train_loss"] and len(rows) == 4
    assert [float(r.split(",")[0]) for r in rows[1:]] == [2, 4, 6]
    assert m["best_eval_accuracy"] == max(h["eval_accuracy"] for h in m["history"])
    assert (tmp_path / "curves.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 6


def test_cli_resume(tmp_path, capsys):
    args = ["train", "--task", "adding", "--model", "scornn", "--hidden", "6", "--length", "5",
            "--batch", "4", "--eval-every", "2", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(args + ["--steps", "2"]) == 0
    assert cli.main(args + ["--steps", "4", "--resume", str(tmp_path / "checkpoint.pt")]) == 0
    assert "4 steps" in capsys.readouterr().out.splitlines()[-2]


def test_torchrun_two_processes_follow_one_process_on_the_global_batch(tmp_path):
    """`torchrun --nproc-per-node 2` (gloo, CPU): DistributedDataParallel on two halves of
    each batch trains as one process on the whole batch (to all-reduce rounding)."""
    import os
    import subprocess
    import sys

    args = ["train", "--task", "copying", "--model", "scurnn", "--hidden", "6", "--length", "5",
            "--batch", "8", "--steps", "6", "--eval-every", "3", "--eval-size", "16",
            "--no-progress"]
    assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "fastunitary", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["steps"] == one["steps"] == 6
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("final_train_loss", "final_eval_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5)
    assert not (tmp_path / "two" / "checkpoint.pt.tmp").exists()


def test_cli_permuted_flag(tmp_path, capsys):
    args = ["train", "--task", "digits", "--permuted", "--model", "lstm", "--hidden", "4",
            "--steps", "1", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["task"] == "permuted_digits"
    with pytest.raises(SystemExit):
        cli.main(["train", "--task", "copying", "--permuted", "--steps", "1"])
    assert "--permuted applies to" in capsys.readouterr().err


def test_cli_resume_needs_a_budget(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--resume", str(tmp_path / "checkpoint.pt")])
    assert "--resume needs a budget" in capsys.readouterr().err
