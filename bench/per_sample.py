"""Per-sample gradients (``vmap(grad(...))``, DP-SGD's) against a loop over samples.

    python -m bench.per_sample [--samples 32] [--T 200] [--hidden 64] [--models ...]

For each model, three ways of differentiating a loss over ``samples`` sequences, timed
interleaved:

- ``vmap``: ``torch.func.vmap(torch.func.grad(loss))`` over the samples, one gradient per
  sample; the ops' batching rules run all samples as one batch of each op;
- ``loop``: ``torch.func.grad(loss)`` once per sample in a Python loop, the same per-sample
  gradients (what a transform costs when an op has no batching rule: functorch's fallback
  runs the op once per sample);
- ``batched backward``: one ordinary backward of the summed loss, which gives only the sum
  of the per-sample gradients: the lower bound.

Before timing, the ``vmap`` gradients are checked against the loop's in float64 (relative
error at most 1e-8), on a float64 copy of the model: in float32 the two orders of summation
differ by more than rounding for these models (a modReLU unit at its threshold switches on
in one and off in the other, both equally far from the float64 gradient, 1e-3 to 1e-1 at
T = 200), which would gate the model rather than the batching. A model that fails is
reported and not timed; timing is in float32. The JSON is
rewritten after every model (``"complete": false`` until the end).
"""

from __future__ import annotations

import argparse
import copy
from functools import partial

import torch
from torch.func import functional_call, grad, vmap

import fastunitary.nn as fnn

from .common import (add_model_arguments, add_run_arguments, environment, positive_int,
                     time_interleaved, write_result)

MODELS = {
    "scurnn": lambda m, n: fnn.ScuRNN(m, n // 2),
    "scornn": lambda m, n: fnn.ScoRNN(m, n),
    "enrnn": lambda m, n: fnn.ENRNN(m, n // 2, n - n // 2),
    "momentumrnn": lambda m, n: fnn.MomentumRNN(m, n, mu=0.6, step=0.6),
    "momentumlstm": lambda m, n: fnn.MomentumLSTM(m, n, mu=0.6, step=0.6),
    "adamlstm": lambda m, n: fnn.AdamLSTM(m, n),
    "sbornn": lambda m, n: fnn.SBORNN(m, n, method="heavy_ball", steps=2),
}


def _relative_error(got: dict, want: dict) -> float:
    return max(((got[k] - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-30)).item()
               for k in want)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=positive_int, default=32)
    add_model_arguments(p, MODELS, T=200, hidden=64, input_size=16)
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    xs = torch.randn(args.samples, args.T, args.input_size, device=device)
    rows = []
    payload = {"environment": environment(device), "rows": rows}
    for name in args.models:
        model = MODELS[name](args.input_size, args.hidden).to(device)
        params = {k: v.detach() for k, v in model.named_parameters()}
        # inputs, not captured: ENRNN's sticky rule writes a buffer in training
        buffers = dict(model.named_buffers())
        double = copy.deepcopy(model).double()

        def loss(p, b, x, model=model):  # x: (T, input_size), one sample
            out = functional_call(model, (p, b), (x.unsqueeze(1),))[0]
            return out.square().mean()

        def per_sample(params, buffers, xs, model=model):
            return vmap(grad(partial(loss, model=model)), in_dims=(None, None, 0))(
                params, buffers, xs)

        def loop(params=params, buffers=buffers, xs=xs, model=model):
            one_sample = grad(partial(loss, model=model))
            return [one_sample(params, buffers, x) for x in xs]

        def batched_backward(model=model):
            model.zero_grad(set_to_none=True)
            model(xs.transpose(0, 1))[0].square().mean().backward()

        p64 = {k: v.detach() for k, v in double.named_parameters()}
        b64 = dict(double.named_buffers())
        got = per_sample(p64, b64, xs.double(), double)
        want = {k: torch.stack([g[k] for g in loop(p64, b64, xs.double(), double)]) for k in p64}
        err = _relative_error(got, want)
        row = {"model": name, "samples": args.samples, "T": args.T, "hidden": args.hidden,
               "input_size": args.input_size, "rel_error_vmap_vs_loop": err}
        if not err <= 1e-8:
            rows.append({**row, "status": "failed correctness gate"})
            print(f"{name}: FAILED correctness gate (rel. error {err:.2e})")
            write_result("per_sample", {**payload, "complete": False}, args.out)
            continue
        t = time_interleaved({"vmap": lambda: per_sample(params, buffers, xs), "loop": loop,
                              "batched backward": batched_backward}, device,
                             repeats=args.repeats)
        speedup = t["loop"]["median_s"] / t["vmap"]["median_s"]
        over_backward = t["vmap"]["median_s"] / t["batched backward"]["median_s"]
        rows.append({**row, "status": "ok", "times_s": t, "loop_over_vmap": speedup,
                     "vmap_over_batched_backward": over_backward})
        print(f"{name:>13}: vmap {t['vmap']['median_s'] * 1e3:7.1f} ms   "
              f"loop {t['loop']['median_s'] * 1e3:7.1f} ms   "
              f"batched backward {t['batched backward']['median_s'] * 1e3:7.1f} ms   "
              f"loop/vmap {speedup:.1f}x   vmap/backward {over_backward:.2f}x")
        write_result("per_sample", {**payload, "complete": False}, args.out)
    path = write_result("per_sample", {**payload, "complete": True}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
