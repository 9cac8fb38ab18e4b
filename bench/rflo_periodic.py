"""RFLO beside BPTT on the periodic-output task of Murray (2019), Figure 2.

    python -m bench.rflo_periodic [--periods 20 40 80 160] [--trials 200] [--seeds 0 1 2]
    python -m bench.rflo_periodic --trials 3000 --eval-every 50 --lr-rflo 1e-4 \
        --lr-out-rflo 1e-3 --decay 1000 --seeds 0 1 2 3 4 5 6 7 8 --jobs 2 \
        --name rflo_periodic_9seeds                      # RFLO in the README's table
    python -m bench.rflo_periodic --periods 160 --cue-segment 20 --readout-baseline ...

A leaky RNN of 30 units (tau = 10 steps), no external input, starts every trial from the
same random state and must output ``sin(2 pi t / P)`` over one period ``P`` (given in units
of tau). RFLO (``fastunitary.rflo.RFLO``, online updates every step, fixed random
feedback) and BPTT (Adam on the trial's mean squared error, gradients through the whole
trial) train the same initial network for the same number of trials. RFLO's readout may
take its own step (``--lr-out-rflo``); ``--decay K`` divides RFLO's steps by
``1 + trial / K``; ``--scale-lr`` scales RFLO's per-step rate by ``20 tau / period``, since
its updates add up over a trial's steps (on seed 0 that did not help); ``--g`` is the gain
of the initial recurrent weights and ``--readout-gain`` the scale of the initial readout.
``--lr-bptt`` is Adam's step and ``--clip-bptt`` a bound on BPTT's gradient norm (long
periods: gradients through a chaotic network's thousand steps spike). ``--rflo-from`` takes
RFLO's curves from an earlier run of the same RFLO setting (it checks) and trains only BPTT:
RFLO's curves do not depend on BPTT's setting, and on a CPU they take most of the time.
``--cue-segment S`` gives the network one-hot cue inputs, a new one every ``S`` tau
(``fastunitary.rflo.segment_cues``: our reading of the paper's augmented circuit for long
durations); both rules then train ``W_in`` too. ``--readout-baseline`` adds a third rule:
the readout alone with RFLO's readout steps, ``W`` and ``W_in`` fixed, which tells how much
of RFLO's drop its recurrent updates make. Every ``--eval-every`` trials, and after the
last, the loss of a trial without learning is recorded. Each seed (``--seeds``) is a
separate realization: its own initial network, start state and feedback matrix; ``--jobs``
runs them in parallel processes. Writes ``bench/results/<name>.json`` and ``.png``
(``--name``, default ``rflo_periodic``): loss against trials, one panel per period, the
median over seeds with the range of the seeds shaded.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from fastunitary.rflo import RFLO, LeakyRNN, bptt_loss, periodic_target, segment_cues

from .common import RESULTS, environment, positive_float, positive_int, seed_int


def run(period: int, seed: int, args, rflo: dict | None = None) -> dict:
    """Both rules on one realization (``seed``) of one period ``P`` (steps); ``rflo``: RFLO's
    result from an earlier run of the same setting (``--rflo-from``), used instead of training."""
    if args.jobs > 1:
        torch.set_num_threads(1)  # realizations run side by side in processes
    g = torch.Generator().manual_seed(seed)
    if args.cue_segment is None:
        x = torch.zeros(period, 1, 1)  # the paper's Figure 2: no input
    else:
        x = segment_cues(period, int(round(args.cue_segment * args.tau)))
    net = LeakyRNN(x.shape[-1], args.hidden, 1, tau=args.tau, g=args.g,
                   readout_gain=args.readout_gain, generator=g)
    h0 = torch.randn(1, args.hidden, generator=g) * 0.5
    y = periodic_target(period)
    out = {}
    if rflo is not None:
        out["rflo"] = {"curve": rflo["curve"], "seconds": rflo["seconds"]}
    else:
        out["rflo"] = train_rflo(net, x, y, h0, period, seed, args)
    out["bptt"] = train_bptt(net, x, y, h0, args)
    if args.readout_baseline:
        out["readout"] = train_rflo(net, x, y, h0, period, seed, args, readout_only=True)
    for r in out.values():
        first, last = r["curve"][0][1], r["curve"][-1][1]
        best = min(v for _, v in r["curve"])
        r.update(first=first, last=last, best=best, reduction=first / last,
                 best_reduction=first / best)
    return out


def train_rflo(net, x, y, h0, period: int, seed: int, args, readout_only: bool = False) -> dict:
    """RFLO's loss curve on a copy of ``net``; ``readout_only``: ``W`` and ``W_in`` stay
    fixed and the readout takes RFLO's readout steps (the reservoir baseline)."""
    rnn = copy.deepcopy(net)
    # RFLO updates at every step: a trial of P steps moves the weights P times, so the step
    # size is scaled by 200 / P to keep the change per trial that of the 20-tau period
    lr = args.lr_rflo * 20 * args.tau / period if args.scale_lr else args.lr_rflo
    lr_out = lr if args.lr_out_rflo is None else args.lr_out_rflo
    lr = 0.0 if readout_only else lr
    # without cues the input is zero and W_in has nothing to learn
    trainer = RFLO(rnn, lr=lr, lr_out=lr_out, train_input=args.cue_segment is not None,
                   generator=torch.Generator().manual_seed(seed + 1))
    curve, t0 = [], time.perf_counter()
    for k in range(args.trials + 1):
        if evaluates(k, args):
            curve.append((k, trainer.run(x, y, h0, learn=False).mean().item()))
        if k < args.trials:
            decay = 1.0 if args.decay is None else 1.0 / (1.0 + k / args.decay)
            trainer.lr, trainer.lr_out = lr * decay, lr_out * decay
            trainer.run(x, y, h0)
    return {"curve": curve, "seconds": time.perf_counter() - t0}


