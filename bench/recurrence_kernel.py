"""The recurrence op alone: fused Triton kernels against the reference, per state size.

    python -m bench.recurrence_kernel [--T 1000] [--B 1 16 64] [--n 16 32 64 128 256 512 1024]
                                      [--design split streamed]

For each (complex?, n, B): forward and forward+backward time of
``fastunitary.functional.recurrence`` with ``backend="triton"`` and ``"reference"`` on the
same inputs (CUDA; on CPU only the reference runs, the interpreter being no measure of
speed), microseconds per step, and the fraction of the H100 fp32 peak that the product
``2 * B * D^2`` FLOPs per step reaches. Each Triton result is compared with the reference
first; a mismatch is reported as failed and not timed. ``--design``: the designs of the
states above the resident limit to time (``kernels.recurrence.LARGE_N_DESIGN``; default
the dispatched one), each a row of its own.
"""

from __future__ import annotations

import argparse

import torch

import fastunitary.functional as F
from fastunitary.kernels import recurrence as K

from .common import add_run_arguments, environment, time_it, write_result

H100_FP32_FLOPS = 67e12  # non-tensor-core fp32 peak (SXM)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--B", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--n", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    p.add_argument("--design", nargs="+", choices=["split", "streamed"],
                   default=[K.LARGE_N_DESIGN])
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    backends = ["triton", "reference"] if device.type == "cuda" else ["reference"]
    rows = []

    def variants(n: int, is_complex: bool) -> list[tuple[str, str]]:
        """(backend, design) pairs to time at n: each asked design (a resident n has one
        whatever LARGE_N_DESIGN), then the reference."""
        designs = []
        for asked in args.design:
            K.LARGE_N_DESIGN = asked
            design = K.plan(n, is_complex)["design"]
            if design not in designs:
                designs.append(design)
        return [("triton", d) for d in designs if "triton" in backends] + [("reference", "-")]

    def write(complete: bool):
        # rewritten after every row, so that a run stopped by a time cap (ci/gpu.sh) keeps
        # what it measured
        payload = {"environment": environment(device), "complete": complete, "rows": rows}
        return write_result("recurrence_kernel", payload, args.out)

    dispatched = K.LARGE_N_DESIGN
    try:
        for is_complex in (True, False):
            kind = torch.complex64 if is_complex else torch.float32
            for n in args.n:
                for B in args.B:
                    torch.manual_seed(0)
                    X = torch.randn(n, n, dtype=kind, device=device)
                    W = F.cayley(X - X.mH).requires_grad_()
                    u = (torch.randn(args.T, B, n, dtype=kind, device=device) * 0.3).requires_grad_()
                    bias = torch.zeros(n, device=device)
                    D = 2 * n if is_complex else n
                    flops = 2 * B * D * D  # per step, forward product
                    with torch.no_grad():
                        ref = F.recurrence(u, W, bias, backend="reference")
                    for backend, design in variants(n, is_complex):
                        if design != "-":
                            K.LARGE_N_DESIGN = design if design != "resident" else dispatched
                        row = {"complex": is_complex, "n": n, "B": B, "T": args.T, "backend": backend,
                               "design": design}
                        with torch.no_grad():
                            out = F.recurrence(u, W, bias, backend=backend)
                        err = ((out - ref).abs().norm() / ref.abs().norm()).item()
                        row["rel_error_vs_reference"] = err
                        if not err <= 1e-4:
                            row["status"] = "failed correctness gate"
                            rows.append(row)
                            print(f"complex={is_complex} n={n} B={B} {backend}: FAILED ({err:.1e})")
                            write(complete=False)
                            continue

                        def fwd():
                            with torch.no_grad():
                                F.recurrence(u, W, bias, backend=backend)

                        def fwd_bwd():
                            F.recurrence(u, W, bias, backend=backend).abs().sum().backward()

                        tf = time_it(fwd, device, repeats=args.repeats)
                        tb = time_it(fwd_bwd, device, repeats=args.repeats)
                        us = tf["median_s"] / args.T * 1e6
                        row.update({"status": "ok", "forward_s": tf, "forward_backward_s": tb,
                                    "us_per_step_forward": us,
                                    "tokens_per_s_forward": B * args.T / tf["median_s"],
                                    "fraction_of_h100_fp32_peak": flops / (us * 1e-6) / H100_FP32_FLOPS})
                        rows.append(row)
                        write(complete=False)
                        print(f"complex={is_complex!s:5} n={n:5d} B={B:4d} {backend:>9} {row['design']:>8}: "
                              f"fwd {us:8.2f} us/step, fwd+bwd {tb['median_s'] * 1e3:9.2f} ms, "
                              f"{row['fraction_of_h100_fp32_peak']:.1e} of peak")
    finally:
        K.LARGE_N_DESIGN = dispatched
    path = write(complete=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
