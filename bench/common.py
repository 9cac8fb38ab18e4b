"""Shared pieces of the benchmarks: environment record, timing, result files."""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    """Device, library versions and git commit, recorded with every result."""
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
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
    q = statistics.quantiles(times, n=5) if len(times) > 1 else times * 4
    return {"median_s": statistics.median(times), "q20_s": q[0], "q80_s": q[-1], "repeats": repeats}


def write_result(name: str, payload: dict, out: Path | None = None) -> Path:
    out = Path(out) if out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    tag = payload["environment"].get("gpu", "cpu").replace(" ", "-").lower()
    path = out / f"{name}_{tag}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
