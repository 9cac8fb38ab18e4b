"""A cell stepped one input at a time in evaluation, as streaming inference runs it.

    python -m bench.cell_step [--hidden 128 256] [--B 1] [--steps 200]

For ScuRNNCell, ScoRNNCell and ENRNNCell (short size hidden / 2), under ``torch.no_grad()``
in eval mode, µs per step of ``h = cell(x_t, h)`` with the cached ``W``; of the cache's
check alone (``cell._recurrent_weight()`` on a warm entry: reading every source and
comparing it with its copy); and of the step with ``W`` rebuilt at every call (training
mode, what the cache saves). Timed in turn within each repeat, ``--steps`` steps a call.
Before timing, the cached step's states are checked against the rebuilt ones.
"""

from __future__ import annotations

import argparse

import torch

from fastunitary import nn as fnn

from .common import add_run_arguments, environment, positive_int, time_interleaved, write_result

CELLS = {
    "ScuRNNCell": lambda m, n: fnn.ScuRNNCell(m, n),
    "ScoRNNCell": lambda m, n: fnn.ScoRNNCell(m, n),
    "ENRNNCell": lambda m, n: fnn.ENRNNCell(m, n - n // 2, n // 2),
}


def stepper(cell, x: torch.Tensor):
    """All ``T`` steps of ``x`` ``(T, B, m)`` through ``cell``, one call each: ``(T, B, d)``."""
    def run():
        h, out = None, []
        for x_t in x:
            h = cell(x_t, h)
            out.append(h)
        return torch.stack(out)
    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[128, 256])
    p.add_argument("--B", type=positive_int, default=1)
    p.add_argument("--input-size", type=positive_int, default=32)
    p.add_argument("--steps", type=positive_int, default=200)
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for hidden in args.hidden:
        for name, make in CELLS.items():
            torch.manual_seed(0)
            cell = make(args.input_size, hidden).to(device).eval()
            rebuilt = make(args.input_size, hidden).to(device).train()  # training: no cache
            rebuilt.load_state_dict(cell.state_dict())
            x = torch.randn(args.steps, args.B, args.input_size, device=device)
            with torch.no_grad():
                cached, fresh = stepper(cell, x), stepper(rebuilt, x)
                want = fresh()
                error = ((cached() - want).abs().max() / want.abs().max()).item()
                row = {"cell": name, "hidden": hidden, "B": args.B, "steps": args.steps,
                       "device": str(device), "rel_error_cached_vs_rebuilt": error}
                if error > 1e-6:
                    row["status"] = "failed: the cached W's states differ from the rebuilt W's"
                    print(f"{name} hidden {hidden}: {row['status']} ({error:.1e})")
                    rows.append(row)
                    continue

                def checks():
                    for _ in range(args.steps):
                        cell._recurrent_weight()

                times = time_interleaved({"cached step": cached, "check alone": checks,
                                          "W rebuilt every step": fresh},
                                         device, repeats=args.repeats)
            row["status"] = "ok"
            row["us_per_step"] = {k: v["median_s"] / args.steps * 1e6 for k, v in times.items()}
            row["times"] = times
            rows.append(row)
            us = row["us_per_step"]
            print(f"{name:>10} hidden {hidden:4d}: cached step {us['cached step']:7.1f} us"
                  f"  (check {us['check alone']:5.1f} us)"
                  f"  W rebuilt every step {us['W rebuilt every step']:8.1f} us", flush=True)
    path = write_result("cell_step", {"environment": environment(device), "config": vars(args),
                                      "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
