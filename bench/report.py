"""The benchmark suite's outputs: JSON, a Markdown table and a plot of tokens/s."""

from __future__ import annotations

import json
import os
from pathlib import Path


def device_tag(gpu: str | None) -> str:
    """What result file names end with: the GPU's name (``NVIDIA H200`` -> ``nvidia-h200``),
    or ``cpu`` (``gpu`` None)."""
    return (gpu or "cpu").replace(" ", "-").lower()


def _device_tag(result: dict) -> str:
    return device_tag(result["environment"].get("gpu"))


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _variant(r: dict) -> str:
    if r["variant"] == "loop":
        return "per-step loop"
    return r["backend"] if r["backend"] != "-" else "torch"


def markdown(result: dict, rows: list[dict] | None = None) -> str:
    """One row per measurement (``rows``, default all): ok rows with their figures, the
    others with their status."""
    env = result["environment"]
    head = (f"Device: {env.get('gpu', env['cpu'] + ' CPU, ' + str(env['cpu_threads']) + ' threads')}; "
            f"torch {env['torch']}, triton {env['triton']}"
            + (f", cuDNN {env['cudnn']}" if env.get("cudnn") else "")
            + f"; commit {(env['git_commit'] or '?')[:7]}{' (dirty)' if env['git_dirty'] else ''}.")
    lines = [head, "",
             "| model | variant | mode | dtype | T | B | hidden | params | tokens/s | µs/step "
             "| peak MB | TFLOP/s | % peak | × LSTM | note |",
             "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in result["rows"] if rows is None else rows:
        ok = r["status"] == "ok"
        mem = r.get("peak_memory_bytes")
        frac = r.get("fraction_of_peak")
        note = r["status"] if not ok else (f"cuDNN {r['cudnn_algorithm']}" if r["cudnn_algorithm"] else "")
        lines.append(
            f"| {r['label']} | {_variant(r)} | {r['mode']} | {r['dtype']} | {r['T']} | {r['B']} "
            f"| {r['hidden']} | {r['params']} | {_fmt(r.get('tokens_per_s'), ',.0f')} "
            f"| {_fmt(r.get('us_per_step'), '.1f')} "
            f"| {_fmt(None if mem is None else mem / 2**20, '.1f')} "
            f"| {_fmt(r.get('tflops'), '.3f')} | {_fmt(None if frac is None else 100 * frac, '.2f')} "
            f"| {_fmt(r.get('speed_vs_lstm'), '.2f')} | {note} |")
    return "\n".join(lines) + "\n"


#: line markers; with the colour cycle's 10 colours they tell up to 40 models apart
MARKERS = ("o", "s", "^", "D")


def dtypes(result: dict) -> list[str]:
    """The dtypes of the result's measured (ok) rows, in the order they ran."""
    return list(dict.fromkeys(r["dtype"] for r in result["rows"] if r["status"] == "ok"))


def line_styles(labels: list[str]) -> dict[str, dict]:
    """``{label: {"color", "marker"}}``, a distinct pair per label: the colour cycle's 10
    colours, then again with the next marker (the line style tells the variant apart).
    ``torch.nn.LSTM`` is black, the baseline every other line is read against."""
    others = [label for label in dict.fromkeys(labels) if label != "torch.nn.LSTM"]
    styles = {label: {"color": f"C{i % 10}", "marker": MARKERS[i // 10 % len(MARKERS)]}
              for i, label in enumerate(others)}
    styles["torch.nn.LSTM"] = {"color": "black", "marker": "o"}
    return styles


def plot(result: dict, path: Path, dtype: str | None = None) -> Path | None:
    """tokens/s against T, hidden and B (log-log), one line per model and variant, a row of
    panels per mode, at the sweep's centre for the other two factors; rows of ``dtype``
    only (default: the first measured; :func:`write` plots each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    if not rows:
        return None
    dtype = dtype or rows[0]["dtype"]
    rows = [r for r in rows if r["dtype"] == dtype]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    factors = ("T", "hidden", "B")
    center = {f: _mode_value([r[f] for r in rows]) for f in factors}
    fig, axes = plt.subplots(len(modes), 3, figsize=(15, 4.2 * len(modes)), squeeze=False)
    series = sorted({(r["label"], _variant(r)) for r in rows})
    looks = line_styles([label for label, _ in series])
    styles = {"per-step loop": ":", "reference": "--"}
    for i, mode in enumerate(modes):
        for j, factor in enumerate(factors):
            ax = axes[i][j]
            others = [f for f in factors if f != factor]
            for label, variant in series:
                pts = sorted((r[factor], r["tokens_per_s"]) for r in rows
                             if r["mode"] == mode and r["label"] == label and _variant(r) == variant
                             and all(r[o] == center[o] for o in others))
                if pts:
                    ax.plot(*zip(*pts), **looks[label],
                            linestyle=styles.get(variant, "-"),
                            linewidth=2.5 if label == "torch.nn.LSTM" else 1.5,
                            label=label if variant in ("torch", "auto") else f"{label} ({variant})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(factor)
            ax.set_ylabel("tokens/s")
            ax.set_title(f"{mode}, {dtype}; " + ", ".join(f"{o}={center[o]}" for o in others))
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    env = result["environment"]
    fig.suptitle(f"fastunitary benchmark: {env.get('gpu', 'CPU, ' + str(env['cpu_threads']) + ' threads')}"
                 f" (solid: module, dashed: reference backend, dotted: per-step loop)")
    fig.tight_layout(rect=(0, 0.04 + 0.03 * len(handles) / 4, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def center_rows(result: dict, mode: str | None = None) -> list[dict]:
    """The rows at the sweep's centre (the T, B and hidden every sweep shares)."""
    rows = result["rows"]
    if not rows:  # a run whose time cap came before its first row
        return []
    center = {f: _mode_value([r[f] for r in rows]) for f in ("T", "B", "hidden")}
    return [r for r in rows if all(r[f] == v for f, v in center.items())
            and (mode is None or r["mode"] == mode)]


def _mode_value(values: list) -> int:
    """The sweep's centre: the value every factor sweep shares (the most frequent)."""
    return max(set(values), key=values.count)


def write_json(result: dict, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_{_device_tag(result)}.json"
    # whole or not at all: a run killed by a time cap mid-write keeps the previous file
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(partial, path)
    return path


def write(result: dict, out: Path, name: str) -> list[Path]:
    """The JSON, the table (``.md``) and a plot per dtype: ``.png`` for the first,
    ``_<dtype>.png`` for each other (a ``--full`` run: fp32, then fp16 and bf16)."""
    json_path = write_json(result, out, name)
    md = json_path.with_suffix(".md")
    md.write_text(markdown(result))
    pngs = [plot(result, json_path.with_suffix(".png") if i == 0 else
                 json_path.with_name(f"{json_path.stem}_{dtype}.png"), dtype)
            for i, dtype in enumerate(dtypes(result))]
    return [json_path, md] + [png for png in pngs if png]


def main(argv=None) -> None:
    """``python -m bench.report FILE.json [--center] [--mode M]``: print a result's table."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    p.add_argument("file")
    p.add_argument("--center", action="store_true", help="only the sweep's centre shape")
    p.add_argument("--mode", choices=("forward", "forward+backward"))
    args = p.parse_args(argv)
    try:
        result = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as e:
        p.error(f"cannot read {args.file}: {e}")
    if not isinstance(result, dict) or "rows" not in result:
        p.error(f"{args.file} is not a result of the benchmark suite (no 'rows')")
    rows = center_rows(result, args.mode) if args.center else [
        r for r in result["rows"] if args.mode is None or r["mode"] == args.mode]
    print(markdown(result, rows), end="")


if __name__ == "__main__":
    main()