def evaluates(trial: int, args) -> bool:
    """Whether the loss is recorded after ``trial`` trials: every ``--eval-every`` trials, and
    after the last one even where ``--eval-every`` does not divide ``--trials`` (the drop is
    measured at the last point)."""
    return trial % args.eval_every == 0 or trial == args.trials


def train_bptt(net, x, y, h0, args) -> dict:
    """BPTT's (Adam's) loss curve on a copy of ``net``."""
    rnn = copy.deepcopy(net)
    params = [rnn.weight, rnn.weight_out] + ([] if args.cue_segment is None else [rnn.weight_in])
    rnn.weight_in.requires_grad_(args.cue_segment is not None)
    opt = torch.optim.Adam(params, lr=args.lr_bptt)
    curve, t0 = [], time.perf_counter()
    for k in range(args.trials + 1):
        if evaluates(k, args):
            with torch.no_grad():
                curve.append((k, bptt_loss(rnn, x, y, h0).item()))
        if k < args.trials:
            opt.zero_grad()
            bptt_loss(rnn, x, y, h0).backward()
            if args.clip_bptt is not None:
                torch.nn.utils.clip_grad_norm_(params, args.clip_bptt)
            opt.step()
    return {"curve": curve, "seconds": time.perf_counter() - t0}


def summarize(per_seed: dict) -> dict:
    """Median over seeds of the first and last loss and of the reduction, per rule."""
    out = {}
    for rule in next(iter(per_seed.values())):
        runs = [r[rule] for r in per_seed.values()]
        out[rule] = {key: statistics.median(r[key] for r in runs)
                     for key in ("first", "last", "reduction", "best_reduction")}
        out[rule]["reductions"] = [r["reduction"] for r in runs]
    return out


