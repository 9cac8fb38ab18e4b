"""Train several models on one task with the same budget; record the curves and a plot.

    python -m bench.compare_training --task adding --length 200 --models enrnn scornn \\
        --max-seconds 300 --name adding_L200
    python -m bench.compare_training --task digits --models momentumlstm lstm --steps 2000 \\
        --seeds 0 1 2 --name digits_momentumlstm_vs_lstm

Each model trains with ``fastunitary.train`` (same task, batch, seeds and budget: a time
limit ``--max-seconds``, a step count ``--steps``, or both); the sizes are chosen per model
with ``--size MODEL=HIDDEN[,SHORT]`` (default: the same real state width for every model).
Writes ``bench/results/<name>.json`` (every run's metrics and the environment) and
``<name>.png``: the evaluation loss (or, for tasks with an accuracy, the test accuracy)
against training time and steps, the mean over seeds with the range between the worst and
the best seed shaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastunitary.train import TrainConfig, length_label, train

from .common import RESULTS, environment, positive_float, positive_int, seed_int


def plot(runs: dict, baseline: float, title: str, path, metric: str = "loss") -> None:
    """``metric`` ``"loss"`` (log scale, baseline dashed) or ``"accuracy"``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = metric == "accuracy"
    key = "eval_accuracy" if accuracy else "eval_loss"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, seeds in runs.items():
        # the evaluations every seed made: under a time budget the seeds stop at different
        # steps, each with a last evaluation of its own
        steps = sorted(set.intersection(*({h["step"] for h in m["history"]} for m in seeds)))
        rows = [[next(h for h in m["history"] if h["step"] == s) for s in steps] for m in seeds]
        secs = np.mean([[h["seconds"] for h in r] for r in rows], axis=0)
        vals = np.array([[h[key] for h in r] for r in rows])
        label = f"{name} ({seeds[0]['params']} params, {len(seeds)} seed{'s' * (len(seeds) > 1)})"
        for ax, x in ((axes[0], secs), (axes[1], steps)):
            line, = ax.plot(x, vals.mean(0), label=label if ax is axes[0] else name)
            if len(seeds) > 1:
                ax.fill_between(x, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.2)
    for ax, xlabel in zip(axes, ("training time (s)", "step")):
        if not accuracy:
            ax.axhline(baseline, color="gray", linestyle="--", label="baseline")
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy" if accuracy else "evaluation loss")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="adding")
    p.add_argument("--length", type=positive_int, default=200)
    p.add_argument("--models", nargs="+", default=["enrnn", "scornn"],
                   help="model names; a momentum or SBO model may carry its own coefficients, "
                        "e.g. momentumlstm:mu=0,step=1 (the plain LSTM with the official init) "
                        "or sbornn_hb:mu=0.5,eta=0.05")
    p.add_argument("--size", action="append", default=[],
                   help="MODEL=HIDDEN[,SHORT], e.g. enrnn=48,32 scornn=80")
    p.add_argument("--batch", type=positive_int, default=50)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--lr-A", dest="lr_A", type=positive_float, default=1e-4)
    p.add_argument("--mu", type=float, default=0.6)
    p.add_argument("--momentum-step", dest="momentum_step", type=float, default=0.6)
    p.add_argument("--max-seconds", type=positive_float, default=None)
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--eval-every", type=positive_int, default=100)
    p.add_argument("--seeds", type=seed_int, nargs="+", default=[0])
    p.add_argument("--name", default=None)
    p.add_argument("--out", default=str(RESULTS), help="folder for <name>.json and <name>.png")
    p.add_argument("--progress", action="store_true", help="a progress bar per run")
    p.add_argument("--metric", choices=("loss", "accuracy"), default=None,
                   help="what the plot shows (default: loss against the baseline for copying "
                        "and adding, test accuracy for the classification tasks)")
    args = p.parse_args(argv)
    if args.max_seconds is None and args.steps is None:
        args.max_seconds = 300.0
    sizes = {"enrnn": (48, 32), "scornn": (80, None), "scurnn": (40, None)}
    for spec in args.size:
        model, dims = spec.split("=")
        parts = [int(v) for v in dims.split(",")]
        sizes[model] = (parts[0], parts[1] if len(parts) > 1 else None)
    runs = {}
    for spec in args.models:
        model, _, over = spec.partition(":")
        coef = {"mu": args.mu, "step": args.momentum_step, "eta": TrainConfig.eta}
        for item in filter(None, over.split(",")):
            k, v = item.split("=")
            if k not in coef:
                raise SystemExit(f"unknown coefficient {k!r} in {spec!r} (mu, step, eta)")
            coef[k] = float(v)
        hidden, short = sizes.get(model, (80, None))
        runs[spec] = []
        for seed in args.seeds:
            cfg = TrainConfig(task=args.task, model=model, hidden=hidden, short=short or 32,
                              length=args.length, batch=args.batch, lr=args.lr, lr_A=args.lr_A,
                              mu=coef["mu"], momentum_step=coef["step"], eta=coef["eta"],
                              max_seconds=args.max_seconds, steps=args.steps,
                              eval_every=args.eval_every, seed=seed)
            m = train(cfg, progress=args.progress)
            runs[spec].append(m)
            # the final evaluation counts: the history may have none (a budget shorter than
            # --eval-every)
            best = (m["best_eval_accuracy"] if "final_eval_accuracy" in m
                    else min([m["final_eval_loss"]] + [h["eval_loss"] for h in m["history"]]))
            acc = (f", final test accuracy {m['final_eval_accuracy']:.3f} (best {best:.3f})"
                   if "final_eval_accuracy" in m else f" (best {best:.4f})")
            print(f"{spec:>12} seed {seed}: {m['steps']} steps in {m['seconds']:.0f} s, final eval "
                  f"loss {m['final_eval_loss']:.4f}{acc}, baseline {m['baseline_loss']:.4f}",
                  flush=True)
    name = args.name or f"{args.task}_L{args.length}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    baseline = next(iter(runs.values()))[0]["baseline_loss"]
    payload = {"environment": environment(), "command_args": vars(args), "runs": runs}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    length = length_label(TrainConfig(task=args.task, length=args.length)).replace("=", " = ")
    metric = args.metric or ("loss" if args.task in ("copying", "adding") else "accuracy")
    plot(runs, baseline, f"{args.task}, {length}, batch {args.batch}", out / f"{name}.png", metric)
    print(summary(runs))
    print(f"wrote {out / (name + '.json')} and {out / (name + '.png')}")


def summary(runs: dict) -> str:
    """One line per model: parameters, the mean over seeds of the final (and best) result,
    and where it stands against the task's baseline."""
    lines = []
    for spec, seeds in runs.items():
        m0 = seeds[0]
        loss = np.mean([m["final_eval_loss"] for m in seeds])
        line = (f"{spec:>12}: {m0['params']} params, {m0['steps']} steps, final eval loss "
                f"{loss:.4f} vs baseline {m0['baseline_loss']:.4f} "
                f"({'below' if loss < m0['baseline_loss'] else 'NOT below'})")
        if "final_eval_accuracy" in m0:
            line += (f", accuracy final {np.mean([m['final_eval_accuracy'] for m in seeds]):.3f}"
                     f" best {np.mean([m['best_eval_accuracy'] for m in seeds]):.3f}")
        lines.append(line + (f" (mean of {len(seeds)} seeds)" if len(seeds) > 1 else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
