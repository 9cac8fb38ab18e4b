"""Cost of ENRNN's normalization beside the training step it belongs to.

    python -m bench.spectral_radius [--n2 64 128 256 512 1024] [--T 1000] [--B 20]

For each short-term size n2: the time of ``spectral_radius`` forward+backward (once per
forward call) on two matrices, the ENRNN's initial ``M`` and a generic dense one (Gaussian,
scaled to radius about 1: eigenvalues spread over the disc, many of them near the top
modulus), by the route a float32 ``M`` takes (repeated squaring and Rayleigh-Ritz; see
``fastunitary/reference/spectral_radius.py``) and, for comparison, by the route a float64
``M`` takes (float32 eigenvalues, then float64 inverse iteration) and by the full float64
eigendecomposition; and of one ENRNN training step (forward+backward, ``unitary_size =
128``, input size 2, length T, batch B), with the share of the step the normalization takes.
"""

from __future__ import annotations

import argparse

import torch

import fastunitary.functional as F
from fastunitary.nn import ENRNN
from fastunitary.reference.spectral_radius import spectral_radius as spectral_radius_reference
from fastunitary.reference.spectral_radius import spectral_radius_eig

from .common import add_run_arguments, environment, positive_int, time_it, write_result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n2", type=positive_int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--n1", type=positive_int, default=128)
    p.add_argument("--T", type=positive_int, default=1000)
    p.add_argument("--B", type=positive_int, default=20)
    add_run_arguments(p, repeats=3)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for n2 in args.n2:
        torch.manual_seed(0)
        rnn = ENRNN(2, args.n1, n2).to(device)
        x = torch.randn(args.T, args.B, 2, device=device)
        matrices = {
            "initial": rnn.layers[0].M,
            "dense": (torch.randn(n2, n2, device=device) / n2**0.5).requires_grad_(),
        }

        def step():
            rnn(x)[0].square().mean().backward()

        t_step = time_it(step, device, repeats=args.repeats)
        row = {"n1": args.n1, "n2": n2, "T": args.T, "B": args.B, "device": str(device),
               "training_step_s": t_step}
        for name, M in matrices.items():
            t_norm = time_it(lambda: F.spectral_radius(M).backward(), device, repeats=args.repeats)
            M64 = M.detach().double()
            t_64 = time_it(lambda: spectral_radius_reference(M64), device, repeats=args.repeats)
            t_eig = time_it(lambda: spectral_radius_eig(M64), device, repeats=args.repeats)
            row[name] = {"normalization_s": t_norm, "float64_route_s": t_64, "full_eig_s": t_eig,
                         "share_of_step": t_norm["median_s"] / t_step["median_s"]}
        rows.append(row)
        print(f"n2={n2:5d}: step {t_step['median_s'] * 1e3:8.1f} ms; " + "; ".join(
            f"{k} M: {row[k]['normalization_s']['median_s'] * 1e3:7.1f} ms "
            f"({row[k]['share_of_step'] * 100:4.1f} %, float64 route {row[k]['float64_route_s']['median_s'] * 1e3:7.1f} ms, "
            f"full eig {row[k]['full_eig_s']['median_s'] * 1e3:7.1f} ms)"
            for k in matrices), flush=True)
    path = write_result("spectral_radius", {"environment": environment(device), "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
