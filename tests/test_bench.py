"""The benchmark suite (``python -m bench``): outputs, correctness gate, grids, formulas."""

import dataclasses
import json
import types

import pytest
import torch

from bench import registry, report, suite
from bench.suite import Shape

TINY = ["--T", "12", "--B", "2", "--hidden", "8", "--input-size", "3", "--repeats", "3",
        "--row-seconds", "0.001", "--no-progress", "--device", "cpu"]


def test_every_model_runs_gated_and_writes_json_table_and_plot(tmp_path, capsys):
    result = suite.main(TINY + ["--out", str(tmp_path), "--name", "t"])
    rows = result["rows"]
    assert {r["case"] for r in rows} == set(registry.REGISTRY)
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    for r in rows:
        # every variant equals an independent computation of its model
        assert r["rel_error"] < 1e-5 and r["tokens_per_s"] > 0 and r["median_s"] > 0
        assert r["q20_s"] <= r["median_s"] <= r["q80_s"]
        assert r["input_projection_timed"] is True
        assert r["tflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e12)
        if r["mode"] == "forward+backward":  # activations saved for backward, at least
            assert r["peak_memory_bytes"] >= 12 * 2 * 8 * 4
    variants = {(r["case"], r["variant"]) for r in rows}
    assert ("scurnn", "loop") in variants and ("lstm", "loop") not in variants  # baselines: no loop
    lstm = [r for r in rows if r["case"] == "lstm"]
    assert all(r["speed_vs_lstm"] == pytest.approx(1.0) for r in lstm)
    by_case = {r["case"]: r for r in rows}
    assert by_case["lstm"]["params"] == sum(p.numel() for p in torch.nn.LSTM(3, 8).parameters())
    assert by_case["scurnn"]["recurrent_state_reals"] == 8  # complex n = 4 is 8 reals
    saved = json.loads((tmp_path / "t_cpu.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    assert {"torch", "triton", "git_commit", "cpu_threads"} <= set(saved["environment"])
    table = (tmp_path / "t_cpu.md").read_text()
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row
    assert (tmp_path / "t_cpu.png").stat().st_size > 10_000
    capsys.readouterr()
    report.main([str(tmp_path / "t_cpu.json"), "--center", "--mode", "forward"])
    assert capsys.readouterr().out.count("| forward |") == len(rows) // 2


def test_a_variant_that_disagrees_is_reported_failed_and_not_timed(tmp_path, monkeypatch):
    case = registry.REGISTRY["scornn"]
    wrong = dataclasses.replace(case, loop=lambda m, x: 1.01 * case.loop(m, x))
    monkeypatch.setitem(registry.REGISTRY, "scornn", wrong)
    monkeypatch.setitem(suite.REGISTRY, "scornn", wrong)
    rows = suite.main(TINY + ["--models", "scornn", "--out", str(tmp_path)])["rows"]
    assert rows and all(r["status"] == "failed correctness gate" for r in rows)
    assert all("median_s" not in r and r["rel_error"] > 5e-3 for r in rows)
    assert "failed correctness gate" in (tmp_path / "bench_custom_cpu.md").read_text()


def test_max_minutes_stops_before_the_next_row(tmp_path):
    result = suite.main(TINY + ["--models", "lstm", "--max-minutes", "0", "--out", str(tmp_path)])
    assert result["rows"] == [] and result["config"]["rows_planned"] == 2
    # the report of a run with no row prints its header rather than failing
    (path,) = tmp_path.glob("*.json")
    report.main([str(path), "--center"])


def test_a_cpu_run_records_no_gpu_even_on_a_gpu_machine(monkeypatch):
    """A CPU result on a machine with a GPU is a CPU result: its files must not be named
    after the GPU (the tests look for <name>_cpu.json)."""
    from bench import common

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    assert "gpu" not in common.environment(torch.device("cpu"))
    assert "gpu" not in common.environment()
    monkeypatch.delenv("GIT_COMMIT", raising=False)
    monkeypatch.setattr(common.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError))
    assert common.environment()["git_commit"] is None  # no .git, no GIT_COMMIT


def test_git_commit_names_the_commit_over_a_stale_git_folder(monkeypatch):
    """The lent GPU machines get the working tree and a .git that may be older (an H200's
    copy named the session's first commit, dirty): ci/gpu.sh's caller passes GIT_COMMIT,
    and it wins over git rev-parse."""
    from bench import common

    monkeypatch.setenv("GIT_COMMIT", "abc1234")
    env = common.environment()
    assert env["git_commit"] == "abc1234" and env["git_dirty"] is None


def test_the_json_is_written_after_every_row(tmp_path, monkeypatch):
    """A run killed by a time cap keeps the rows it measured: the JSON is rewritten after
    each row (complete: false), and whole at the end."""
    seen = []
    write_json = report.write_json
    monkeypatch.setattr(report, "write_json", lambda r, *a: (
        seen.append((len(r["rows"]), r["complete"])), write_json(r, *a))[1])
    result = suite.main(TINY + ["--models", "lstm", "--out", str(tmp_path), "--name", "p"])
    assert seen == [(1, False), (2, False), (2, True)] and result["complete"]
    assert json.loads((tmp_path / "p_cpu.json").read_text())["complete"] is True


def test_a_run_says_it_replaces_the_files_at_its_destination(tmp_path, capsys):
    """The default destination holds the committed results: a run names the file it writes
    before the first row, and says when it replaces one."""
    args = TINY + ["--models", "lstm", "--modes", "forward", "--out", str(tmp_path), "--name", "r"]
    suite.main(args)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"writing {tmp_path / 'r_cpu.json'} as rows finish, the table and plot at the end"
    suite.main(args)
    assert capsys.readouterr().out.splitlines()[0].endswith("(replacing the files there)")


@pytest.mark.parametrize("module, args, says", [
    # each reached torch or a division as a traceback
    ("bench.suite", ["--T", "-1"], "argument --T: must be at least 1, got -1"),
    ("bench.suite", ["--B", "0"], "argument --B: must be at least 1, got 0"),
    ("bench.suite", ["--hidden", "3"], "argument --hidden: must be even"),
    ("bench.suite", ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    ("bench.suite", ["--max-minutes", "-1"], "argument --max-minutes: must be >= 0 and finite"),
    ("bench.suite", ["--row-seconds", "0"], "argument --row-seconds: must be > 0 and finite"),
    ("bench.suite", ["--device", "foo"], "argument --device: device 'foo' is not a device"),
    ("bench.suite", ["--device", "meta"], "argument --device: device 'meta' holds no data"),
    ("bench.rflo_periodic", ["--eval-every", "0"], "argument --eval-every: must be at least 1"),
    ("bench.rflo_periodic", ["--periods", "0"], "argument --periods: must be at least 1"),
    ("bench.rflo_periodic", ["--seeds", "-1"], "argument --seeds: must be at least 0, got -1"),
    ("bench.suite", ["--loop-max-T", "-1"], "argument --loop-max-T: must be at least 0"),
    ("bench.rflo_periodic", ["--tau", "0"], "argument --tau: must be > 0 and finite"),
    ("bench.rflo_periodic", ["--cue-segment", "0.01"], "--cue-segment 0.01 tau is less than one step"),
    ("bench.cayley", ["--n", "0"], "argument --n: must be at least 1, got 0"),
    ("bench.packed", ["--B", "x"], "argument --B: not an int: 'x'"),
    ("bench.compare_training", ["--lr", "nan"], "argument --lr: must be > 0 and finite"),
])
def test_bench_commands_refuse_bad_arguments_in_one_line(module, args, says, capsys, tmp_path):
    import importlib

    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_presets_cover_the_grids():
    full = suite.PRESETS["full"].shapes()
    assert {s.T for s in full} == {1024, 4096, 16384}
    assert {s.B for s in full} == {1, 16, 64, 256}
    assert {s.hidden for s in full} == {128, 256, 512, 1024}
    assert {s.dtype for s in full} == {"fp32", "bf16", "fp16"}
    # half-precision shapes where cuDNN may run its persistent LSTM kernel
    assert Shape(1024, 64, 512, "fp16") in full
    quick = suite.PRESETS["quick"].shapes()
    assert len(quick) == len(set(quick)) and {s.dtype for s in quick} == {"fp32"}
    assert Shape(*suite.PRESETS["quick"].center, "fp32") in quick


@pytest.mark.parametrize("case, shape, m, forward, gpu, algo", [
    ("lstm", Shape(1024, 64, 256, "fp16"), 128, True, (9, 0, 132), "persist_static"),
    ("lstm", Shape(1024, 64, 256, "fp16"), 128, False, (9, 0, 132), "persist_static"),
    ("lstm", Shape(1024, 64, 128, "fp16"), 128, True, (9, 0, 132), "persist_static_small_h"),
    ("lstm", Shape(1024, 64, 128, "fp32"), 128, False, (9, 0, 132), "persist_static_small_h"),
    ("lstm", Shape(1024, 256, 256, "fp16"), 128, True, (9, 0, 132), "standard"),  # B > 128
    ("lstm", Shape(1024, 64, 256, "bf16"), 128, True, (9, 0, 132), "standard"),
    ("lstm", Shape(1024, 64, 256, "fp16"), 96, True, (9, 0, 132), "standard"),  # input % 128
    ("lstm", Shape(1024, 64, 256, "fp16"), 128, True, (8, 6, 84), "standard"),  # sm_86
    ("gru", Shape(1024, 64, 256, "fp16"), 128, True, (9, 0, 132), "standard"),
    ("lstm", Shape(1024, 64, 256, "fp16"), 128, True, None, None),  # not on CUDA
    ("scurnn", Shape(1024, 64, 256, "fp16"), 128, True, (9, 0, 132), None),
])
def test_cudnn_algorithm_follows_torch_heuristics(case, shape, m, forward, gpu, algo):
    props = None if gpu is None else types.SimpleNamespace(
        major=gpu[0], minor=gpu[1], multi_processor_count=gpu[2])
    assert suite.cudnn_rnn_algorithm(case, shape, m, forward, props) == algo


def test_flop_formulas():
    s = Shape(T=10, B=3, hidden=8, dtype="fp32")
    lstm, scurnn = registry.REGISTRY["lstm"], registry.REGISTRY["scurnn"]
    assert suite.flops(lstm, s, 5, "forward") == 30 * (2 * 5 * 32 + 2 * 8 * 32)
    assert suite.flops(lstm, s, 5, "forward+backward") == 3 * suite.flops(lstm, s, 5, "forward")
    # complex n = 4 as its real 8 x 8 embedding, plus the Cayley map once per call
    assert suite.flops(scurnn, s, 5, "forward") == 30 * (2 * 5 * 8 + 2 * 8 * 8) + 8 / 3 * 8 ** 3


def test_compare_training_writes_runs_plot_and_summary(tmp_path, capsys):
    from bench import compare_training

    compare_training.main(["--task", "copying", "--length", "5", "--models", "scurnn", "lstm",
                           "--size", "scurnn=4", "--size", "lstm=4", "--batch", "4",
                           "--steps", "4", "--eval-every", "2", "--seeds", "0", "1",
                           "--name", "c", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    runs = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert set(runs) == {"scurnn", "lstm"} and all(len(v) == 2 for v in runs.values())
    assert (tmp_path / "c.png").stat().st_size > 10_000
    for name in ("scurnn", "lstm"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"{name}:"))
        assert "vs baseline" in line and "(mean of 2 seeds)" in line


def test_rflo_periodic_runs_every_seed_and_reports_their_median(tmp_path, capsys):
    import statistics

    from bench import rflo_periodic

    argv = ["--periods", "2", "--trials", "4", "--eval-every", "2", "--g", "1.0", "--decay", "2",
            "--lr-out-rflo", "1e-2", "--out", str(tmp_path)]
    rflo_periodic.main(argv + ["--seeds", "0", "1", "2", "--name", "r"])
    result = json.loads((tmp_path / "r.json").read_text())["results"]["2"]
    assert (tmp_path / "r.png").stat().st_size > 10_000
    for rule in ("rflo", "bptt"):
        seeds = [result["seeds"][s][rule] for s in ("0", "1", "2")]
        assert [k for k, _ in seeds[0]["curve"]] == [0, 2, 4]
        # realizations differ (their own network, start state and feedback) ...
        assert len({s["first"] for s in seeds}) == 3
        # ... and the summary is their median
        summary = result["summary"][rule]
        assert summary["reduction"] == statistics.median(s["reduction"] for s in seeds)
        assert summary["reductions"] == [s["reduction"] for s in seeds]
    # a seed run alone reproduces its run among others
    rflo_periodic.main(argv + ["--seeds", "1", "--name", "one"])
    alone = json.loads((tmp_path / "one.json").read_text())["results"]["2"]["seeds"]["1"]
    assert alone["rflo"]["curve"] == result["seeds"]["1"]["rflo"]["curve"]
    assert "median" in capsys.readouterr().out


def test_rflo_periodic_decay_divides_both_steps_by_one_plus_trial_over_k(tmp_path, monkeypatch):
    from bench import rflo_periodic

    seen = []

    class Recording(rflo_periodic.RFLO):
        def run(self, x, target, h0=None, *, learn=True):
            if learn:
                seen.append((self.lr, self.lr_out))
            return super().run(x, target, h0, learn=learn)

    monkeypatch.setattr(rflo_periodic, "RFLO", Recording)
    rflo_periodic.main(["--periods", "2", "--trials", "3", "--eval-every", "3", "--lr-rflo", "1e-3",
                        "--lr-out-rflo", "1e-2", "--decay", "2", "--out", str(tmp_path)])
    want = [(1e-3 / (1 + k / 2), 1e-2 / (1 + k / 2)) for k in range(3)]
    assert [r for pair in seen for r in pair] == pytest.approx([r for pair in want for r in pair])


def test_rflo_periodic_rflo_from_reuses_rflo_and_trains_only_bptt(tmp_path, monkeypatch):
    from bench import rflo_periodic

    argv = ["--periods", "2", "--trials", "3", "--eval-every", "1", "--g", "1.0",
            "--out", str(tmp_path)]
    rflo_periodic.main(argv + ["--seeds", "0", "1", "--name", "a"])
    earlier = json.loads((tmp_path / "a.json").read_text())["results"]["2"]["seeds"]

    def no_rflo(*args, **kwargs):
        raise AssertionError("RFLO trained although its curves were given")

    clips = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *args, **kwargs):
        clips.append(max_norm)
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(rflo_periodic, "train_rflo", no_rflo)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    rflo_periodic.main(argv + ["--seeds", "1", "--name", "b", "--rflo-from", str(tmp_path / "a.json"),
                               "--lr-bptt", "1e-2", "--clip-bptt", "0.5"])
    later = json.loads((tmp_path / "b.json").read_text())["results"]["2"]["seeds"]["1"]
    assert later["rflo"]["curve"] == earlier["1"]["rflo"]["curve"]
    assert later["bptt"]["curve"][0] == earlier["1"]["bptt"]["curve"][0]  # same start
    assert later["bptt"]["curve"] != earlier["1"]["bptt"]["curve"]  # another step, clipped
    assert clips == [0.5] * 3

    # curves of another RFLO setting, or of missing seeds, are refused
    with pytest.raises(SystemExit, match="lr_rflo"):
        rflo_periodic.main(argv + ["--seeds", "0", "--rflo-from", str(tmp_path / "a.json"),
                                   "--lr-rflo", "1e-4"])
    with pytest.raises(SystemExit, match=r"seeds \[2\]"):
        rflo_periodic.main(argv + ["--seeds", "0", "2", "--rflo-from", str(tmp_path / "a.json")])


def test_rflo_periodic_cues_are_segment_inputs_that_every_rule_but_the_readout_trains(
        tmp_path, monkeypatch):
    from bench import rflo_periodic
    from fastunitary.rflo import segment_cues

    trainers = []  # (trainer, its network's initial weights, the inputs of its trials)

    class Recording(rflo_periodic.RFLO):
        def __init__(self, rnn, *args, **kwargs):
            super().__init__(rnn, *args, **kwargs)
            trainers.append((self, {k: v.detach().clone() for k, v in rnn.named_parameters()}, []))

        def run(self, x, target, h0=None, *, learn=True):
            trainers[-1][2].append(x)
            return super().run(x, target, h0, learn=learn)

    bptt = []
    real_loss = rflo_periodic.bptt_loss

    def recording_loss(rnn, x, target, h0=None):
        bptt.append((rnn, x))
        return real_loss(rnn, x, target, h0)

    monkeypatch.setattr(rflo_periodic, "RFLO", Recording)
    monkeypatch.setattr(rflo_periodic, "bptt_loss", recording_loss)
    rflo_periodic.main(["--periods", "3", "--trials", "3", "--eval-every", "3", "--lr-rflo", "1e-2",
                        "--cue-segment", "1", "--readout-baseline", "--out", str(tmp_path)])
    cues = segment_cues(30, 10)  # period 3 tau = 30 steps, a new cue every tau = 10 steps
    (rflo, start, rflo_x), (readout, start_readout, readout_x) = trainers
    for xs in (rflo_x, readout_x, [x for _, x in bptt]):
        assert all(torch.equal(x, cues) for x in xs)
    assert all(torch.equal(start[k], start_readout[k]) for k in start)  # the same network
    for name in ("weight", "weight_in", "weight_out"):  # RFLO trains the cues' weights too
        assert not torch.equal(getattr(rflo.rnn, name).detach(), start[name]), name
    assert not torch.equal(bptt[-1][0].weight_in.detach(), start["weight_in"])  # and BPTT
    for name in ("weight", "weight_in"):  # the baseline leaves the network alone
        assert torch.equal(getattr(readout.rnn, name).detach(), start[name]), name
    assert not torch.equal(readout.rnn.weight_out.detach(), start["weight_out"])
    result = json.loads((tmp_path / "rflo_periodic.json").read_text())["results"]["3"]
    assert set(result["summary"]) == {"rflo", "bptt", "readout"}


@pytest.mark.parametrize("empty_history", [False, True])
def test_compare_training_takes_the_final_evaluation_when_none_came_before(
        tmp_path, capsys, monkeypatch, empty_history):
    """A budget shorter than --eval-every: the best result is the final evaluation."""
    from bench import compare_training

    if empty_history:  # what a run without evaluations in its history reports
        real = compare_training.train
        monkeypatch.setattr(compare_training, "train",
                            lambda cfg, **kw: {**real(cfg, **kw), "history": []})
    for task in ("adding", "copying"):
        compare_training.main(["--task", task, "--length", "4", "--models", "scornn",
                               "--size", "scornn=4", "--batch", "2", "--steps", "2",
                               "--eval-every", "100", "--name", task, "--out", str(tmp_path)])
        line = next(ln for ln in capsys.readouterr().out.splitlines() if " seed 0: " in ln)
        m = json.loads((tmp_path / f"{task}.json").read_text())["runs"]["scornn"][0]
        if task == "adding":
            final = f"{m['final_eval_loss']:.4f}"
            assert f"final eval loss {final} (best {final})" in line, line
        else:
            final = f"{m['final_eval_accuracy']:.3f}"
            assert f"final test accuracy {final} (best {final})" in line, line
        assert [h["step"] for h in m["history"]] == ([] if empty_history else [2])


def test_compare_training_plots_only_the_evaluations_every_seed_made(tmp_path):
    """Under a time budget each seed's history ends at its own last step."""
    import matplotlib.pyplot as plt

    from bench import compare_training

    def run(steps, seconds):
        return {"params": 10, "history": [{"step": s, "seconds": t, "eval_loss": 1.0 / s}
                                          for s, t in zip(steps, seconds)]}

    runs = {"m": [run([2, 4, 5], [1.0, 2.0, 2.5]), run([2, 4, 6], [3.0, 4.0, 6.0])]}
    compare_training.plot(runs, 1.0, "t", tmp_path / "p.png")
    by_time, by_step = plt.gcf().axes
    assert list(by_step.lines[0].get_xdata()) == [2, 4]
    assert list(by_time.lines[0].get_xdata()) == [2.0, 3.0]  # the seeds' mean times
    assert list(by_step.lines[0].get_ydata()) == [0.5, 0.25]
    plt.close("all")


def test_rflo_periodic_evaluates_the_last_trial_when_eval_every_does_not_divide(
        tmp_path, monkeypatch):
    from bench import rflo_periodic

    argv = ["--periods", "4", "--trials", "3", "--eval-every", "5", "--hidden", "4", "--tau", "2",
            "--out", str(tmp_path)]
    rflo_periodic.main(argv + ["--name", "a"])
    result = json.loads((tmp_path / "a.json").read_text())["results"]["4"]
    for rule in ("rflo", "bptt"):
        r = result["seeds"]["0"][rule]
        assert [k for k, _ in r["curve"]] == [0, 3]
        assert r["last"] == r["curve"][-1][1] != r["first"]  # trained: the loss moved
        assert r["reduction"] == r["first"] / r["last"] != 1.0
    assert (tmp_path / "a.png").stat().st_size > 10_000

    # --rflo-from takes those curves, last trial included ...
    monkeypatch.setattr(rflo_periodic, "train_rflo", lambda *a, **k: pytest.fail("RFLO trained"))
    rflo_periodic.main(argv + ["--name", "b", "--rflo-from", str(tmp_path / "a.json")])
    later = json.loads((tmp_path / "b.json").read_text())["results"]["4"]["seeds"]["0"]
    assert later["rflo"]["curve"] == result["seeds"]["0"]["rflo"]["curve"]
    assert later["bptt"]["curve"] == result["seeds"]["0"]["bptt"]["curve"]
    # ... and refuses curves that stop short of it (runs from before this was fixed)
    old = json.loads((tmp_path / "a.json").read_text())
    old["results"]["4"]["seeds"]["0"]["rflo"]["curve"].pop()
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="ends at trial 0, not at the last trial 3"):
        rflo_periodic.main(argv + ["--name", "c", "--rflo-from", str(tmp_path / "old.json")])


def test_recurrence_kernel_writes_its_json_after_every_row(tmp_path, monkeypatch):
    """bench.recurrence_kernel rewrites its JSON after each row (complete: false) and
    whole at the end, so that ci/gpu.sh's time cap keeps what it measured. On CPU only the
    reference backend runs: one row per (complex, n, B)."""
    from bench import common, recurrence_kernel

    seen = []
    write_json = report.write_json
    monkeypatch.setattr(common.report, "write_json", lambda r, *a: (
        seen.append((len(r["rows"]), r["complete"])), write_json(r, *a))[1])
    recurrence_kernel.main(["--T", "4", "--B", "2", "--n", "3", "--repeats", "1",
                            "--device", "cpu", "--out", str(tmp_path)])
    assert seen == [(1, False), (2, False), (2, True)]
    result = json.loads((tmp_path / "recurrence_kernel_cpu.json").read_text())
    assert result["complete"] is True
    assert [(r["complex"], r["backend"], r["status"]) for r in result["rows"]] == [
        (True, "reference", "ok"), (False, "reference", "ok")]


def test_recurrence_kernel_times_the_lstm_op_into_its_own_file(tmp_path):
    """``--op lstm_recurrence``: the LSTM recurrence's rows (real only) in
    ``lstm_recurrence_kernel_<device>.json``, beside the recurrence's file."""
    from bench import recurrence_kernel

    recurrence_kernel.main(["--op", "recurrence", "lstm_recurrence", "--T", "3", "--B", "2",
                            "--n", "4", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)])
    lstm = json.loads((tmp_path / "lstm_recurrence_kernel_cpu.json").read_text())
    assert lstm["op"] == "lstm_recurrence" and lstm["complete"] is True
    assert [(r["op"], r["complex"], r["n"], r["status"]) for r in lstm["rows"]] == [
        ("lstm_recurrence", False, 4, "ok")]
    assert lstm["rows"][0]["rel_error_vs_reference"] == 0.0
    assert lstm["rows"][0]["us_per_step_forward_backward"] > 0
    assert json.loads((tmp_path / "recurrence_kernel_cpu.json").read_text())["op"] == "recurrence"


def test_recurrence_kernel_times_each_split_tuning(tmp_path, monkeypatch):
    """``--block-k``/``--warps``/``--precision``: a split row per combination, each
    checked (output and gradients) against the reference, with the kernel module's
    settings restored afterwards. Through the interpreter (``--interpret``), at n = 40:
    split, three column groups."""
    from bench import recurrence_kernel
    from fastunitary.kernels import lstm_recurrence as K

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    before = (K.SPLIT_BLOCK_K, K.SPLIT_WARPS, K.SPLIT_PRECISION, K.SPLIT_STAGES)
    recurrence_kernel.main(["--op", "lstm_recurrence", "--T", "3", "--B", "2", "--n", "40",
                            "--block-k", "16", "32", "--precision", "ieee", "tf32x3",
                            "--warps", "2", "--stages", "2", "--repeats", "1", "--device", "cpu",
                            "--interpret", "--out", str(tmp_path)])
    assert (K.SPLIT_BLOCK_K, K.SPLIT_WARPS, K.SPLIT_PRECISION, K.SPLIT_STAGES) == before
    rows = json.loads((tmp_path / "lstm_recurrence_kernel_cpu.json").read_text())["rows"]
    split = [r for r in rows if r["design"] == "split"]
    keys = ("BLOCK_K", "num_warps", "PRECISION", "num_stages")
    for r in split[1:]:  # both directions alike
        assert all(r["split_settings"][k] == r["split_settings"][k + "_backward"] for k in keys)
    dispatched = K.plan(40)
    assert split[0]["split_settings"] == {k: v for k, v in dispatched.items()
                                          if k not in ("design", "BLOCK_B")}
    assert [tuple(r["split_settings"][k] for k in keys) for r in split[1:]] == [
        (16, 2, "ieee", 2), (16, 2, "tf32x3", 2), (32, 2, "ieee", 2), (32, 2, "tf32x3", 2)]
    assert [r["backend"] for r in rows] == ["triton"] * 5 + ["reference"]
    for r in split:  # the interpreter's products are float32 whatever the precision
        assert r["status"] == "ok"
        assert r["rel_error_vs_reference"] < 1e-5 and r["grad_rel_error_vs_reference"] < 1e-5


def test_packed_times_both_layouts_after_checking_they_agree(tmp_path, capsys):
    from bench import packed

    packed.main(["--T", "6", "--B", "3", "--hidden", "8", "--input-size", "2", "--repeats", "2",
                 "--models", "lstm", "scurnn", "momentumlstm", "--device", "cpu",
                 "--out", str(tmp_path)])
    result = json.loads((tmp_path / "packed_cpu.json").read_text())
    rows = result["rows"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        (m, mode) for m in ("lstm", "scurnn", "momentumlstm")
        for mode in ("forward", "forward+backward")}
    assert all(r["status"] == "ok" and r["rel_error_packed_vs_padded"] <= 1e-4 for r in rows)
    assert max(result["lengths"]) == 6 and min(result["lengths"]) >= 3 and result["complete"]
    assert "packed/padded" in capsys.readouterr().out


def test_packed_reports_a_model_whose_packed_output_disagrees(tmp_path, monkeypatch):
    from bench import packed

    class Shifted(torch.nn.LSTM):  # wrong on packed input only
        def forward(self, input, hx=None):
            out, state = super().forward(input, hx)
            if isinstance(out, torch.nn.utils.rnn.PackedSequence):
                out = out._replace(data=out.data + 1)
            return out, state

    monkeypatch.setitem(packed.MODELS, "lstm", lambda m, n: Shifted(m, n))
    packed.main(["--T", "5", "--B", "2", "--hidden", "4", "--input-size", "2", "--repeats", "1",
                 "--models", "lstm", "--device", "cpu", "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "packed_cpu.json").read_text())["rows"]
    assert row["status"] == "failed correctness gate" and "packed_s" not in row


def test_projection_times_lstmp_after_checking_it_equals_torchs(tmp_path, capsys):
    from bench import projection

    argv = ["--T", "5", "--B", "2", "--hidden", "6", "--proj", "2", "--input", "3",
            "--repeats", "2", "--device", "cpu", "--out", str(tmp_path)]
    projection.main(argv)
    result = json.loads((tmp_path / "projection_cpu.json").read_text())
    assert result["status"] == "ok" and result["rel_error_vs_torch"] <= 1e-4
    for mode in ("forward", "forward+backward"):
        assert set(result["times"][mode]) == set(result["speed_vs_torch_lstmp"][mode]) == {
            "torch.nn.LSTM(proj_size)", "MomentumLSTM(mu=0, step=1, proj_size)",
            "same, lstm_recurrence op", "MomentumLSTM(mu=0.6, proj_size)",
            "torch.nn.LSTM (no projection)"}
        assert result["speed_vs_torch_lstmp"][mode]["torch.nn.LSTM(proj_size)"] == 1.0
    assert "speed vs torch LSTMP" in capsys.readouterr().out


def test_projection_refuses_to_time_a_mismatch(tmp_path, monkeypatch):
    from bench import projection

    original = projection.MomentumLSTM.forward
    monkeypatch.setattr(projection.MomentumLSTM, "forward",
                        lambda self, *a: (lambda out: (out[0] + 1, out[1]))(original(self, *a)))
    with pytest.raises(SystemExit):
        projection.main(["--T", "4", "--B", "2", "--hidden", "4", "--proj", "2", "--input", "3",
                         "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "projection_cpu.json").read_text())
    assert result["status"] == "failed correctness gate" and "times" not in result


def test_per_sample_times_vmap_loop_and_backward_after_checking_them(tmp_path, capsys):
    from bench import per_sample

    per_sample.main(["--samples", "3", "--T", "4", "--hidden", "4", "--input-size", "2",
                     "--repeats", "2", "--models", "scurnn", "enrnn", "adamlstm", "sbornn",
                     "--device", "cpu", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "per_sample_cpu.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["scurnn", "enrnn", "adamlstm", "sbornn"]
    for r in result["rows"]:
        assert r["status"] == "ok" and r["rel_error_vmap_vs_loop"] <= 1e-8
        assert set(r["times_s"]) == {"vmap", "loop", "batched backward"}
    assert result["complete"] and "loop/vmap" in capsys.readouterr().out


def test_per_sample_reports_per_sample_gradients_that_disagree(tmp_path, monkeypatch):
    from bench import per_sample

    real_vmap = per_sample.vmap

    def wrong_vmap(fn, **kwargs):  # every per-sample gradient off by one
        return lambda *a: {k: v + 1 for k, v in real_vmap(fn, **kwargs)(*a).items()}

    monkeypatch.setattr(per_sample, "vmap", wrong_vmap)
    per_sample.main(["--samples", "2", "--T", "3", "--hidden", "4", "--input-size", "2",
                     "--repeats", "1", "--models", "scornn", "--device", "cpu",
                     "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "per_sample_cpu.json").read_text())["rows"]
    assert row["status"] == "failed correctness gate" and "times_s" not in row


def _suite_row(case, tokens, speed, status="ok", T=8, variant="module"):
    return {"case": case, "label": case, "variant": variant, "backend": "auto", "mode": "forward",
            "dtype": "fp32", "T": T, "B": 2, "hidden": 8, "input_size": 3, "status": status,
            "tokens_per_s": tokens if status == "ok" else None,
            "speed_vs_lstm": speed if status == "ok" else None}


def test_compare_flags_slower_rows_and_gate_failures_only(tmp_path, capsys):
    from bench import compare

    base = {"rows": [_suite_row("scurnn", 100.0, 1.0), _suite_row("scornn", 100.0, 1.0),
                     _suite_row("enrnn", 100.0, 1.0), _suite_row("lstm", 100.0, 1.0, T=16)]}
    same = {"rows": [_suite_row("scurnn", 300.0, 0.9), _suite_row("scornn", 100.0, 1.5),
                     _suite_row("enrnn", 100.0, 1.0), _suite_row("lstm", 100.0, 1.0, T=16)]}
    entries, regressed = compare.compare(base, same)
    assert not regressed  # -10 % is within the default 15 %; faster is fine
    assert [e["verdict"] for e in entries] == ["same", "faster", "same", "same"]

    slower = {"rows": [_suite_row("scurnn", 100.0, 0.8), *same["rows"][1:]]}
    entries, regressed = compare.compare(base, slower)
    assert regressed and entries[0]["verdict"] == "slower"
    assert entries[0]["change"] == pytest.approx(-0.2)
    assert not compare.compare(base, slower, max_slowdown=0.25)[1]
    # tokens/s is the other metric: by it the same run is a 3x gain, not a loss
    assert compare.compare(base, slower, metric="tokens_per_s")[0][0]["verdict"] == "same"

    broken = {"rows": [_suite_row("scurnn", 0, 0, status="failed correctness gate"),
                       *same["rows"][1:]]}
    entries, regressed = compare.compare(base, broken)
    assert regressed and entries[0]["verdict"] == "now failed correctness gate"

    cut_short = {"rows": same["rows"][:3]}  # a run stopped by --max-minutes
    entries, regressed = compare.compare(base, cut_short)
    assert not regressed and entries[-1]["verdict"] == "missing"
    assert compare.compare(base, cut_short, require_all=True)[1]

    # the command: exit status 1 on a regression, a table either way
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "new.json").write_text(json.dumps(slower))
    assert compare.main([str(tmp_path / "base.json"), str(tmp_path / "base.json")]) == 0
    assert compare.main([str(tmp_path / "base.json"), str(tmp_path / "new.json")]) == 1
    out = capsys.readouterr().out
    assert "**slower**" in out and "-20.0 %" in out and "1 regression(s)" in out


def test_compare_reads_real_suite_results_and_refuses_other_files(tmp_path):
    from bench import compare

    suite.main(TINY + ["--models", "lstm", "scornn", "--out", str(tmp_path), "--name", "a"])
    path = tmp_path / "a_cpu.json"
    result = json.loads(path.read_text())
    entries, regressed = compare.compare(result, result)
    assert entries and not regressed
    assert {e["verdict"] for e in entries} <= {"same", "not compared"}
    (tmp_path / "other.json").write_text(json.dumps({"environment": {}}))
    with pytest.raises(SystemExit):
        compare.main([str(path), str(tmp_path / "other.json")])
    with pytest.raises(SystemExit):
        compare.main([str(path), str(path), "--max-slowdown", "1.5"])


def test_onnx_runtime_times_both_runtimes_after_checking_them(tmp_path, capsys):
    pytest.importorskip("onnxruntime")  # the dev extra (CI); not on the GPU machines' image
    pytest.importorskip("onnxscript")
    from bench import onnx_runtime

    onnx_runtime.main(["--T", "5", "--B", "2", "--hidden", "4", "--input-size", "3",
                       "--repeats", "1", "--models", "scurnn", "adamlstm", "--device", "cpu",
                       "--out", str(tmp_path)])
    result = json.loads((tmp_path / "onnx_runtime_cpu.json").read_text())
    assert list(result["models"]) == ["scurnn", "adamlstm", "torch.nn.LSTM"]
    for entry in result["models"].values():
        assert entry["status"] == "ok" and set(entry["times"]) == {"pytorch", "onnxruntime"}
        assert entry["rel_error_vs_float64"]["onnxruntime"] <= 1e-5
    assert "ONNX Runtime" in capsys.readouterr().out


def test_onnx_runtime_refuses_to_time_a_session_that_disagrees(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bench import onnx_runtime

    real = onnx_runtime._session

    class Off:  # every output of the session off by 1
        def __init__(self, session):
            self.session = session

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, names, feed):
            return [y + 1 for y in self.session.run(names, feed)]

    monkeypatch.setattr(onnx_runtime, "_session", lambda program: Off(real(program)))
    onnx_runtime.main(["--T", "3", "--B", "2", "--hidden", "4", "--input-size", "3",
                       "--repeats", "1", "--models", "scornn", "--device", "cpu",
                       "--out", str(tmp_path)])
    entry = json.loads((tmp_path / "onnx_runtime_cpu.json").read_text())["models"]["scornn"]
    assert entry["status"] == "failed correctness gate" and "times" not in entry


def test_double_backward_times_the_penalty_after_checking_its_gradient(tmp_path, capsys):
    from bench import double_backward

    double_backward.main(["--T", "4", "6", "--B", "2", "--hidden", "4", "--input-size", "3",
                          "--repeats", "1", "--models", "scurnn", "adamlstm", "--device", "cpu",
                          "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "double_backward_cpu.json").read_text())["rows"]
    assert [(r["model"], r["T"]) for r in rows] == [("scurnn", 4), ("scurnn", 6),
                                                     ("adamlstm", 4), ("adamlstm", 6)]
    for r in rows:
        assert r["status"] == "ok" and set(r["times"]) == {"backward", "penalty", "func_penalty"}
        assert r["rel_error_create_graph_vs_fused"] <= double_backward.GATE
        assert r["rel_error_func_vs_eager_penalty_gradient"] <= double_backward.GATE
    assert "torch.func" in capsys.readouterr().out


def test_double_backward_refuses_to_time_a_wrong_torch_func_penalty(tmp_path, monkeypatch):
    from bench import double_backward

    real_grad = double_backward.grad

    def off(f):  # the parameter gradient (a dict) of the torch.func penalty made wrong
        g = real_grad(f)
        return lambda *a: (lambda r: {k: v + 1 for k, v in r.items()}
                           if isinstance(r, dict) else r)(g(*a))

    monkeypatch.setattr(double_backward, "grad", off)
    double_backward.main(["--T", "3", "--B", "2", "--hidden", "4", "--input-size", "3",
                          "--repeats", "1", "--models", "scornn", "--device", "cpu",
                          "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "double_backward_cpu.json").read_text())["rows"]
    assert row["status"] == "failed correctness gate" and "times" not in row
    assert row["rel_error_create_graph_vs_fused"] <= double_backward.GATE


def test_double_backward_refuses_to_time_a_wrong_create_graph_gradient(tmp_path, monkeypatch):
    from bench import double_backward

    real_grad = torch.autograd.grad

    def off(outputs, inputs, *args, create_graph=False, **kwargs):  # the create_graph path off
        grads = real_grad(outputs, inputs, *args, create_graph=create_graph, **kwargs)
        return tuple(g + 1 for g in grads) if create_graph else grads

    monkeypatch.setattr(double_backward.torch.autograd, "grad", off)
    double_backward.main(["--T", "3", "--B", "2", "--hidden", "4", "--input-size", "3",
                          "--repeats", "1", "--models", "scornn", "--device", "cpu",
                          "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "double_backward_cpu.json").read_text())["rows"]
    assert row["status"] == "failed correctness gate" and "times" not in row


def test_forward_mode_times_both_routes_after_the_dot_product_test(tmp_path, capsys):
    from bench import forward_mode

    forward_mode.main(["--T", "4", "--B", "2", "--hidden", "4", "--input-size", "3",
                       "--repeats", "1", "--models", "scornn", "enrnn", "momentumlstm",
                       "--device", "cpu", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "forward_mode_cpu.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["scornn", "enrnn", "momentumlstm"]
    for r in rows:  # ENRNN too: in eval mode its sticky switch is read, not written
        assert set(r["times"]) == {"backward", "func_jvp", "forward_ad"}, r["model"]
        assert r["rel_error_func_jvp"] <= 1e-4 and r["rel_error_forward_ad"] <= 1e-4
    assert "forward_ad" in capsys.readouterr().out


def test_forward_mode_refuses_to_time_a_wrong_tangent(tmp_path, monkeypatch):
    from bench import forward_mode

    real_jvp = torch.func.jvp

    def off(*args, **kwargs):  # every tangent of the torch.func route doubled
        primal, tangent = real_jvp(*args, **kwargs)
        return primal, tangent * 2

    monkeypatch.setattr(forward_mode.torch.func, "jvp", off)
    forward_mode.main(["--T", "3", "--B", "2", "--hidden", "4", "--input-size", "3",
                       "--repeats", "1", "--models", "scornn", "--device", "cpu",
                       "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "forward_mode_cpu.json").read_text())["rows"]
    assert row["rel_error_func_jvp"] > 0.5 and set(row["times"]) == {"backward", "forward_ad"}


def test_forward_mode_records_a_transform_that_refuses(tmp_path, monkeypatch):
    """A route that raises (torch.func refusing a model, as it refuses a buffer write) is
    recorded with its reason and not timed; the other routes still run."""
    from bench import forward_mode

    def refuse(*args, **kwargs):
        raise RuntimeError("During a grad transform ... would mutate a captured Tensor.\nmore")

    monkeypatch.setattr(forward_mode.torch.func, "jvp", refuse)
    forward_mode.main(["--T", "3", "--B", "2", "--hidden", "4", "--input-size", "3",
                       "--repeats", "1", "--models", "enrnn", "--device", "cpu",
                       "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "forward_mode_cpu.json").read_text())["rows"]
    assert row["func_jvp_unsupported"].endswith("captured Tensor.")
    assert set(row["times"]) == {"backward", "forward_ad"}


@pytest.mark.parametrize("name, index", [("cuda", 0), ("cuda:1", 1)])
def test_a_cuda_device_without_an_index_is_the_current_device(monkeypatch, name, index):
    """``--device cuda`` (ci/gpu.sh's default) names no index: torch.cuda.set_device refuses
    that, so the suite resolves it to the current device before setting it."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # --device is checked against it
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(
        major=9, minor=0, multi_processor_count=132))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    # a CUDA build of torch on a machine without a GPU fails to load cuDNN
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
    # --max-minutes 0: no row runs (this machine has no GPU), the result is still written
    args = suite.parse_args(TINY + ["--models", "lstm", "--max-minutes", "0", "--device", name])
    result = suite.run_suite(args)
    assert chosen == [torch.device("cuda", index)]
    assert result["rows"] == [] and result["environment"]["gpu"] == "NVIDIA H200"


def test_timing_quantiles_stay_within_the_measured_times():
    """Inclusive quantiles: with 2 or 3 times the exclusive ones extrapolate (q20 below the
    fastest call, even negative)."""
    from bench.common import timing_summary

    for times in ([0.010, 0.011, 0.030], [0.010, 0.030], [0.001, 0.1], [0.02] * 3, [0.5]):
        t = timing_summary(times)
        assert min(times) <= t["q20_s"] <= t["median_s"] <= t["q80_s"] <= max(times), times
        assert t["repeats"] == len(times)


def test_a_cpu_run_on_a_gpu_machine_has_no_peak(tmp_path, monkeypatch):
    """A CPU row is not measured against the machine's GPU (bench/results/README.md: no peak
    on CPU unless --peak-tflops is given)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    argv = TINY + ["--models", "lstm", "--modes", "forward", "--out", str(tmp_path)]
    (row,) = suite.main(argv)["rows"]
    assert row["peak_tflops"] is None and row["fraction_of_peak"] is None
    (row,) = suite.main(argv + ["--peak-tflops", "2.0"])["rows"]
    assert row["peak_tflops"] == 2.0 and row["fraction_of_peak"] == pytest.approx(row["tflops"] / 2)
    assert suite.peak_tflops("fp32", None, torch.device("cuda", 0)) == 67.0
    assert suite.peak_tflops("fp16", None, torch.device("cuda", 0)) == 989.0
    assert suite.peak_tflops("fp32", None, torch.device("cpu")) is None


def test_repeats_is_the_number_of_timed_calls_and_recorded(tmp_path):
    """--repeats 1 times one call per row (not a floor of 3), and the config records what
    the rows ran with (the preset's 3 where not given)."""
    argv = TINY[:TINY.index("--repeats")] + TINY[TINY.index("--repeats") + 2:]
    argv += ["--models", "lstm", "--modes", "forward", "--out", str(tmp_path)]
    result = suite.main(argv + ["--repeats", "1"])
    assert result["config"]["repeats"] == 1 and [r["repeats"] for r in result["rows"]] == [1]
    result = suite.main(argv)
    assert result["config"]["repeats"] == 3 and [r["repeats"] for r in result["rows"]] == [3]
    with pytest.raises(SystemExit):
        suite.parse_args(argv + ["--repeats", "-1"])


def test_compare_refuses_a_comparison_of_nothing_or_of_two_devices(tmp_path, capsys):
    from bench import compare

    def write(name, rows, gpu=None):
        env = {"cpu": "x86_64"} if gpu is None else {"cpu": "x86_64", "gpu": gpu}
        (tmp_path / name).write_text(json.dumps({"environment": env, "rows": rows}))
        return str(tmp_path / name)

    rows = [_suite_row("scurnn", 100.0, 1.0), _suite_row("lstm", 100.0, 1.0)]
    base = write("base.json", rows)
    assert compare.main([base, base]) == 0
    # a candidate of other models, or stopped before its first row: nothing was compared
    for name, new in (("other.json", [_suite_row("scornn", 100.0, 1.0)]), ("empty.json", [])):
        assert compare.main([base, write(name, new)]) == 1
        assert "no row compared" in capsys.readouterr().err
    # another device: refused, naming both, unless asked for
    for gpu, other in ((None, "NVIDIA H200"), ("NVIDIA H100 80GB HBM3", "NVIDIA H200")):
        a, b = write("a.json", rows, gpu), write("b.json", rows, other)
        with pytest.raises(SystemExit) as e:
            compare.main([a, b])
        err = capsys.readouterr().err
        assert e.value.code == 2 and repr(gpu or "cpu") in err and repr(other) in err
        assert compare.main([a, b, "--allow-different-devices"]) == 0
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    assert "--allow-different-devices" in capsys.readouterr().out


def test_plot_gives_every_model_its_own_colour_and_marker(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    labels = [c.label for c in registry.REGISTRY.values()]
    assert len(labels) > 10  # more than the colour cycle
    rows = [{"status": "ok", "dtype": "fp32", "mode": "forward", "T": 8, "B": 2, "hidden": 4,
             "label": label, "variant": "module", "backend": "auto", "tokens_per_s": 1.0 + i}
            for i, label in enumerate(labels)]
    monkeypatch.setattr(plt, "close", lambda *a: None)  # keep the figure to read it
    report.plot({"environment": {"cpu_threads": 2}, "rows": rows}, tmp_path / "p.png")
    looks = {line.get_label(): (line.get_color(), line.get_marker())
             for line in plt.gcf().axes[0].lines}
    plt.close("all")
    assert set(looks) == set(labels)
    assert len(set(looks.values())) == len(labels)
    assert looks["torch.nn.LSTM"][0] == "black"


def test_every_dtype_of_a_run_is_plotted(tmp_path):
    suite.main(TINY + ["--models", "scornn", "--modes", "forward", "--dtype", "fp32", "bf16",
                       "--out", str(tmp_path), "--name", "d"])
    assert (tmp_path / "d_cpu.png").stat().st_size > 10_000
    assert (tmp_path / "d_cpu_bf16.png").stat().st_size > 10_000


def test_report_refuses_a_file_that_is_not_a_suite_result(tmp_path, capsys):
    (tmp_path / "momentum_cpu.json").write_text(json.dumps({"environment": {}, "times": {}}))
    for path in (tmp_path / "momentum_cpu.json", tmp_path / "missing.json"):
        with pytest.raises(SystemExit) as e:
            report.main([str(path)])
        assert e.value.code == 2 and str(path) in capsys.readouterr().err


def test_momentum_gates_each_variant_and_times_only_those_that_agree(tmp_path, monkeypatch):
    from bench import momentum

    original = momentum.AdamLSTM.forward
    monkeypatch.setattr(momentum.AdamLSTM, "forward",  # AdamLSTM's output off by one
                        lambda self, *a: (lambda out: (out[0] + 1, out[1]))(original(self, *a)))
    momentum.main(["--T", "5", "--B", "2", "--hidden", "4", "--input", "3", "--repeats", "1",
                   "--no-compile", "--device", "cpu", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "momentum_cpu.json").read_text())
    assert result["status"].pop("AdamLSTM") == "failed correctness gate"
    assert result["rel_error"]["AdamLSTM"] > momentum.GATE and "AdamLSTM" not in result["times"]
    assert set(result["status"].values()) == {"ok"}  # the others, each against its reference
    assert set(result["times"]) == set(result["status"])
    assert all(e <= 1e-5 for name, e in result["rel_error"].items() if name != "AdamLSTM")
    assert None not in result["ratios"].values()


def test_cell_step_times_the_cached_step_its_check_and_a_rebuilt_w(tmp_path, capsys):
    from bench import cell_step

    cell_step.main(["--hidden", "4", "--steps", "3", "--repeats", "2", "--device", "cpu",
                    "--out", str(tmp_path)])
    result = json.loads((tmp_path / "cell_step_cpu.json").read_text())
    assert [r["cell"] for r in result["rows"]] == ["ScuRNNCell", "ScoRNNCell", "ENRNNCell"]
    for row in result["rows"]:
        assert row["status"] == "ok" and row["rel_error_cached_vs_rebuilt"] <= 1e-6
        assert set(row["us_per_step"]) == {"cached step", "check alone", "W rebuilt every step"}
        assert all(t > 0 for t in row["us_per_step"].values())
    assert "W rebuilt every step" in capsys.readouterr().out


def test_cell_step_refuses_to_time_a_cache_that_disagrees(tmp_path, monkeypatch):
    from bench import cell_step
    from fastunitary.nn import _base

    monkeypatch.setattr(_base, "_same_values", lambda snapshot, sources: True)  # never rebuilt
    real = cell_step.stepper

    def stale(cell, x):  # a cached W from other parameters
        if not cell.training:
            with torch.no_grad():
                cell(x[0])
                for p in cell.parameters():
                    p.add_(1.0)
        return real(cell, x)

    monkeypatch.setattr(cell_step, "stepper", stale)
    cell_step.main(["--hidden", "4", "--steps", "3", "--repeats", "2", "--device", "cpu",
                    "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "cell_step_cpu.json").read_text())["rows"]
    assert all(r["status"].startswith("failed") and "times" not in r for r in rows)
