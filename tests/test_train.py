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


def test_resume_refuses_a_spent_budget(tmp_path):
    """A resume whose steps (or seconds) the checkpoint has already trained ran no step and
    reported the checkpoint under a config that did not describe it."""
    base = dict(task="copying", model="scornn", hidden=6, length=5, batch=4, eval_every=2,
                eval_size=8)
    train(TrainConfig(**base, steps=4), out=tmp_path, progress=False)
    ckpt = str(tmp_path / "checkpoint.pt")
    for budget in (dict(steps=4), dict(steps=2), dict(max_seconds=1e-3),
                   dict(steps=10, max_seconds=1e-3)):
        with pytest.raises(ValueError, match="the checkpoint has trained 4 steps in"):
            train(TrainConfig(**base, **budget, resume=ckpt), progress=False)
    assert train(TrainConfig(**base, steps=6, resume=ckpt), progress=False)["steps"] == 6


def test_cli_resume(tmp_path, capsys):
    args = ["train", "--task", "adding", "--model", "scornn", "--hidden", "6", "--length", "5",
            "--batch", "4", "--eval-every", "2", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(args + ["--steps", "2"]) == 0
    assert cli.main(args + ["--steps", "4", "--resume", str(tmp_path / "checkpoint.pt")]) == 0
    assert "4 steps" in capsys.readouterr().out.splitlines()[-2]


def torchrun(*args, timeout=180):
    """``torchrun --standalone --nproc-per-node 2 ARGS`` (gloo on CPU), its CompletedProcess."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         *args], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=timeout)


def test_torchrun_two_processes_follow_one_process_on_the_global_batch(tmp_path):
    """`torchrun --nproc-per-node 2` (gloo, CPU): DistributedDataParallel on two halves of
    each batch trains as one process on the whole batch (to all-reduce rounding)."""
    args = ["train", "--task", "copying", "--model", "scurnn", "--hidden", "6", "--length", "5",
            "--batch", "8", "--steps", "6", "--eval-every", "3", "--eval-size", "16",
            "--no-progress"]
    assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    run = torchrun("-m", "fastunitary", *args, "--out", str(tmp_path / "two"))  # ~5 s here
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("final eval loss") == 1, run.stdout  # rank 0's summary only
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


def test_torchrun_process_trains_several_times(tmp_path):
    """train() called again in one torchrun process (a seed sweep) used to tear the process
    group down and start another, which gloo refuses at random ("connectFullMesh failed":
    about one launch in two); the group now stays for the process."""
    script = tmp_path / "sweep.py"
    script.write_text(  # each rank logs to its own file: the two share stdout unbuffered
        "import os, pathlib\n"
        "from fastunitary.train import TrainConfig, train\n"
        f"log = pathlib.Path({str(tmp_path)!r}) / ('rank' + os.environ['RANK'])\n"
        "for seed in range(4):\n"
        "    m = train(TrainConfig(task='adding', model='lstm', hidden=4, length=5, batch=4,\n"
        "                          steps=2, eval_every=2, eval_size=4, seed=seed), progress=False)\n"
        "    with log.open('a') as f:\n"
        "        f.write(f\"{seed} {m['world_size']}\\n\")\n")
    run = torchrun(str(script))
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}").read_text() == "0 2\n1 2\n2 2\n3 2\n"


def test_a_stray_rank_variable_without_a_group_still_writes_the_outputs(tmp_path, monkeypatch):
    """RANK set but no process group to join (WORLD_SIZE unset): one process, which is the
    main one and writes its outputs (the folder is prepared by the group's rank, not only
    by the launcher's variable)."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    train(TrainConfig(task="adding", model="lstm", hidden=4, length=5, batch=4, steps=2,
                      eval_every=2, eval_size=4), out=str(tmp_path / "o"), progress=False)
    assert (tmp_path / "o" / "metrics.json").is_file()


def test_torchrun_reports_a_bad_out_folder_before_the_processes_connect(tmp_path):
    (tmp_path / "afile").write_text("")
    run = torchrun("-m", "fastunitary", "train", "--task", "adding", "--model", "lstm",
                   "--hidden", "4", "--length", "5", "--batch", "4", "--steps", "2",
                   "--no-progress", "--out", str(tmp_path / "afile" / "sub"))
    assert run.returncode != 0
    assert "fastunitary train: error: out: cannot create the folder" in run.stderr
    # the other rank used to fail inside DistributedDataParallel's setup, in gloo
    assert "gloo" not in run.stderr.lower() and "DistributedDataParallel" not in run.stderr


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


