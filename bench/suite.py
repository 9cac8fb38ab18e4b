"""``python -m bench``: every model of the library beside cuDNN's (or oneDNN's) LSTM.

    python -m bench --quick                 # CPU, CI-sized: a few minutes
    python -m bench --full                  # GPU: T 1k-16k, B 1-256, hidden 128-1024, 3 dtypes
    python -m bench --models scurnn lstm --T 1024 4096 --B 64 --hidden 256 --dtype fp16

A preset sweeps one factor at a time around a centre shape (sequence length T, batch B,
hidden width H); giving ``--T``/``--B``/``--hidden``/``--dtype`` instead runs their full
product. For every shape, dtype and mode (forward, forward+backward) each registry case
(:mod:`bench.registry`) is timed as the library module (each backend: on CUDA the Triton
kernels and the reference) and as the per-step PyTorch loop of the official code, beside
``torch.nn.LSTM`` and ``torch.nn.GRU``.

Rules (GPU.md):
- the timed region is the whole module call on ``(T, B, input_size)`` inputs, input
  projection and building ``W`` included, for every model alike (plus ``backward`` of a
  fixed random output gradient in forward+backward mode);
- correctness gate: before timing, each variant's output is compared with an independent
  computation of the same model on the same inputs (the library modules and the baselines
  with the per-step loop, the loop with the module's reference backend), in float32; a
  variant beyond the tolerance of its dtype is recorded as failed and not timed;
- timing: warm-up, then CUDA events (GPU) or ``time.perf_counter`` (CPU), median and 20/80
  quantiles; repeats shrink for slow variants so one row takes about ``--row-seconds``
  (down to 3, or to ``--repeats`` where that is fewer);
- dtypes bf16/fp16 run under ``torch.autocast`` (parameters stay float32; cuDNN's LSTM
  then runs in half precision, fastunitary's recurrences accumulate in float32).

Writes ``<name>_<device>.json`` (rows plus environment), ``.md`` (table) and ``.png``
(tokens/s against T, hidden and B; ``_<dtype>.png`` for each dtype after the first) to
``--out`` (default ``bench/results/``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import report
from .common import (RESULTS, default_device, environment, even_positive_int,
                     nonnegative_float, nonnegative_int, peak_memory, positive_float,
                     positive_int, time_cuda, time_it, usable_device)
from .registry import REGISTRY, Case, parameter_count, set_backend

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: relative error (Frobenius, whole output) a variant may have against the float32
#: reference. Wide enough for half precision over 16k steps, far below what a wrong
#: kernel gives (order 1); the test suite checks precision at tight tolerances.
TOLERANCE = {"fp32": 5e-3, "bf16": 1e-1, "fp16": 5e-2}
MODES = ("forward", "forward+backward")

#: dense peak TFLOP/s: (float32 on CUDA cores, bf16/fp16 on tensor cores), by device name
PEAK_TFLOPS = {"H100 PCIe": (51.2, 756.0), "H100": (67.0, 989.0), "H200": (67.0, 989.0),
               "A100": (19.5, 312.0)}


@dataclass(frozen=True)
class Shape:
    T: int
    B: int
    hidden: int
    dtype: str


@dataclass(frozen=True)
class Preset:
    """A sweep: each factor varies alone around ``center`` (T, B, hidden)."""

    center: tuple[int, int, int]
    T: tuple[int, ...]
    B: tuple[int, ...]
    hidden: tuple[int, ...]
    dtypes: dict[str, str]  # dtype -> "all" (every sweep shape) or "hidden" (the hidden sweep)
    loop_max_T: int  # per-step loops (and reference backends on CUDA) only up to this T
    repeats: int
    row_seconds: float

    def shapes(self) -> list[Shape]:
        T0, B0, H0 = self.center
        points = [(T, B0, H0) for T in self.T] + [(T0, B, H0) for B in self.B]
        points += [(T0, B0, H) for H in self.hidden]
        out = []
        for dtype, where in self.dtypes.items():
            pts = points if where == "all" else [(T0, B0, H) for H in self.hidden]
            out += [Shape(*p, dtype) for p in pts]
        return list(dict.fromkeys(out))


PRESETS = {
    "quick": Preset(center=(256, 16, 128), T=(64, 256, 1024), B=(1, 16, 64),
                    hidden=(64, 128, 256), dtypes={"fp32": "all"}, loop_max_T=256,
                    repeats=3, row_seconds=1.0),
    # fp16 on the hidden sweep at B = 64: the shapes where cuDNN may pick its persistent
    # kernel (fp16, hidden % 128 == 0, B % 8 == 0, B <= 128, input_size % 128 == 0)
    "full": Preset(center=(1024, 64, 256), T=(1024, 4096, 16384), B=(1, 16, 64, 256),
                   hidden=(128, 256, 512, 1024),
                   dtypes={"fp32": "all", "fp16": "hidden", "bf16": "hidden"},
                   loop_max_T=4096, repeats=20, row_seconds=2.0),
}


def cudnn_rnn_algorithm(case: str, s: Shape, input_size: int, forward: bool, gpu) -> str | None:
    """The cuDNN algorithm PyTorch picks for a one-layer ``nn.LSTM``/``nn.GRU`` call
    (``get_algo`` in aten/src/ATen/native/cudnn/RNN.cpp, torch 2.11-2.13).

    ``gpu``: ``torch.cuda.get_device_properties`` of the device (``major``, ``minor``,
    ``multi_processor_count``), or ``None`` off CUDA (then ``None`` is returned).
    """
    if case not in ("lstm", "gru") or gpu is None:
        return None
    if gpu.major >= 6 and s.hidden <= (192 if forward else 128):
        return "persist_static_small_h"
    persistent = (
        s.dtype == "fp16" and s.hidden <= 1024 and s.hidden % 128 == 0 and input_size % 128 == 0
        # device heuristics for sm_80+ (sm_86 and small parts excluded; persistent GRUs off)
        and gpu.major >= 8 and gpu.multi_processor_count >= 98 and gpu.minor != 6
        and case == "lstm" and s.B % 8 == 0 and s.B <= 128
    )
    return "persist_static" if persistent else "standard"


def peak_tflops(dtype: str, override: float | None, device: torch.device) -> float | None:
    """Dense peak TFLOP/s of ``device`` for ``dtype``: ``override`` where given, else the
    known GPU's (:data:`PEAK_TFLOPS`); ``None`` off CUDA (a CPU run on a GPU machine is
    not measured against the GPU) and for unknown GPUs."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (fp32, half) in PEAK_TFLOPS.items():
        if key in name:
            return fp32 if dtype == "fp32" else half
    return None


