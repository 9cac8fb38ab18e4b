"""Shared pieces of the benchmarks: environment record, timing, result files."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import report

RESULTS = Path(__file__).resolve().parent / "results"


def environment(device: torch.device | None = None) -> dict:
    """Device, library versions and git commit, recorded with every result. The GPU's
    fields only when ``device`` (where the run measured) is a CUDA device: a CPU run on a
    GPU machine is a CPU result. ``GIT_COMMIT``, where set, names the commit (the lent GPU
    machines get the working tree, and a ``.git`` that may be older than it: seen on an
    H200, whose copy's HEAD was the session's first commit); else ``git rev-parse HEAD``."""
    if os.environ.get("GIT_COMMIT"):
        commit, dirty = os.environ["GIT_COMMIT"], None
    else:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent, check=True).stdout.strip()
            # dirty = tracked source changes; the result files a run rewrites do not count
            dirty = bool(subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                capture_output=True, text=True, cwd=Path(__file__).parents[1]).stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            commit, dirty = None, None
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device is not None and torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, check=True).stdout.split("\n")[0].strip()
        except (OSError, subprocess.CalledProcessError):
            env["driver"] = None
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timing_summary(times: list[float]) -> dict:
    """Median and 20/80 quantiles of per-call times in seconds, and how many there were.

    Inclusive quantiles: interpolated between the measured times, never beyond them (the
    default, exclusive method extrapolates for few repeats: with 2 or 3 times its q20
    falls below the fastest call, and may be negative)."""
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else times * 4
    return {"median_s": statistics.median(times), "q20_s": q[0], "q80_s": q[-1],
            "repeats": len(times)}


def time_it(fn, device: torch.device, *, warmup: int = 1, repeats: int = 5) -> dict:
    """Median and 20/80 quantiles of wall time in seconds (host clock, synchronized)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return timing_summary(times)


def time_interleaved(fns: dict, device: torch.device, *, warmup: int = 1, repeats: int = 5) -> dict:
    """:func:`time_it` for several functions, one call of each in turn per repeat, so that
    a slow spell of a noisy machine hits all of them alike (their ratios are the result)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: timing_summary(ts) for name, ts in times.items()}


def time_cuda(fn, *, warmup: int = 3, repeats: int = 10) -> dict:
    """As :func:`time_it`, timed by CUDA events around each call (GPU.md's rule)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return timing_summary(times)


@contextlib.contextmanager
def _silenced_fds():
    """Send the process's stdout/stderr file descriptors to /dev/null (the profiler's C++
    side prints a line at every start and stop)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def peak_memory(fn, device: torch.device) -> tuple[int, str]:
    """Extra memory one call of ``fn`` needs at its peak, in bytes, and how it was measured.

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the call.
    CPU: PyTorch's profiler records every allocation and free of the call; the peak of
    their running sum (the CPU allocator keeps no statistics of its own, and the resident
    set size hides what malloc reuses).
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, "cuda max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with _silenced_fds(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak, "torch.profiler allocations"


#: the two timed modes of the layout and projection studies
MODES = ("forward", "forward+backward")


def timed_modes(model, inp, output=lambda out: out) -> dict:
    """``{mode: fn}`` for :data:`MODES`: one call of sequence module ``model`` on ``inp``
    without autograd, and one forward+backward of the mean square of its output
    (``output`` maps the module's output to a tensor, a ``PackedSequence``'s data, say)."""
    def forward():
        with torch.no_grad():
            model(inp)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        output(model(inp)[0]).square().mean().backward()

    return {"forward": forward, "forward+backward": forward_backward}


def add_model_arguments(parser, models, *, T: int | list[int], hidden: int,
                        input_size: int) -> None:
    """The shape options of a study over models: ``--T`` (one length, or several where
    ``T`` is a list), ``--hidden`` (the output width of every model), ``--input-size`` and
    ``--models`` (default all of ``models``)."""
    if isinstance(T, list):
        parser.add_argument("--T", type=positive_int, nargs="+", default=T, help="sequence lengths")
    else:
        parser.add_argument("--T", type=positive_int, default=T)
    parser.add_argument("--hidden", type=positive_int, default=hidden, help="output width of every model")
    parser.add_argument("--input-size", type=positive_int, default=input_size)
    parser.add_argument("--models", nargs="+", default=list(models), choices=list(models))


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an int: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type of sizes, lengths and counts: an int >= 1 (``-1`` otherwise reached
    torch as a negative dimension, ``0`` a division by zero, each as a traceback)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type of a limit where 0 means none (``--loop-max-T 0``: no per-step loop)."""
    return _int_at_least(text, 0)


def even_positive_int(text: str) -> int:
    """argparse type of a model width shared by every family: scuRNN's complex state of
    ``H // 2`` and ENRNN's two halves need an even ``H`` to output ``H`` features."""
    value = positive_int(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even (scuRNN's state is complex: "
                                         f"H // 2 complex units give H features), got {value}")
    return value


def seed_int(text: str) -> int:
    """argparse type of a seed: an int in torch.manual_seed's range."""
    value = _int_at_least(text, 0)
    if value >= 2**64:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 2**64, got {value}")
    return value


def _finite_float(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0 <= value if zero else 0 < value) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0 and finite, "
                                         f"got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type of a step size, scale or duration: a finite float > 0."""
    return _finite_float(text, zero=False)


def nonnegative_float(text: str) -> float:
    """argparse type of a time cap that may be 0 (plan the rows, run none)."""
    return _finite_float(text, zero=True)


def usable_device(text: str) -> str:
    """argparse type of ``--device``: one this machine can run (torch's AssertionError for
    ``cuda`` without CUDA came from the first tensor put there)."""
    from fastunitary.train import check_device

    try:
        check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_run_arguments(parser, *, repeats: int) -> None:
    """The options every timing study takes: ``--repeats``, ``--device`` (CUDA where
    present) and ``--out`` (a folder for the JSON; default ``bench/results``)."""
    parser.add_argument("--repeats", type=positive_int, default=repeats)
    parser.add_argument("--device", type=usable_device, default=default_device())
    parser.add_argument("--out", default=None)


def write_result(name: str, payload: dict, out: Path | None = None) -> Path:
    """``<out>/<name>_<device>.json`` (``out`` default ``bench/results``)."""
    return report.write_json(payload, Path(out) if out is not None else RESULTS, name)