def _cli_error(capsys, args) -> str:
    """The one line ``fastunitary train`` prints for a bad argument (exit code 2)."""
    task = [] if "--task" in args else ["--task", "adding", "--length", "4"]
    rc = cli.main(["train", *task, "--hidden", "4", "--batch", "2", "--steps", "2",
                   "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("fastunitary train: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("args, says", [
    (["--device", "cuda:99"], "device 'cuda:99' is not available here"),
    (["--device", "foo"], "device 'foo' is not a device"),
    (["--backend", "triton"], "backend='triton' for op 'recurrence' needs CUDA tensors"),
    (["--backend", "triton", "--compile"], "backend='triton' for op 'recurrence' needs CUDA"),
    (["--steps", "-3"], "steps must be >= 1, got -3"),
    (["--max-seconds", "-1"], "max_seconds must be > 0, got -1.0"),
    (["--clip", "-1"], "clip must be >= 0 (0: no clipping), got -1.0"),
    (["--seed", "-1"], "seed must be >= 0 and < 2**64, got -1"),
    (["--seed", str(2**64)], "seed must be >= 0 and < 2**64"),  # torch's said "long long"
    (["--device", "meta"], "device 'meta' holds no data"),  # it failed at the first .item()
    (["--task", "digits", "--permuted", "--seed", str(2**32)],
     "seed must be in [0, 2**32) for a permuted task"),
    # options read by other models or tasks only: refused, not dropped
    (["--model", "lstm", "--short", "5"], "--short applies to enrnn, not lstm"),
    (["--model", "scurnn", "--rho", "3"], "--rho applies to scornn, enrnn, not scurnn"),
    (["--model", "gru", "--lr-A", "1e-3"], "--lr-A applies to scurnn, scornn, enrnn, not gru"),
    (["--model", "scornn", "--lr-D", "1e-3"], "--lr-D applies to scurnn, not scornn"),
    (["--model", "nesterovlstm", "--mu", "0.9"], "--mu applies to momentumlstm, adamlstm, "
     "momentumrnn, sbornn_hb, sbornn_nag, not nesterovlstm"),
    (["--model", "sbornn", "--mu", "0.9"], "not sbornn"),
    (["--model", "scornn", "--momentum-step", "0.5"], "--momentum-step applies to"),
    (["--model", "momentumlstm", "--restart", "3"], "--restart applies to nesterovlstm"),
    (["--model", "lstm", "--eta", "0.1"], "--eta applies to sbornn, sbornn_hb, sbornn_nag"),
    (["--model", "lstm", "--inner-steps", "2"], "--inner-steps applies to sbornn"),
    (["--convention", "exprnn"], "--convention applies to copying, not adding"),
    (["--task", "digits", "--length", "7"], "--length applies to copying, adding, not digits"),
    # torch's own message did not say which rate
    (["--model", "scurnn", "--lr-A", "-1"], "lr_A must be > 0 and finite, got -1.0"),
    (["--lr", "0"], "lr must be > 0 and finite, got 0.0"),
])
def test_cli_refuses_bad_arguments_in_one_line(capsys, monkeypatch, args, says):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert says in _cli_error(capsys, args)


def test_cli_reports_a_refused_backend_without_traceback(capsys, dispatch_interprets):
    """BackendUnavailableError, a RuntimeError, is a refused request: one line, exit code 2
    (SBO-RNN has no Triton kernel; here the kernels could run on the CPU)."""
    pytest.importorskip("triton")
    err = _cli_error(capsys, ["--model", "sbornn", "--backend", "triton"])
    assert "backend='triton' is not available for fastunitary op 'sbo_recurrence'" in err


def test_cli_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    text, empty, tensor = tmp_path / "text.pt", tmp_path / "empty.pt", tmp_path / "tensor.pt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    empty.write_bytes(b"")
    torch.save(torch.zeros(2), tensor)
    for path in (text, empty, tensor):
        err = _cli_error(capsys, ["--resume", str(path)])
        assert f"resume: {path} is not a fastunitary checkpoint" in err


def test_a_bad_output_folder_is_refused_before_the_first_step(tmp_path, capsys, monkeypatch):
    from fastunitary import train as train_module

    def no_step(self, x):
        raise AssertionError("trained before checking the output folder")

    monkeypatch.setattr(train_module.SequenceModel, "forward", no_step)
    afile = tmp_path / "afile"
    afile.write_text("")
    assert "cannot create the folder" in _cli_error(capsys, ["--out", str(afile)])
    assert "Not a directory" in _cli_error(capsys, ["--out", str(afile / "sub")])
    with pytest.raises(ValueError, match="out: cannot create the folder"):
        train(TrainConfig(task="adding", length=4, hidden=4, batch=2, steps=2), out=afile,
              progress=False)


@pytest.mark.parametrize("field, value, says", [
    ("steps", 0, "steps must be >= 1"),
    ("max_seconds", 0.0, "max_seconds must be > 0"),
    ("max_seconds", float("nan"), "max_seconds must be > 0"),
    ("clip", -0.5, "clip must be >= 0"),
    ("seed", -1, "seed must be >= 0"),
    ("device", "cuda:99", "device 'cuda:99' is not available here"),
    # the Python API is not behind argparse's type=int: 2.5 ran (and reported) 3 steps
    ("steps", 2.5, "steps must be an int, got 2.5"),
    ("eval_every", 1.5, "eval_every must be an int, got 1.5"),
    ("seed", 1.0, "seed must be an int, got 1.0"),
])
def test_train_refuses_budgets_clip_seed_and_devices_that_cannot_work(field, value, says):
    cfg = TrainConfig(task="adding", length=4, hidden=4, batch=2, steps=2)
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=says):
        train(cfg, progress=False)


@pytest.mark.parametrize("task", ["copying", "adding"])
def test_a_seeds_eval_set_is_not_the_next_seeds_training_data(task, monkeypatch):
    """The eval set was drawn from ``default_rng(seed + 1)``: seed 1's first training
    batches were seed 0's eval set. Each call's generator is recorded: seed 0's eval draw
    must differ from every draw seed 1 trains on."""
    from fastunitary import train as train_module

    draws = []
    cls = train_module.TASK_CLASSES[task]
    batch = cls.batch

    def recorded(self, n, rng, device):
        out = batch(self, n, rng, device)
        draws.append((n, out[0].clone()))
        return out

    monkeypatch.setattr(cls, "batch", recorded)
    base = dict(task=task, model="scornn", hidden=4, length=6, batch=8, eval_size=8,
                eval_every=10, steps=3)
    train(TrainConfig(**base, seed=0), progress=False)
    eval_0 = draws[0][1]  # the eval set is drawn before the first step
    draws.clear()
    train(TrainConfig(**base, seed=1), progress=False)
    assert len(draws) == 4
    for _, x in draws[1:]:
        assert not torch.equal(x, eval_0)


def test_history_and_csv_end_at_the_last_step(tmp_path):
    m = train(TrainConfig(task="adding", model="scornn", hidden=6, length=5, batch=4,
                          eval_every=2, eval_size=8, steps=5), out=tmp_path, progress=False)
    assert [h["step"] for h in m["history"]] == [2, 4, 5]
    assert m["history"][-1]["eval_loss"] == m["final_eval_loss"]
    assert m["history"][-1]["train_loss"] == m["final_train_loss"]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,seconds,train_loss,eval_loss"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [2, 4, 5]


def test_resume_history_ends_at_the_last_step_as_the_straight_run(tmp_path):
    """The last evaluation of a run that stopped between evaluations is not kept in its
    checkpoint: the resumed run's history is the uninterrupted one's."""
    base = dict(task="copying", model="scornn", hidden=6, length=5, batch=4, eval_every=3,
                eval_size=8, seed=1)
    straight = train(TrainConfig(**base, steps=7), progress=False)
    first = train(TrainConfig(**base, steps=5), out=tmp_path, progress=False)
    assert [h["step"] for h in first["history"]] == [3, 5]
    resumed = train(TrainConfig(**base, steps=7, resume=str(tmp_path / "checkpoint.pt")),
                    out=tmp_path, progress=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert [h["step"] for h in resumed["history"]] == [3, 6, 7]
    assert strip(resumed["history"]) == strip(straight["history"])


def test_metrics_csv_has_its_header_without_evaluations(tmp_path):
    from fastunitary.train import write_outputs

    write_outputs(tmp_path, {"task": "adding", "model": "lstm", "baseline_loss": 1 / 6,
                             "history": []})
    assert (tmp_path / "metrics.csv").read_text() == "step,seconds,train_loss,eval_loss\n"
    write_outputs(tmp_path, {"task": "digits", "model": "lstm", "baseline_loss": 2.3,
                             "final_eval_accuracy": 0.1, "history": []})
    assert (tmp_path / "metrics.csv").read_text().startswith(
        "step,seconds,train_loss,eval_loss,eval_accuracy\n")


def test_cli_help_shows_every_default_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    blocks, name = {}, None  # option -> its help text, lines joined
    for line in text.split("options:")[1].splitlines():
        if line.startswith("  -"):
            name = line.split()[0]
        if name:
            blocks[name] = blocks.get(name, "") + " " + line.strip()
    for option in ("--task", "--model", "--hidden", "--layers", "--batch", "--lr", "--lr-A",
                   "--lr-D", "--clip", "--eval-every", "--eval-size", "--seed", "--device",
                   "--backend", "--mu", "--momentum-step", "--eta"):
        assert blocks[option].count("(default: ") == 1, blocks[option]
    assert "(default: 32)" in blocks["--batch"]
    assert blocks["--mu"].count("0.6") == 1, blocks["--mu"]
    for option in ("--steps", "--max-seconds"):
        assert "60" in blocks[option] and "None" not in blocks[option], blocks[option]
    assert "None" not in blocks["--out"] and "False" not in blocks["--compile"]


def test_a_seed_beyond_numpy_randomstate_trains_where_no_permutation_is_drawn():
    cfg = TrainConfig(task="adding", length=4, hidden=4, batch=2, steps=1, eval_every=1,
                      seed=2**40)
    assert train(cfg, progress=False)["steps"] == 1
