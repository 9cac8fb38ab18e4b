"""What forward mode costs: a Jacobian-vector product in the parameters beside a backward.

    python -m bench.forward_mode [--T 200 400] [--B 16] [--hidden 64] [--models ...]

For each model and length, timed interleaved: one ordinary forward+backward of the mean
square of the output (the fused backward ops); ``torch.func.jvp`` of the output in all
parameters along a random direction; and the same with dual parameters of
``torch.autograd.forward_ad`` (in forward mode each op runs its reference loop, which
PyTorch differentiates forward). Before timing, both tangents ``J t`` are checked by the dot-product
test against the fused backward, ``<J t, w> = <t, J^T w>`` for a random ``w`` (relative
error at most 1e-4, float32); a model that fails is reported and not timed. Writes
``bench/results/forward_mode_<device>.json``.
"""

from __future__ import annotations

import argparse

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from .common import (add_model_arguments, add_run_arguments, environment, positive_int,
                     time_interleaved, write_result)
from .per_sample import MODELS


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
        model = MODELS[name](args.input_size, args.hidden).to(device).eval()
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        tangents = {k: torch.randn_like(v) for k, v in params.items()}
        for T in args.T:
            x = torch.randn(T, args.B, args.input_size, device=device)

            def out(p):
                return functional_call(model, (p, buffers), (x,))[0]

            def func_jvp():
                # buffers captured, not written: in eval mode ENRNN's sticky switch is
                # only read (in training mode its write is one torch.func refuses)
                return torch.func.jvp(out, (params,), (tangents,))[1]

            def dual():
                with fwAD.dual_level():
                    duals = {k: fwAD.make_dual(v, tangents[k]) for k, v in params.items()}
                    return fwAD.unpack_dual(out(duals)).tangent

            def backward():
                model.zero_grad(set_to_none=True)
                model(x)[0].square().mean().backward()

            w = torch.randn_like(out(params))
            leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
            vjp = torch.autograd.grad((out(leaves) * w).sum(), list(leaves.values()))
            reverse = sum((g * tangents[k]).sum() for k, g in zip(leaves, vjp)).item()
            row, timed = {"model": name, "T": T}, {"backward": backward}
            for label, fn in (("func_jvp", func_jvp), ("forward_ad", dual)):
                try:
                    forward = (fn() * w).sum().item()
                except RuntimeError as e:  # a transform's own refusal, recorded as such
                    row[f"{label}_unsupported"] = str(e).splitlines()[0][:200]
                    continue
                error = abs(forward - reverse) / max(abs(reverse), 1e-30)
                row[f"rel_error_{label}"] = error
                if error <= 1e-4:
                    timed[label] = fn
                else:
                    print(f"{name} T={T} {label}: FAILED the dot-product test ({error:.1e})")
            times = time_interleaved(timed, device, repeats=args.repeats)
            ratios = {f"{k}_over_backward": times[k]["median_s"] / times["backward"]["median_s"]
                      for k in times if k != "backward"}
            payload["rows"].append({**row, "times": times, **ratios})
            print(f"{name:>12} T={T}: backward {times['backward']['median_s'] * 1e3:7.1f} ms, "
                  + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    print(f"wrote {write_result('forward_mode', payload, args.out)}")


if __name__ == "__main__":
    main()
