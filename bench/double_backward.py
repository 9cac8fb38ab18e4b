"""What a double backward costs: an input-gradient penalty beside an ordinary backward.

    python -m bench.double_backward [--T 200 400] [--B 16] [--hidden 64] [--models ...]

For each model and length, timed interleaved: one ordinary forward+backward of the mean
square of the output (the fused backward ops), and one step of WGAN-GP's penalty
``||d loss / d x||^2`` differentiated in the parameters (the ops' ``create_graph`` path:
autograd through a step-by-step recomputation, then its backward), taken twice: by eager
autograd (``create_graph=True``) and by ``torch.func`` (``grad`` of a function of
``grad``). Before timing, on a float64 copy of the model, the penalty path's first
derivative in ``x`` is checked against the fused one, and the ``torch.func`` penalty
gradient against the eager one (relative error at most 1e-7); a model that fails is
reported and not timed. Writes
``bench/results/double_backward_<device>.json``.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch.func import functional_call, grad

from .common import (add_model_arguments, add_run_arguments, environment, positive_int,
                     time_interleaved, write_result)
from .per_sample import MODELS


#: relative error allowed between the paths, float64
GATE = 1e-7


def input_gradient(model, x, create_graph: bool) -> torch.Tensor:
    """``d loss / d x`` ``(T, B, input)`` of the mean square of the output."""
    xr = x.clone().requires_grad_()
    loss = model(xr)[0].square().mean()
    return torch.autograd.grad(loss, xr, create_graph=create_graph)[0]


def eager_penalty_gradient(model, x) -> dict:
    """The gradient of ``||d loss / d x||^2`` in the parameters, by eager autograd."""
    model.zero_grad(set_to_none=True)
    input_gradient(model, x, True).square().sum().backward()
    return {k: p.grad for k, p in model.named_parameters()}


def func_penalty_gradient(model, x) -> dict:
    """The same gradient by ``torch.func``: ``grad`` of a function of ``grad``."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def penalty_of(params):
        def loss(x):  # buffers copied per call: ENRNN's sticky rule writes one
            b = {k: v.clone() for k, v in buffers.items()}
            return functional_call(model, (params, b), (x,))[0].square().mean()
        return grad(loss)(x).square().sum()
    return grad(penalty_of)(params)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _gate(model, x) -> dict:
    """The two relative errors the timing is gated on (``model`` and ``x`` float64)."""
    fused, recomputed = input_gradient(model, x, False), input_gradient(model, x, True)
    by_func, by_eager = func_penalty_gradient(model, x), eager_penalty_gradient(model, x)
    return {"rel_error_create_graph_vs_fused": _relative(recomputed.detach(), fused),
            "rel_error_func_vs_eager_penalty_gradient":
                max(_relative(by_func[k], g) for k, g in by_eager.items())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, MODELS, T=[200, 400], hidden=64, input_size=16)
    p.add_argument("--B", type=positive_int, default=16)
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    payload = {"environment": environment(device), "config": vars(args), "rows": []}
    for name in args.models:
        torch.manual_seed(0)
        model = MODELS[name](args.input_size, args.hidden).to(device)
        for T in args.T:
            x = torch.randn(T, args.B, args.input_size, device=device)

            # the gate runs on a float64 copy: in float32 both paths carry rounding of
            # their own (AdamLSTM's, at T = 400: 3e-4 from float64, either way)
            row = {"model": name, "T": T, **_gate(copy.deepcopy(model).double(), x.double())}
            if not (row["rel_error_create_graph_vs_fused"] <= GATE
                    and row["rel_error_func_vs_eager_penalty_gradient"] <= GATE):
                print(f"{name} T={T}: FAILED correctness gate "
                      f"({row['rel_error_create_graph_vs_fused']:.1e}, "
                      f"{row['rel_error_func_vs_eager_penalty_gradient']:.1e}): not timed")
                payload["rows"].append({**row, "status": "failed correctness gate"})
                continue

            def backward():
                model.zero_grad(set_to_none=True)
                model(x)[0].square().mean().backward()

            times = time_interleaved({"backward": backward,
                                      "penalty": lambda: eager_penalty_gradient(model, x),
                                      "func_penalty": lambda: func_penalty_gradient(model, x)},
                                     device, repeats=args.repeats)
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
