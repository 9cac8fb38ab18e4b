"""A fused recurrence op alone: its Triton kernels against its reference, per state size.

    python -m bench.recurrence_kernel [--op recurrence lstm_recurrence] [--T 1000]
                                      [--B 1 16 64] [--n 16 32 64 128 256 512 1024]
                                      [--design split streamed]
                                      [--block-k 32 64] [--warps 4 8] [--precision ieee tf32x3]
                                      [--stages 1 3]

For each op, (kind, n, B): forward and forward+backward time of
``fastunitary.functional.<op>`` with ``backend="triton"`` and ``"reference"`` on the same
inputs (CUDA; on CPU only the reference runs, the interpreter being no measure of speed),
microseconds per step, and the fraction of the H100 fp32 peak that the step's products
reach (``2 B D^2`` FLOPs for the recurrence, ``D = 2n`` complex; ``2 B 4n^2`` for the
LSTM's four gates). Each Triton result is compared with the reference first; a mismatch
is reported as failed and not timed. ``--design``: the designs of the states above the
resident limit to time (the kernel module's ``LARGE_N_DESIGN``; default the dispatched
one), each a row of its own. ``--block-k``, ``--warps``, ``--precision``, ``--stages``:
tile, warps, ``tl.dot`` input precision and software-pipeline stages of the split kernels
(forward and backward alike), every combination a row (default: the dispatched settings,
which may differ by direction; each split row records its ``split_settings``), with the relative error of the
gradients against the reference's beside the output's. Writes ``<op>_kernel_<device>.json`` (the recurrence's keeps
its older name ``recurrence_kernel_<device>.json``), rewritten after every row.
"""

from __future__ import annotations

import argparse

import torch

import fastunitary.functional as F
from fastunitary.kernels import lstm_recurrence as lstm_kernels
from fastunitary.kernels import recurrence as recurrence_kernels

from .common import add_run_arguments, environment, positive_int, time_it, write_result

H100_FP32_FLOPS = 67e12  # non-tensor-core fp32 peak (SXM)


class RecurrenceCase:
    """``recurrence(u, W, bias)`` with a unitary (complex) or orthogonal (real) W."""

    module = recurrence_kernels
    kinds = ("complex", "real")

    def __init__(self, kind: str, T: int, B: int, n: int, device):
        self.complex = kind == "complex"
        dtype = torch.complex64 if self.complex else torch.float32
        X = torch.randn(n, n, dtype=dtype, device=device)
        self.W = F.cayley(X - X.mH).requires_grad_()
        self.u = (torch.randn(T, B, n, dtype=dtype, device=device) * 0.3).requires_grad_()
        self.bias = torch.zeros(n, device=device)
        D = 2 * n if self.complex else n
        self.flops = 2 * B * D * D

    def plan(self, n: int) -> dict:
        return self.module.plan(n, self.complex)

    def tune(self, block_k, warps, precision, stages) -> None:
        """Set the split kernels' BLOCK_K, warps, precision and stages (None: keep)."""
        m = self.module
        if block_k is not None:
            m.SPLIT_BLOCK_K = {**m.SPLIT_BLOCK_K, self.complex: block_k}
        if warps is not None:
            m.SPLIT_WARPS = warps
        if precision is not None:
            m.SPLIT_PRECISION = precision
        if stages is not None:
            m.SPLIT_STAGES = stages

    def inputs(self) -> list[torch.Tensor]:
        return [self.u, self.W]

    def __call__(self, backend: str) -> torch.Tensor:
        return F.recurrence(self.u, self.W, self.bias, backend=backend)


