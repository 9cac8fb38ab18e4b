"""Cost of ENRNN's normalization beside the training step it belongs to.

    python -m bench.spectral_radius [--n2 64 128 256 512 1024] [--T 1000] [--B 20]

For each short-term size n2: the time of ``spectral_radius`` forward+backward (one float64
eigendecomposition and inverse of ``M``, once per forward call) and of one ENRNN training
step (forward+backward, ``unitary_size = 128``, input size 2, length T, batch B), and the
share of the step the normalization takes.
"""

from __future__ import annotations

import argparse

import torch

import fastunitary.functional as F
from fastunitary.nn import ENRNN

from .common import environment, time_it, write_result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n2", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--n1", type=int, default=128)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--B", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for n2 in args.n2:
        torch.manual_seed(0)
        rnn = ENRNN(2, args.n1, n2).to(device)
        M = rnn.layers[0].M
        x = torch.randn(args.T, args.B, 2, device=device)

        def norm():
            F.spectral_radius(M).backward()

        def step():
            rnn(x)[0].square().mean().backward()

        t_norm = time_it(norm, device, repeats=args.repeats)
        t_step = time_it(step, device, repeats=args.repeats)
        share = t_norm["median_s"] / t_step["median_s"]
        rows.append({"n1": args.n1, "n2": n2, "T": args.T, "B": args.B, "device": str(device),
                     "normalization_s": t_norm, "training_step_s": t_step,
                     "share_of_step": share})
        print(f"n2={n2:5d}: normalization {t_norm['median_s'] * 1e3:9.2f} ms, training step "
              f"{t_step['median_s'] * 1e3:9.1f} ms, share {share * 100:5.1f} %", flush=True)
    path = write_result("spectral_radius", {"environment": environment(), "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
