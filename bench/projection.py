"""What ``proj_size`` (LSTMP) costs: ``MomentumLSTM`` with a projection beside
``torch.nn.LSTM`` with the same projection and the same weights.

    python -m bench.projection [--T 500] [--B 32] [--hidden 256] [--proj 64] [--input 64]

``MomentumLSTM(mu=0, step=1, proj_size=p)`` computes exactly ``torch.nn.LSTM(proj_size=p)``
(tested). Its eager CPU runs call ``torch.lstm`` with the projection (PyTorch's generic
LSTMP loop: oneDNN has no projection), as every linear buffer does; with
``backend="reference"`` (and wherever ``torch.lstm`` is not taken: AdamLSTM, compiled
models, packed batches with autograd) it runs the library's ``lstm_recurrence`` op with
``W_hr``, whose CPU form is the projected loop with a closed-form backward (on CUDA, the
Triton kernel on ``W_hh W_hr``). Timed interleaved, forward only (under
``torch.no_grad``) and forward+backward: ``torch.nn.LSTM(proj_size=p)``, the module on
both routes, the momentum variant ``MomentumLSTM(mu=0.6, step=0.6, proj_size=p)``, and,
for scale, ``torch.nn.LSTM`` of the same hidden size without projection. The module's
outputs on both routes are compared with PyTorch's before timing (a mismatch is reported
and not timed). Writes ``bench/results/projection_<device>.json``.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from fastunitary.nn import MomentumLSTM

from .common import (MODES, add_run_arguments, environment, positive_int, time_interleaved,
                     timed_modes, write_result)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=positive_int, default=500)
    p.add_argument("--B", type=positive_int, default=32)
    p.add_argument("--hidden", type=positive_int, default=256)
    p.add_argument("--proj", type=positive_int, default=64, help="proj_size")
    p.add_argument("--input", type=positive_int, default=64)
    add_run_arguments(p, repeats=7)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    m, n, r = args.input, args.hidden, args.proj
    x = torch.randn(args.T, args.B, m, device=device)
    torch_lstmp = torch.nn.LSTM(m, n, proj_size=r).to(device)
    ours = {backend: MomentumLSTM(m, n, proj_size=r, mu=0.0, step=1.0, backend=backend).to(device)
            for backend in ("auto", "reference")}
    for model in ours.values():
        model.load_state_dict(torch_lstmp.state_dict())
    models = {
        "torch.nn.LSTM(proj_size)": torch_lstmp,
        "MomentumLSTM(mu=0, step=1, proj_size)": ours["auto"],
        "same, lstm_recurrence op": ours["reference"],
        "MomentumLSTM(mu=0.6, proj_size)":
            MomentumLSTM(m, n, proj_size=r, mu=0.6, step=0.6).to(device),
        "torch.nn.LSTM (no projection)": torch.nn.LSTM(m, n).to(device),
    }
    with warnings.catch_warnings():  # PyTorch warns once that oneDNN has no projection
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad(), torch.backends.cudnn.flags(allow_tf32=False):
            want = torch_lstmp(x)[0]
            errors = {backend: ((model(x)[0] - want).abs().max() / want.abs().max()).item()
                      for backend, model in ours.items()}
        err = max(errors.values())
        print(f"MomentumLSTM(mu=0, step=1) vs torch.nn.LSTM, proj_size={r}: rel. error "
              + ", ".join(f"{e:.1e} ({backend})" for backend, e in errors.items()))
        payload = {"environment": environment(device), "config": vars(args),
                   "rel_error_vs_torch": err, "rel_error_vs_torch_by_backend": errors}
        if not err <= 1e-4:
            print("FAILED correctness gate: not timed")
            write_result("projection", {**payload, "status": "failed correctness gate"}, args.out)
            raise SystemExit(1)

        runs = {name: timed_modes(model, x) for name, model in models.items()}
        times = {mode: time_interleaved({k: r[mode] for k, r in runs.items()}, device,
                                        repeats=args.repeats) for mode in MODES}
    base = "torch.nn.LSTM(proj_size)"
    ratios = {mode: {k: t[base]["median_s"] / v["median_s"] for k, v in t.items()}
              for mode, t in times.items()}
    for mode, t in times.items():
        for k, v in t.items():
            print(f"{mode:>16} {k:>38}: {v['median_s'] * 1e3:8.1f} ms   "
                  f"speed vs torch LSTMP {ratios[mode][k]:.2f}x")
    payload.update(status="ok", times=times, speed_vs_torch_lstmp=ratios)
    print(f"wrote {write_result('projection', payload, args.out)}")


if __name__ == "__main__":
    main()
