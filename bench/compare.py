"""Compare two runs of the benchmark suite, row by row, for throughput tracking in CI.

    python -m bench.compare BASELINE.json CANDIDATE.json
        [--metric speed_vs_lstm|tokens_per_s] [--max-slowdown 0.15] [--require-all]

Rows are matched by model, variant, backend, mode, dtype and shape. The default metric is
``speed_vs_lstm``, each row's tokens/s over ``torch.nn.LSTM``'s in the same run: a ratio
measured within one run, so two runs on different (or differently loaded) machines of
one kind compare; ``tokens_per_s`` compares raw throughput, meaningful on one machine.

Prints one Markdown row per matched measurement (baseline, candidate, change) and exits
with status 1 when the candidate regressed:

- a row slower than ``(1 - max_slowdown)`` times its baseline;
- a row that passed the correctness gate in the baseline and fails it now (a kernel that
  went wrong is a regression however fast it is);
- with ``--require-all``, a baseline row the candidate lacks (a run cut short by
  ``--max-minutes`` lacks rows; by default they are listed, not counted).

It also exits with status 1 when no row could be compared (the candidate ran other
models or shapes, or stopped before its first row): a check that compared nothing has
not passed. Two files from different devices (another GPU, or a CPU run against a GPU
run, by their ``environment``) are refused unless ``--allow-different-devices`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import report

KEY = ("case", "variant", "backend", "mode", "dtype", "T", "B", "hidden", "input_size")
METRICS = ("speed_vs_lstm", "tokens_per_s")


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in KEY)


def device(result: dict) -> str | None:
    """The device a suite result was measured on: the GPU's name, or ``"cpu"``; ``None``
    where the file has no ``environment``."""
    env = result.get("environment")
    return None if env is None else env.get("gpu") or "cpu"


def check_devices(baseline: dict, candidate: dict) -> None:
    """Raise ``ValueError`` when the two results come from different devices (one unknown:
    no check). Ratios to ``nn.LSTM`` too depend on the device (cuDNN's LSTM or oneDNN's)."""
    base, new = device(baseline), device(candidate)
    if base is not None and new is not None and base != new:
        raise ValueError(f"the baseline ran on {base!r}, the candidate on {new!r}: their rows "
                         "do not compare (--allow-different-devices compares them anyway)")


def compared(entries: list[dict]) -> int:
    """How many baseline rows were measured against a candidate row (a change, or a gate
    failure that is now a regression)."""
    return sum(e["change"] is not None or e["verdict"].startswith("now ") for e in entries)


def compare(baseline: dict, candidate: dict, metric: str = "speed_vs_lstm",
            max_slowdown: float = 0.15, require_all: bool = False) -> tuple[list[dict], bool]:
    """Match the rows of two suite results. Returns one entry per baseline row (``row``,
    the baseline's, its ``label``, ``base``, ``new``, ``change`` = new / base - 1 or
    ``None``, ``verdict``, ``regression``) and whether the candidate regressed (module
    docstring)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not 0.0 <= max_slowdown < 1.0:
        raise ValueError(f"max_slowdown must be in [0, 1), got {max_slowdown}")
    new_rows = {_key(r): r for r in candidate["rows"]}
    entries, regressed = [], False
    for old in baseline["rows"]:
        new = new_rows.get(_key(old))
        base = old.get(metric) if old["status"] == "ok" else None
        value = new.get(metric) if new is not None and new["status"] == "ok" else None
        change = None if base is None or value is None or base == 0 else value / base - 1
        if new is None:
            verdict, bad = "missing", require_all
        elif old["status"] == "ok" and new["status"] != "ok":
            verdict, bad = f"now {new['status']}", True
        elif change is None:
            verdict, bad = "not compared", False
        elif change < -max_slowdown:
            verdict, bad = "slower", True
        elif change > max_slowdown:
            verdict, bad = "faster", False
        else:
            verdict, bad = "same", False
        regressed |= bad
        entries.append({"row": old, "label": old.get("label", old["case"]), "base": base,
                        "new": value, "change": change, "verdict": verdict, "regression": bad})
    return entries, regressed


def markdown(entries: list[dict], metric: str) -> str:
    lines = [f"| model | variant | mode | dtype | T | B | hidden | {metric} base | {metric} new "
             "| change | verdict |",
             "|---|---|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for e in entries:
        r = e["row"]
        change = "-" if e["change"] is None else f"{100 * e['change']:+.1f} %"
        verdict = f"**{e['verdict']}**" if e["regression"] else e["verdict"]
        lines.append(f"| {e['label']} | {report._variant(r)} | {r['mode']} | {r['dtype']} "
                     f"| {r['T']} | {r['B']} | {r['hidden']} | {report._fmt(e['base'], ',.3g')} "
                     f"| {report._fmt(e['new'], ',.3g')} | {change} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", type=Path)
    p.add_argument("candidate", type=Path)
    p.add_argument("--metric", choices=METRICS, default="speed_vs_lstm",
                   help="what to compare (default: %(default)s)")
    p.add_argument("--max-slowdown", type=float, default=0.15,
                   help="fraction a row may lose before it counts as a regression "
                        "(default: %(default)s; CPU runs vary by 20-30 %%)")
    p.add_argument("--require-all", action="store_true",
                   help="a baseline row missing from the candidate is a regression")
    p.add_argument("--allow-different-devices", action="store_true",
                   help="compare files measured on different devices (by default refused: "
                        "the GPU names, or CPU against GPU, in their environment differ)")
    args = p.parse_args(argv)
    results = []
    for path in (args.baseline, args.candidate):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            p.error(f"cannot read {path}: {e}")
        if "rows" not in results[-1]:
            p.error(f"{path} is not a result of the benchmark suite (no 'rows')")
    try:
        if not args.allow_different_devices:
            check_devices(*results)
        entries, regressed = compare(*results, args.metric, args.max_slowdown, args.require_all)
    except ValueError as e:
        p.error(str(e))
    print(markdown(entries, args.metric))
    bad = sum(e["regression"] for e in entries)
    n = compared(entries)
    print(f"{len(entries)} baseline rows, {n} compared, {bad} regression(s) "
          f"(metric {args.metric}, max slowdown {args.max_slowdown:.0%})")
    if n == 0:
        # e.g. another set of models or shapes, no nn.LSTM row to give speed_vs_lstm, or a
        # candidate stopped by --max-minutes before its first row
        print(f"no row compared: no measured row of {args.candidate} has {args.metric} beside "
              f"a measured row of {args.baseline} with the same model, variant, mode, dtype "
              "and shape", file=sys.stderr)
        return 1
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