def _autocast(device: torch.device, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    y = y.float()
    if y.shape != ref.shape:
        return float("inf")
    return ((y - ref).norm() / ref.norm().clamp_min(1e-30)).item()


class Runner:
    """Times the variants of one (case, T, B, hidden) on one set of inputs."""

    def __init__(self, case: Case, T: int, B: int, hidden: int, args, device: torch.device):
        self.case, self.device, self.args = case, device, args
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(T, B, args.input_size, generator=g).to(device)
        self.gy = torch.randn(T, B, hidden, generator=g).to(device)
        torch.manual_seed(0)
        self.module = case.build(args.input_size, hidden).to(device)
        self._refs: dict[str, torch.Tensor] = {}

    def forward_fn(self, variant: str, backend: str):
        if variant == "loop":
            return lambda x: self.case.loop(self.module, x)
        if not self.case.baseline:
            set_backend(self.module, backend)
        return lambda x: self.module(x)[0]

    def reference_output(self, variant: str) -> torch.Tensor:
        """float32 output of an independent computation of the same model."""
        key = "module" if variant == "loop" else "loop"
        if key not in self._refs:
            with torch.no_grad():
                f = self.forward_fn(key, "reference")
                self._refs[key] = f(self.x).float()
        return self._refs[key]

    def run(self, variant: str, backend: str, s: Shape, mode: str, max_repeats: int) -> dict:
        ref = self.reference_output(variant)
        f = self.forward_fn(variant, backend)
        cast = lambda: _autocast(self.device, s.dtype)  # noqa: E731
        with torch.no_grad(), cast():
            err = relative_error(f(self.x), ref)
        row = {"rel_error": err, "tolerance": TOLERANCE[s.dtype]}
        if not err <= TOLERANCE[s.dtype]:
            return {**row, "status": "failed correctness gate"}
        if mode == "forward":
            def call():
                with torch.no_grad(), cast():
                    f(self.x)
        else:
            def call():
                self.module.zero_grad(set_to_none=True)
                with cast():
                    y = f(self.x)
                y.backward(self.gy.to(y.dtype))
        t0 = time.perf_counter()
        call()  # warm-up (kernel compilation, allocator), timed to size the repeats
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        first = time.perf_counter() - t0
        # as many calls as fit the row's time budget, at most max_repeats, and at least 3
        # for the quantiles (or max_repeats, where that asks for fewer)
        fit = int(self.args.row_seconds / max(first, 1e-6))
        repeats = max(min(3, max_repeats), min(max_repeats, fit))
        if self.device.type == "cuda":
            timing = time_cuda(call, warmup=2, repeats=repeats)
        else:
            timing = time_it(call, self.device, warmup=0, repeats=repeats)
        mem, how = peak_memory(call, self.device)
        return {**row, "status": "ok", **timing, "peak_memory_bytes": mem, "memory_method": how}


def progress(jobs: list, disable: bool):
    """A tqdm bar over ``jobs`` (plain iteration where tqdm is missing, as on the GPU
    machines); ``.write`` and ``.set_postfix_str`` either way."""
    try:
        from tqdm import tqdm
    except ImportError:
        class Plain(list):
            write = staticmethod(print)

            def set_postfix_str(self, s):
                pass
        return Plain(jobs)
    return tqdm(jobs, desc="bench", unit="row", disable=disable)


def plan(args, preset: Preset) -> tuple[list[Shape], int]:
    """Shapes to run and the largest T at which loops and reference backends run."""
    if args.custom:
        T0, B0, H0 = preset.center
        shapes = [Shape(*p) for p in itertools.product(
            args.T or [T0], args.B or [B0], args.hidden or [H0], args.dtype or ["fp32"])]
        return shapes, max(s.T for s in shapes) if args.loop_max_T is None else args.loop_max_T
    loop_max = preset.loop_max_T if args.loop_max_T is None else args.loop_max_T
    return preset.shapes(), loop_max


def variants(case: Case, s: Shape, device: torch.device, loop_max_T: int) -> list[tuple[str, str]]:
    """(variant, backend) pairs to time for a case at a shape."""
    if case.baseline:
        return [("module", "auto")]
    out = [("module", case.cpu_backend if device.type == "cpu" else "auto")]
    if device.type == "cuda" and s.T <= loop_max_T:
        out.append(("module", "reference"))
    if s.T <= loop_max_T:
        out.append(("loop", "reference"))
    return out


def flops(case: Case, s: Shape, input_size: int, mode: str) -> float:
    fwd = case.flops_per_token(input_size, s.hidden) * s.T * s.B
    fwd += case.flops_per_call(input_size, s.hidden)
    return fwd * (3 if mode == "forward+backward" else 1)


def run_suite(args, partial=None) -> dict:
    """Run the planned rows; ``partial(result)``, if given, after each row."""
    device = torch.device(args.device)
    if device.type == "cuda":
        # "cuda" alone is the current device: set_device refuses a device without an index,
        # and every later call (properties, environment) names the same one
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        # events, synchronize and memory statistics follow the current device
        torch.cuda.set_device(device)
    preset = PRESETS["full" if args.full else "quick"]
    shapes, loop_max_T = plan(args, preset)
    cases = [REGISTRY[name] for name in args.models]
    # what the rows run with, recorded in the result's config
    args.repeats = args.repeats or preset.repeats
    args.row_seconds = args.row_seconds or preset.row_seconds
    jobs = [(c, s, v, b, m) for s in shapes for c in cases for v, b in variants(c, s, device, loop_max_T)
            for m in args.modes]
    gpu = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    rows, runners = [], {}
    bar = progress(jobs, disable=args.no_progress)
    deadline = None if args.max_minutes is None else time.monotonic() + 60 * args.max_minutes
    for case, s, variant, backend, mode in bar:
        if deadline is not None and time.monotonic() > deadline:
            bar.write(f"--max-minutes {args.max_minutes} reached: {len(jobs) - len(rows)} rows not run")
            break
        key = (case.name, s.T, s.B, s.hidden)
        if key not in runners:
            runners.clear()  # one model and its inputs alive at a time
            if device.type == "cuda":
                torch.cuda.empty_cache()
            runners[key] = Runner(case, s.T, s.B, s.hidden, args, device)
        runner = runners[key]
        row = {
            "case": case.name, "label": case.label, "variant": variant,
            "backend": "-" if case.baseline else backend,
            "mode": mode, "dtype": s.dtype, "T": s.T, "B": s.B, "hidden": s.hidden,
            "input_size": args.input_size, "recurrent_state_reals": case.state_reals(s.hidden),
            "params": parameter_count(runner.module), "input_projection_timed": True,
            # forward+backward rows: the backward's algorithm (it may differ from the
            # forward's for hidden sizes in (128, 192])
            "cudnn_algorithm": cudnn_rnn_algorithm(case.name, s, args.input_size,
                                                   mode == "forward", gpu),
        }
        bar.set_postfix_str(f"{case.name} {variant}/{backend} T={s.T} B={s.B} H={s.hidden} {s.dtype}")
        try:
            row.update(runner.run(variant, backend, s, mode, args.repeats))
        except torch.OutOfMemoryError:
            row["status"] = "out of memory"
            torch.cuda.empty_cache()
        except Exception as e:  # recorded, never hidden: a row that cannot run says why
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if row["status"] == "ok":
            t = row["median_s"]
            row["us_per_step"] = t / s.T * 1e6
            row["tokens_per_s"] = s.T * s.B / t
            row["flops"] = flops(case, s, args.input_size, mode)
            row["tflops"] = row["flops"] / t / 1e12
            peak = peak_tflops(s.dtype, args.peak_tflops, device)
            row["peak_tflops"] = peak
            row["fraction_of_peak"] = None if peak is None else row["tflops"] / peak
        else:
            bar.write(f"{case.name} {variant}/{backend} {mode} T={s.T} B={s.B} H={s.hidden} "
                       f"{s.dtype}: {row['status']}")
        rows.append(row)
        if partial is not None:  # what a kill (a time cap) would otherwise lose
            partial(suite_result(rows, len(jobs), args, device, complete=False))
    return suite_result(rows, len(jobs), args, device, complete=True)


def suite_result(rows: list[dict], planned: int, args, device: torch.device, *, complete: bool) -> dict:
    """The suite's result so far: its rows (with their ratios to LSTM), environment and
    configuration; ``complete`` once every planned row has run or the time cap stopped it."""
    add_lstm_ratios(rows)
    env = environment(device)
    if device.type == "cuda":
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        # cuDNN's RNNs read their own setting ("tf32" by default), not allow_tf32: the LSTM
        # baseline may run TF32 while the library's kernels compute in IEEE float32
        rnn = getattr(torch.backends.cudnn, "rnn", None)
        env["cudnn_rnn_fp32_precision"] = getattr(rnn, "fp32_precision", None)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config["rows_planned"] = planned
    return {"environment": env, "config": config, "rows": rows, "complete": complete}


def add_lstm_ratios(rows: list[dict]) -> None:
    """``speed_vs_lstm``: tokens/s over ``torch.nn.LSTM``'s at the same shape, dtype and mode
    in the same run (> 1: faster than cuDNN/oneDNN)."""
    key = lambda r: (r["mode"], r["dtype"], r["T"], r["B"], r["hidden"])  # noqa: E731
    lstm = {key(r): r["tokens_per_s"] for r in rows if r["case"] == "lstm" and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and key(r) in lstm:
            r["speed_vs_lstm"] = r["tokens_per_s"] / lstm[key(r)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="CPU, CI-sized sweep (default)")
    which.add_argument("--full", action="store_true", help="the GPU sweep")
    p.add_argument("--models", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--T", type=positive_int, nargs="+", help="sequence lengths (replaces the sweep)")
    p.add_argument("--B", type=positive_int, nargs="+", help="batch sizes (replaces the sweep)")
    p.add_argument("--hidden", type=even_positive_int, nargs="+", help="hidden widths (replaces the sweep; even)")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), help="dtypes (replaces the sweep)")
    p.add_argument("--input-size", type=positive_int, default=128,
                   help="features per step (128: cuDNN's persistent kernel needs a multiple of 128)")
    p.add_argument("--loop-max-T", type=nonnegative_int, default=None,
                   help="longest T for per-step loops and reference backends on CUDA")
    p.add_argument("--repeats", type=positive_int, default=None,
                   help="most timed calls per row (default: the preset's, 3 quick, 20 full); "
                        "rows too slow for --row-seconds time fewer, but at least 3 "
                        "(or this number, if smaller)")
    p.add_argument("--row-seconds", type=positive_float, default=None, help="time budget per row")
    p.add_argument("--peak-tflops", type=positive_float, default=None,
                   help="device peak for the fraction-of-peak column (known GPUs: automatic)")
    p.add_argument("--device", type=usable_device, default=default_device())
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON, table and plot")
    p.add_argument("--name", default=None, help="file name stem (default bench_<preset>)")
    p.add_argument("--max-minutes", type=nonnegative_float, default=None,
                   help="start no new row after this long; what ran is written")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.custom = bool(args.T or args.B or args.hidden or args.dtype)  # a product, no sweep
    args.name = args.name or f"bench_{'custom' if args.custom else 'full' if args.full else 'quick'}"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    target = Path(args.out) / f"{args.name}_{report.device_tag(gpu)}.json"
    print(f"writing {target} as rows finish, the table and plot at the end"
          + (" (replacing the files there)" if target.exists() else ""), flush=True)
    # the JSON after every row, the table and plot at the end
    result = run_suite(args, partial=lambda r: report.write_json(r, Path(args.out), args.name))
    paths = report.write(result, Path(args.out), args.name)
    print(report.markdown(result))
    for path in paths:
        print(f"wrote {path}")
    return result
