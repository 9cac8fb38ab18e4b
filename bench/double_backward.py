"""What a double backward costs: an input-gradient penalty beside an ordinary backward.

    python -m bench.double_backward [--T 200 400] [--B 16] [--hidden 64] [--models ...]

For each model and length, timed interleaved: one ordinary forward+backward of the mean
square of the output (the fused backward ops), and one step of WGAN-GP's penalty
``||d loss / d x||^2`` differentiated in the parameters (the ops' ``create_graph`` path:
autograd through a step-by-step recomputation, then its backward), taken twice: by eager
autograd (``create_graph=True``) and by ``torch.func`` (``grad`` of a function of
``grad``). Before timing, the penalty path's first derivative in ``x`` is checked against
the fused one, and the ``torch.func`` penalty gradient against the eager one (relative
error at most 1e-4, float32); a model that fails is reported and not timed. Writes
``bench/results/double_backward_<device>.json``.
"""

from __future__ import annotations

import argparse

import torch
from torch.func import functional_call, grad

from .common import (add_model_arguments, add_run_arguments, environment, time_interleaved,
                     write_result)
from .per_sample import MODELS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, MODELS, T=[200, 400], hidden=64, input_size=16)
    p.add_argument("--B", type=int, default=16)
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    payload = {"environment": environment(device), "config": vars(args), "rows": []}
    for name in args.models:
        torch.manual_seed(0)
        model = MODELS[name](args.input_size, args.hidden).to(device)
        for T in args.T:
            x = torch.randn(T, args.B, args.input_size, device=device)

            def input_gradient(create_graph):
                xr = x.clone().requires_grad_()
                loss = model(xr)[0].square().mean()
                return torch.autograd.grad(loss, xr, create_graph=create_graph)[0]

            def func_penalty_gradient():  # buffers copied per call: ENRNN writes one
                buffers = dict(model.named_buffers())

                def penalty_of(params):
                    def loss(x):
                        b = {k: v.clone() for k, v in buffers.items()}
                        return functional_call(model, (params, b), (x,))[0].square().mean()
                    return grad(loss)(x).square().sum()
                return grad(penalty_of)(params)

            def eager_penalty_gradient():
                model.zero_grad(set_to_none=True)
                input_gradient(True).square().sum().backward()
                return {k: p.grad for k, p in model.named_parameters()}

            params = {k: p.detach() for k, p in model.named_parameters()}
            fused, recomputed = input_gradient(False), input_gradient(True).detach()
            error = ((recomputed - fused).abs().max() / fused.abs().max()).item()
            by_func, by_eager = func_penalty_gradient(), eager_penalty_gradient()
            func_error = max(((by_func[k] - g).abs().max() / g.abs().max().clamp_min(1e-30)).item()
                             for k, g in by_eager.items())
            row = {"model": name, "T": T, "rel_error_create_graph_vs_fused": error,
                   "rel_error_func_vs_eager_penalty_gradient": func_error}
            if not (error <= 1e-4 and func_error <= 1e-4):
                print(f"{name} T={T}: FAILED correctness gate ({error:.1e}, {func_error:.1e}): "
                      "not timed")
                payload["rows"].append({**row, "status": "failed correctness gate"})
                continue

            def backward():
                model.zero_grad(set_to_none=True)
                model(x)[0].square().mean().backward()

            times = time_interleaved({"backward": backward, "penalty": eager_penalty_gradient,
                                      "func_penalty": func_penalty_gradient}, device,
                                     repeats=args.repeats)
            ratio = times["penalty"]["median_s"] / times["backward"]["median_s"]
            func_ratio = times["func_penalty"]["median_s"] / times["backward"]["median_s"]
            payload["rows"].append({**row, "status": "ok", "times": times,
                                    "penalty_over_backward": ratio,
                                    "func_penalty_over_backward": func_ratio})
            print(f"{name:>12} T={T}: backward {times['backward']['median_s'] * 1e3:7.1f} ms, "
                  f"penalty {times['penalty']['median_s'] * 1e3:7.1f} ms ({ratio:.1f}x), "
                  f"torch.func {times['func_penalty']['median_s'] * 1e3:7.1f} ms "
                  f"({func_ratio:.1f}x)")
    print(f"wrote {write_result('double_backward', payload, args.out)}")


if __name__ == "__main__":
    main()