def plot(results: dict, args, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # at least 7 inches wide: the title names the whole setting, wider than one panel
    fig, axes = plt.subplots(1, len(results), figsize=(max(4 * len(results), 7), 3.5),
                             squeeze=False)
    for ax, (periods_tau, r) in zip(axes[0], results.items()):
        rules = next(iter(r["seeds"].values()))
        for rule, color in zip(rules, ("C0", "C1", "C2")):
            curves = [s[rule]["curve"] for s in r["seeds"].values()]
            trials = [k for k, _ in curves[0]]
            values = np.array([[v for _, v in c] for c in curves])  # (seeds, evaluations)
            ax.plot(trials, np.median(values, 0), color=color, label=RULE_LABELS[rule])
            if len(curves) > 1:
                ax.fill_between(trials, values.min(0), values.max(0), color=color, alpha=0.2, lw=0)
        ax.set_yscale("log")
        ax.set_title(f"period {periods_tau} tau")
        ax.set_xlabel("trial")
        ax.grid(True, alpha=0.3)
    seeds = "" if len(args.seeds) == 1 else f"\nmedian of {len(args.seeds)} seeds, range shaded"
    axes[0][0].set_ylabel("loss (no learning during the trial)")
    axes[0][0].legend()
    cues = "" if args.cue_segment is None else f", cue every {args.cue_segment:g} tau"
    fig.suptitle(f"periodic output, {args.hidden} units, tau = {args.tau:g}, g = {args.g:g}"
                 f"{cues}{seeds}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


RULE_LABELS = {"rflo": "RFLO", "bptt": "BPTT", "readout": "readout only"}

# what RFLO's curves depend on: an earlier run's curves stand for this run's only if these match
RFLO_SETTING = ("hidden", "tau", "g", "readout_gain", "lr_rflo", "lr_out_rflo", "decay",
                "scale_lr", "trials", "eval_every", "cue_segment")


def reused_rflo(args) -> dict:
    """``{(period, seed): RFLO result}`` from ``args.rflo_from``, after checking that it was
    measured with this run's RFLO setting on every period and seed asked for."""
    earlier = json.loads(Path(args.rflo_from).read_text())
    config = earlier["config"]
    differ = [k for k in RFLO_SETTING if config.get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--rflo-from {args.rflo_from}: its RFLO setting differs in "
                         + ", ".join(f"{k} ({config.get(k)!r} there, {getattr(args, k)!r} here)"
                                     for k in differ))
    out = {}
    for pt in args.periods:
        seeds = earlier["results"].get(str(pt), {}).get("seeds", {})
        missing = [s for s in args.seeds if str(s) not in seeds]
        if missing:
            raise SystemExit(f"--rflo-from {args.rflo_from}: no RFLO run at period {pt} tau "
                             f"for seeds {missing}")
        for s in args.seeds:
            # runs from before the last trial was always evaluated may stop short of it
            last = seeds[str(s)]["rflo"]["curve"][-1][0]
            if last != args.trials:
                raise SystemExit(f"--rflo-from {args.rflo_from}: its RFLO curve at period {pt} "
                                 f"tau, seed {s} ends at trial {last}, not at the last trial "
                                 f"{args.trials}: train RFLO again (without --rflo-from)")
            out[(pt, s)] = seeds[str(s)]["rflo"]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--periods", type=positive_int, nargs="+", default=[20, 40, 80, 160], help="in units of tau")
    p.add_argument("--trials", type=positive_int, default=200)
    p.add_argument("--eval-every", type=positive_int, default=10)
    p.add_argument("--hidden", type=positive_int, default=30)
    p.add_argument("--tau", type=positive_float, default=10.0)
    p.add_argument("--g", type=positive_float, default=1.5, help="gain of the initial recurrent weights")
    p.add_argument("--readout-gain", type=float, default=0.1,
                   help="scale of the initial readout (LeakyRNN's readout_gain; runs committed "
                        "before it existed used 1.0)")
    p.add_argument("--lr-rflo", type=positive_float, default=3e-3)
    p.add_argument("--lr-out-rflo", type=positive_float, default=None,
                   help="RFLO's step size for the readout W_out (default: --lr-rflo)")
    p.add_argument("--decay", type=positive_float, default=None, metavar="K",
                   help="divide RFLO's step sizes by 1 + trial / K (default: constant)")
    p.add_argument("--lr-bptt", type=positive_float, default=3e-3)
    p.add_argument("--clip-bptt", type=positive_float, default=None, metavar="NORM",
                   help="clip BPTT's gradient norm to NORM before each Adam step (default: no clip)")
    p.add_argument("--rflo-from", default=None, metavar="JSON",
                   help="take RFLO's curves from an earlier run's JSON with the same RFLO "
                        "setting, periods and seeds, and train only BPTT")
    p.add_argument("--cue-segment", type=positive_float, default=None, metavar="TAU",
                   help="give the network one-hot cue inputs, a new one every TAU (units of "
                        "tau), trained by both rules (default: no input, the paper's Figure 2)")
    p.add_argument("--readout-baseline", action="store_true",
                   help="also train the readout alone with RFLO's readout steps, W and W_in "
                        "fixed: what RFLO's recurrent updates add to a reservoir")
    p.add_argument("--scale-lr", action="store_true",
                   help="scale RFLO's per-step rate by 20 tau / period (default: one rate)")
    p.add_argument("--seeds", type=seed_int, nargs="+", default=[0],
                   help="realizations: initial network, start state, feedback")
    p.add_argument("--jobs", type=positive_int, default=1, help="processes running realizations")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="rflo_periodic", help="file name stem")
    args = p.parse_args(argv)
    if args.cue_segment is not None and round(args.cue_segment * args.tau) < 1:
        p.error(f"--cue-segment {args.cue_segment:g} tau is less than one step "
                f"(tau = {args.tau:g} steps)")
    tasks = [(pt, s) for pt in args.periods for s in args.seeds]
    steps = {pt: int(round(pt * args.tau)) for pt in args.periods}
    reused = reused_rflo(args) if args.rflo_from else {}
    if args.jobs == 1:
        done = {t: run(steps[t[0]], t[1], args, reused.get(t)) for t in tasks}
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = {t: pool.submit(run, steps[t[0]], t[1], args, reused.get(t)) for t in tasks}
            done = {t: f.result() for t, f in futures.items()}
    results = {}
    for pt in args.periods:
        per_seed = {s: done[(pt, s)] for s in args.seeds}
        results[pt] = r = {"summary": summarize(per_seed), "seeds": per_seed}
        print(f"period {pt:>4} tau ({steps[pt]} steps): " + "   ".join(
            f"{rule}: {v['first']:.4f} -> {v['last']:.5f} (median {v['reduction']:.1f}x; "
            f"seeds " + ", ".join(f"{x:.1f}x" for x in v["reductions"]) + ")"
            for rule, v in r["summary"].items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, args, out / f"{args.name}.png")
    payload = {"environment": environment(), "config": vars(args), "results": results}
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.png')}")


if __name__ == "__main__":
    main()
