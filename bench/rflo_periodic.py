"""RFLO beside BPTT on the periodic-output task of Murray (2019), Figure 2.

    python -m bench.rflo_periodic [--periods 20 40 80 160] [--trials 200]
    python -m bench.rflo_periodic --trials 2000 --eval-every 50 --lr-rflo 3e-4 \
        --lr-out-rflo 1e-2 --name rflo_periodic_2000     # the README's table

A leaky RNN of 30 units (tau = 10 steps), no external input, starts every trial from the
same random state and must output ``sin(2 pi t / P)`` over one period ``P`` (given in units
of tau). RFLO (``fastunitary.rflo.RFLO``, online updates every step, fixed random
feedback) and BPTT (Adam on the trial's mean squared error, gradients through the whole
trial) train the same initial network for the same number of trials, each with fixed
rates: RFLO's readout may take its own (``--lr-out-rflo``); ``--scale-lr`` scales RFLO's
per-step rate by ``20 tau / period``, since its updates add up over a trial's steps (on
seed 0 that did not help). Every ``--eval-every`` trials the loss of a trial without
learning is recorded. Writes ``bench/results/<name>.json`` and ``.png``
(``--name``, default ``rflo_periodic``): loss against trials, one panel per period.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from fastunitary.rflo import RFLO, LeakyRNN, bptt_loss, periodic_target

from .common import RESULTS, environment


def run(period: int, args) -> dict:
    g = torch.Generator().manual_seed(args.seed)
    net = LeakyRNN(1, args.hidden, 1, tau=args.tau, generator=g)
    h0 = torch.randn(1, args.hidden, generator=g) * 0.5
    x, y = torch.zeros(period, 1, 1), periodic_target(period)
    out = {}
    # RFLO
    rnn = copy.deepcopy(net)
    # RFLO updates at every step: a trial of P steps moves the weights P times, so the step
    # size is scaled by 200 / P to keep the change per trial that of the 20-tau period
    lr = args.lr_rflo * 20 * args.tau / period if args.scale_lr else args.lr_rflo
    trainer = RFLO(rnn, lr=lr, lr_out=args.lr_out_rflo, train_input=False,
                   generator=torch.Generator().manual_seed(args.seed + 1))
    curve, t0 = [], time.perf_counter()
    for k in range(args.trials + 1):
        if k % args.eval_every == 0:
            curve.append((k, trainer.run(x, y, h0, learn=False).mean().item()))
        if k < args.trials:
            trainer.run(x, y, h0)
    out["rflo"] = {"curve": curve, "seconds": time.perf_counter() - t0}
    # BPTT on the same initial network
    rnn = copy.deepcopy(net)
    rnn.weight_in.requires_grad_(False)
    opt = torch.optim.Adam([rnn.weight, rnn.weight_out], lr=args.lr_bptt)
    curve, t0 = [], time.perf_counter()
    for k in range(args.trials + 1):
        if k % args.eval_every == 0:
            with torch.no_grad():
                curve.append((k, bptt_loss(rnn, x, y, h0).item()))
        if k < args.trials:
            opt.zero_grad()
            bptt_loss(rnn, x, y, h0).backward()
            opt.step()
    out["bptt"] = {"curve": curve, "seconds": time.perf_counter() - t0}
    for name, r in out.items():
        first, last = r["curve"][0][1], r["curve"][-1][1]
        r.update(first=first, last=last, reduction=first / last)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--periods", type=int, nargs="+", default=[20, 40, 80, 160], help="in units of tau")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--hidden", type=int, default=30)
    p.add_argument("--tau", type=float, default=10.0)
    p.add_argument("--lr-rflo", type=float, default=3e-3)
    p.add_argument("--lr-out-rflo", type=float, default=None,
                   help="RFLO's step size for the readout W_out (default: --lr-rflo)")
    p.add_argument("--lr-bptt", type=float, default=3e-3)
    p.add_argument("--scale-lr", action="store_true",
                   help="scale RFLO's per-step rate by 20 tau / period (default: one rate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="rflo_periodic", help="file name stem")
    args = p.parse_args(argv)
    results = {}
    for periods_tau in args.periods:
        P = int(round(periods_tau * args.tau))
        results[periods_tau] = r = run(P, args)
        print(f"period {periods_tau:>4} tau ({P} steps): "
              + "   ".join(f"{k}: {v['first']:.4f} -> {v['last']:.5f} ({v['reduction']:.1f}x, "
                           f"{v['seconds']:.0f} s)" for k, v in r.items()), flush=True)
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.5), squeeze=False)
    for ax, (periods_tau, r) in zip(axes[0], results.items()):
        for name, v in r.items():
            ax.plot(*zip(*v["curve"]), label=name.upper())
        ax.set_yscale("log")
        ax.set_title(f"period {periods_tau} tau")
        ax.set_xlabel("trial")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("loss (no learning during the trial)")
    axes[0][0].legend()
    fig.suptitle(f"periodic output, {args.hidden} units, tau = {args.tau:g}")
    fig.tight_layout()
    fig.savefig(out / f"{args.name}.png", dpi=100)
    payload = {"environment": environment(), "config": vars(args), "results": results}
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.png')}")


if __name__ == "__main__":
    main()
