"""Train several models on one task with the same budget; record the curves and a plot.

    python -m bench.compare_training --task adding --length 200 --models enrnn scornn \\
        --max-seconds 300 --name adding_L200

Each model trains with ``fastunitary.train`` (same task, batch, seed, time budget); the
sizes are chosen per model with ``--size MODEL=HIDDEN[,SHORT]`` (default: the same real
state width for every model). Writes ``bench/results/<name>.json`` (every run's metrics
and the environment) and ``<name>.png`` (evaluation loss against training time and steps,
with the task's baseline).
"""

from __future__ import annotations

import argparse
import json

from fastunitary.train import TrainConfig, train

from .common import RESULTS, environment


def plot(runs: dict, baseline: float, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, m in runs.items():
        steps = [h["step"] for h in m["history"]]
        secs = [h["seconds"] for h in m["history"]]
        loss = [h["eval_loss"] for h in m["history"]]
        axes[0].plot(secs, loss, label=f"{name} ({m['params']} params)")
        axes[1].plot(steps, loss, label=name)
    for ax, xlabel in zip(axes, ("training time (s)", "step")):
        ax.axhline(baseline, color="gray", linestyle="--", label="baseline")
        ax.set_xlabel(xlabel)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("evaluation loss")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="adding")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--models", nargs="+", default=["enrnn", "scornn"])
    p.add_argument("--size", action="append", default=[],
                   help="MODEL=HIDDEN[,SHORT], e.g. enrnn=48,32 scornn=80")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-A", dest="lr_A", type=float, default=1e-4)
    p.add_argument("--max-seconds", type=float, default=300)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    sizes = {"enrnn": (48, 32), "scornn": (80, None), "scurnn": (40, None), "lstm": (80, None),
             "gru": (80, None)}
    for spec in args.size:
        model, dims = spec.split("=")
        parts = [int(v) for v in dims.split(",")]
        sizes[model] = (parts[0], parts[1] if len(parts) > 1 else None)
    runs = {}
    for model in args.models:
        hidden, short = sizes[model]
        cfg = TrainConfig(task=args.task, model=model, hidden=hidden, short=short or 32,
                          length=args.length, batch=args.batch, lr=args.lr, lr_A=args.lr_A,
                          max_seconds=args.max_seconds, eval_every=args.eval_every,
                          seed=args.seed)
        m = train(cfg, progress=False)
        runs[model] = m
        print(f"{model:>7}: {m['steps']} steps in {m['seconds']:.0f} s, final eval loss "
              f"{m['final_eval_loss']:.4f} (best {min(h['eval_loss'] for h in m['history']):.4f}), "
              f"baseline {m['baseline_loss']:.4f}", flush=True)
    name = args.name or f"{args.task}_L{args.length}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    baseline = next(iter(runs.values()))["baseline_loss"]
    payload = {"environment": environment(), "command_args": vars(args), "runs": runs}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(runs, baseline, f"{args.task}, L = {args.length}, batch {args.batch}",
         RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / (name + '.json')} and {RESULTS / (name + '.png')}")


if __name__ == "__main__":
    main()