class LSTMCase:
    """``lstm_recurrence(g, W_hh, h0, c0)``; the loss of the backward is on ``h``."""

    module = lstm_kernels
    kinds = ("real",)

    def __init__(self, kind: str, T: int, B: int, n: int, device):
        self.g = torch.randn(T, B, 4 * n, device=device).requires_grad_()
        self.W = (torch.randn(4 * n, n, device=device) / n**0.5).requires_grad_()
        self.h0 = torch.zeros(B, n, device=device)
        self.c0 = torch.zeros(B, n, device=device)
        self.flops = 2 * B * 4 * n * n

    def plan(self, n: int) -> dict:
        return self.module.plan(n)

    def tune(self, block_k, warps, precision, stages) -> None:
        """Set the split kernels' BLOCK_K, warps, precision and stages, both directions
        alike (None: keep)."""
        m = self.module
        if block_k is not None:
            m.SPLIT_BLOCK_K = (block_k, block_k)
        if warps is not None:
            m.SPLIT_WARPS = (warps, warps)
        if precision is not None:
            m.SPLIT_PRECISION = (precision, precision)
        if stages is not None:
            m.SPLIT_STAGES = (stages, stages)

    def inputs(self) -> list[torch.Tensor]:
        return [self.g, self.W]

    def __call__(self, backend: str) -> torch.Tensor:
        return F.lstm_recurrence(self.g, self.W, self.h0, self.c0, backend=backend)[0]


