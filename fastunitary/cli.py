"""Command line: ``fastunitary train ...`` (also ``python -m fastunitary train ...``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ._backend import BackendUnavailableError
from .train import (MODELS, MOMENTUM_LSTMS, SBO_RNNS, TASKS, TrainConfig, is_main_process,
                    length_label, train)


#: the time budget of a run given neither --steps nor --max-seconds
DEFAULT_SECONDS = 60.0

#: options that only some models (or, for convention, tasks) read: given elsewhere they
#: would be dropped without a trace, so they are refused
MODEL_OPTIONS = {
    "short": ("enrnn",),
    "rho": ("scornn", "enrnn"),
    "lr_A": ("scurnn", "scornn", "enrnn"),
    "lr_D": ("scurnn",),
    "mu": ("momentumlstm", "adamlstm", "momentumrnn", "sbornn_hb", "sbornn_nag"),
    "momentum_step": (*MOMENTUM_LSTMS, "momentumrnn"),
    "restart": ("nesterovlstm",),
    "eta": tuple(SBO_RNNS),
    "inner_steps": tuple(SBO_RNNS),
}
TASK_OPTIONS = {"convention": ("copying",), "length": ("copying", "adding")}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where there is none to show (None, or a
    flag's False): the help says what happens without the option."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _train_parser(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model on a task and report loss vs baseline",
                       formatter_class=_HelpFormatter)
    p.add_argument("--task", choices=TASKS, default=d.task, help="what to learn")
    p.add_argument("--permuted", action="store_true",
                   help="the permuted (shuffled) variant of digits, fashion_mnist or mnist1d")
    p.add_argument("--model", choices=MODELS, default=d.model, help="the recurrent network")
    p.add_argument("--hidden", type=int, default=d.hidden,
                   help="hidden size (complex state size for scurnn, unitary_size for enrnn)")
    p.add_argument("--short", type=int, default=None, help=f"enrnn: short_size (default: {d.short})")
    p.add_argument("--layers", type=int, default=d.layers, help="stacked recurrent layers")
    p.add_argument("--length", type=int, default=None,
                   help=f"copying: delay T; adding: sequence length L (default: {d.length}); "
                        f"fixed for digits (64), fashion_mnist (784), mnist1d (40)")
    p.add_argument("--convention", choices=("scornn", "exprnn"), default=None,
                   help=f"copying: marker position (default: {d.convention})")
    p.add_argument("--batch", type=int, default=d.batch, help="sequences per training step")
    p.add_argument("--steps", type=int, default=None,
                   help=f"stop after this many steps (the total, with --resume); with "
                        f"--max-seconds too, at whichever comes first; with neither, after "
                        f"{DEFAULT_SECONDS:g} s")
    p.add_argument("--max-seconds", type=float, default=None,
                   help=f"stop after this many seconds of training (with --resume, time trained "
                        f"already counts); with neither this nor --steps: {DEFAULT_SECONDS:g}")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="learning rate of everything but A and D (Adam; RMSProp for enrnn)")
    p.add_argument("--lr-A", dest="lr_A", type=float, default=None,
                   help=f"scurnn, scornn: RMSProp's rate for A; enrnn: for A1 (default: {d.lr_A})")
    p.add_argument("--lr-D", dest="lr_D", type=float, default=None,
                   help=f"scurnn: Adagrad's rate for the phases of D (default: {d.lr_D})")
    p.add_argument("--rho", type=int, default=None,
                   help="scornn: number of -1 in D (default hidden // 10); enrnn: in D1 "
                        "(default 0.3 * hidden, rounded: 52 of 172)")
    p.add_argument("--clip", type=float, default=d.clip, help="max grad norm, 0 = off")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="evaluate every N steps (and after the last step)")
    p.add_argument("--eval-size", type=int, default=d.eval_size,
                   help="sequences evaluated (copying, adding: generated; fashion_mnist: the "
                        "first N test images; digits, mnist1d: their whole test set)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="weights, batches and evaluation set, >= 0 (< 2**32 for the permuted "
                        "tasks, whose pixel permutation numpy's RandomState draws)")
    p.add_argument("--device", default=d.device, help="where to train: cpu, cuda, cuda:1, ...")
    p.add_argument("--backend", choices=("auto", "reference", "triton"), default=d.backend,
                   help="fastunitary's ops: Triton kernels or the PyTorch reference (auto: "
                        "Triton on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True)")
    p.add_argument("--mu", type=float, default=None,
                   help=f"momentumlstm, adamlstm, momentumrnn, sbornn_hb, sbornn_nag: mu (the "
                        f"MomentumRNN recipe; SBO-RNN's official start is 0.5) (default: "
                        f"{d.mu})")
    p.add_argument("--momentum-step", dest="momentum_step", type=float, default=None,
                   help=f"the momentum LSTMs and momentumrnn: s (default: {d.momentum_step})")
    p.add_argument("--restart", type=int, default=None,
                   help=f"nesterovlstm: restart period R (default: {d.restart})")
    p.add_argument("--eta", type=float, default=None,
                   help=f"sbornn*: inner step size (default: {d.eta})")
    p.add_argument("--inner-steps", dest="inner_steps", type=int, default=None,
                   help=f"sbornn*: optimizer iterations per time step (K) (default: "
                        f"{d.inner_steps})")
    p.add_argument("--out", default=None,
                   help="folder for metrics.json, metrics.csv, curves.png and checkpoint.pt "
                        "(created if missing; without it nothing is written)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int,
                   default=d.checkpoint_every,
                   help="with --out: checkpoint every N steps (0: at each evaluation)")
    p.add_argument("--resume", default=None,
                   help="continue from a checkpoint.pt (same options; --steps may grow)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastunitary", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if args.permuted:
        variant = {"digits": "permuted_digits", "fashion_mnist": "permuted_fashion_mnist",
                   "mnist1d": "shuffled_mnist1d"}
        if args.task not in variant:
            parser.error(f"--permuted applies to {', '.join(variant)}, not {args.task}")
        args.task = variant[args.task]
    for options, chosen in ((MODEL_OPTIONS, args.model), (TASK_OPTIONS, args.task)):
        for name, users in options.items():
            if getattr(args, name) is None:
                delattr(args, name)  # the TrainConfig default
            elif chosen not in users:
                print(f"fastunitary train: error: --{name.replace('_', '-')} applies to "
                      f"{', '.join(users)}, not {chosen}", file=sys.stderr)
                return 2
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if cfg.steps is None and cfg.max_seconds is None:
        if cfg.resume is not None:  # the time budget counts what was trained already
            parser.error("--resume needs a budget: --steps N (the total) or --max-seconds S")
        cfg.max_seconds = DEFAULT_SECONDS
    try:
        m = train(cfg, out=args.out, progress=not args.no_progress)
    # BackendUnavailableError (a RuntimeError) is a refused backend request, not a failure
    except (ValueError, TypeError, FloatingPointError, FileNotFoundError, ImportError,
            BackendUnavailableError) as e:
        print(f"fastunitary train: error: {e}", file=sys.stderr)
        return 2
    if not is_main_process():  # under torchrun: one summary, rank 0's (it wrote the outputs)
        return 0
    verdict = "below" if m["final_eval_loss"] < m["baseline_loss"] else "not below"
    what = "recall accuracy" if cfg.task == "copying" else "test accuracy"
    extra = (f"; {what} {m['final_eval_accuracy']:.3f}" if "final_eval_accuracy" in m else "")
    length = length_label(cfg)
    print(
        f"{m['model']} on {m['task']} ({length}): {m['steps']} steps in "
        f"{m['seconds']:.0f} s, {m['tokens_per_second']:.3g} tokens/s\n"
        f"final eval loss {m['final_eval_loss']:.4f}   baseline {m['baseline_loss']:.4f}   "
        f"({verdict} baseline{extra})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