CASES = {"recurrence": RecurrenceCase, "lstm_recurrence": LSTMCase}


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (Frobenius)."""
    return ((a - b).abs().norm() / b.abs().norm()).item()


def outputs_and_gradients(case, backend: str):
    """The op's output and the gradients of its inputs for a fixed output gradient
    (``torch.manual_seed(1)``: the same for every backend)."""
    inputs = case.inputs()
    out = case(backend)
    torch.manual_seed(1)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    return out.detach(), grads


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", nargs="+", choices=list(CASES), default=["recurrence"])
    p.add_argument("--T", type=positive_int, default=1000)
    p.add_argument("--B", type=positive_int, nargs="+", default=[1, 16, 64])
    p.add_argument("--n", type=positive_int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    p.add_argument("--design", nargs="+", choices=["split", "streamed"], default=None,
                   help="large-n designs to time (default: each op's dispatched one)")
    p.add_argument("--block-k", type=positive_int, nargs="+", default=[None],
                   help="split kernels' BLOCK_K values to time (default: the dispatched)")
    p.add_argument("--warps", type=positive_int, nargs="+", default=[None],
                   help="split kernels' warps to time, forward and backward alike")
    p.add_argument("--precision", nargs="+", choices=["ieee", "tf32x3"], default=[None],
                   help="split kernels' tl.dot input precisions to time")
    p.add_argument("--stages", type=positive_int, nargs="+", default=[None],
                   help="split kernels' software-pipeline stages to time")
    p.add_argument("--interpret", action="store_true",
                   help="on CPU, run the triton backend too, through Triton's interpreter "
                        "(with TRITON_INTERPRET=1; tests of this script: no measure of speed)")
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    for op in args.op:
        run_op(op, CASES[op], args)


def run_op(op: str, case_type, args) -> None:
    device = torch.device(args.device)
    on_triton = device.type == "cuda" or args.interpret
    backends = ["triton", "reference"] if on_triton else ["reference"]
    module = case_type.module
    dispatched = module.LARGE_N_DESIGN
    # the split kernels' settings, restored after every tuned row
    settings = {k: getattr(module, k)
                for k in ("SPLIT_BLOCK_K", "SPLIT_WARPS", "SPLIT_PRECISION", "SPLIT_STAGES")}
    tunings = [(bk, w, prec, st) for bk in args.block_k for w in args.warps
               for prec in args.precision for st in args.stages]
    if tunings != [(None,) * 4]:  # the dispatched settings first, beside the tuned ones
        tunings.insert(0, (None,) * 4)
    asked_designs = args.design or [dispatched]
    rows = []

    def variants(case, n: int) -> list[tuple[str, str]]:
        """(backend, design) pairs to time at n: each asked design (a resident n has one
        whatever LARGE_N_DESIGN), then the reference."""
        designs = []
        for asked in asked_designs:
            module.LARGE_N_DESIGN = asked
            design = case.plan(n)["design"]
            if design not in designs:
                designs.append(design)
        module.LARGE_N_DESIGN = dispatched
        triton_rows = [("triton", d, None) for d in designs if d != "split"]
        if "split" in designs:
            triton_rows += [("triton", "split", tuning) for tuning in tunings]
        return ([r for r in triton_rows if "triton" in backends]
                + [("reference", "-", None)])

    def write(complete: bool):
        # rewritten after every row, so that a run stopped by a time cap (ci/gpu.sh) keeps
        # what it measured
        payload = {"op": op, "environment": environment(device), "complete": complete, "rows": rows}
        return write_result("recurrence_kernel" if op == "recurrence" else f"{op}_kernel", payload, args.out)

    try:
        for kind in case_type.kinds:
            for n in args.n:
                for B in args.B:
                    torch.manual_seed(0)
                    case = case_type(kind, args.T, B, n, device)
                    ref, ref_grads = outputs_and_gradients(case, "reference")
                    for backend, design, tuning in variants(case, n):
                        if design != "-":
                            module.LARGE_N_DESIGN = design if design != "resident" else dispatched
                        row = {"op": op, "complex": kind == "complex", "n": n, "B": B, "T": args.T,
                               "backend": backend, "design": design}
                        for name, value in settings.items():
                            setattr(module, name, value)
                        if tuning is not None:
                            case.tune(*tuning)
                        if design == "split":  # the settings of this row, tuned or not
                            p = case.plan(n)
                            row["split_settings"] = {k: p[k] for k in p
                                                     if k not in ("design", "BLOCK_B")}
                        out, grads = outputs_and_gradients(case, backend)
                        err = rel_error(out, ref)
                        row["rel_error_vs_reference"] = err
                        row["grad_rel_error_vs_reference"] = max(
                            rel_error(a, b) for a, b in zip(grads, ref_grads))
                        if not err <= 1e-4:
                            row["status"] = "failed correctness gate"
                            rows.append(row)
                            print(f"{op} {kind} n={n} B={B} {backend}: FAILED ({err:.1e})")
                            write(complete=False)
                            continue

                        def fwd():
                            with torch.no_grad():
                                case(backend)

                        def fwd_bwd():
                            case(backend).abs().sum().backward()

                        tf = time_it(fwd, device, repeats=args.repeats)
                        tb = time_it(fwd_bwd, device, repeats=args.repeats)
                        us = tf["median_s"] / args.T * 1e6
                        row.update({"status": "ok", "forward_s": tf, "forward_backward_s": tb,
                                    "us_per_step_forward": us,
                                    "us_per_step_forward_backward": tb["median_s"] / args.T * 1e6,
                                    "tokens_per_s_forward": B * args.T / tf["median_s"],
                                    "fraction_of_h100_fp32_peak": case.flops / (us * 1e-6) / H100_FP32_FLOPS})
                        rows.append(row)
                        write(complete=False)
                        tuned = ""
                        if design == "split":
                            t = row["split_settings"]
                            tuned = "".join(
                                f" {t[k]}/{t[k + '_backward']}" if t[k] != t[k + "_backward"]
                                else f" {t[k]}"
                                for k in ("BLOCK_K", "num_warps", "PRECISION", "num_stages"))
                        print(f"{op} {kind:7} n={n:5d} B={B:4d} {backend:>9} {row['design']:>8}"
                              f"{tuned}: fwd {us:8.2f} us/step, fwd+bwd "
                              f"{tb['median_s'] * 1e3:9.2f} ms, "
                              f"{row['fraction_of_h100_fp32_peak']:.1e} of peak, "
                              f"errors {err:.1e} / {row['grad_rel_error_vs_reference']:.1e}",
                              flush=True)
    finally:
        module.LARGE_N_DESIGN = dispatched
        for name, value in settings.items():
            setattr(module, name, value)
    path = write(complete=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
