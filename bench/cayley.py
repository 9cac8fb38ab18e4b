"""The Cayley map: fastunitary's kernels against the PyTorch ways of computing it.

    python -m bench.cayley [--n 64 128 256 512 1024 2048] [--batch 1 8] [--complex]

Variants, each on a batch of skew(-Hermitian) A of spectral norm 1 (float32/complex64):

- ``fastunitary-triton`` (CUDA): blocked Gauss-Jordan in float64 on the GPU, closed-form
  backward from the saved inverse;
- ``fastunitary-reference``: ``torch.linalg.inv`` in float64, same closed-form backward;
- ``torch.linalg.solve``: ``solve(I + A, I - A)`` in the input precision, autograd backward;
- ``torch.linalg.inv``: ``inv(I + A) @ (I - A)`` in the input precision, autograd backward;
- ``orthogonal(cayley)``: ``torch.nn.utils.parametrizations.orthogonal`` with
  ``orthogonal_map="cayley"`` (reads the weight; batch 1 only: it parametrizes one matrix).

Modes: forward, and forward+backward of ``(W * G).sum()``. Also records each variant's
relative error against the float64 result and ``|W^H W - I|``. Timing per GPU.md (CUDA
events through synchronized host clocks, medians and 20/80 quantiles).
"""

from __future__ import annotations

import argparse

import torch

import fastunitary.functional as F

from .common import add_run_arguments, environment, positive_int, time_it, write_result


def _skew(n, batch, complex_, device):
    dt = torch.complex64 if complex_ else torch.float32
    X = torch.randn(batch, n, n, dtype=dt, device=device)
    A = X - X.mH
    return A / torch.linalg.matrix_norm(A, 2, keepdim=True)


def variants(device: torch.device, batch: int, complex_: bool):
    eye = lambda A: torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)  # noqa: E731
    out = {}
    if device.type == "cuda":
        out["fastunitary-triton"] = lambda A: F.cayley(A, backend="triton")
    out["fastunitary-reference"] = lambda A: F.cayley(A, backend="reference")
    out["torch.linalg.solve"] = lambda A: torch.linalg.solve(eye(A) + A, eye(A) - A)
    out["torch.linalg.inv"] = lambda A: torch.linalg.inv(eye(A) + A) @ (eye(A) - A)
    if batch == 1:
        from torch.nn.utils.parametrizations import orthogonal

        def param(A):
            lin = torch.nn.Linear(A.shape[-1], A.shape[-1], bias=False, dtype=A.dtype,
                                  device=A.device)
            orthogonal(lin, orthogonal_map="cayley", use_trivialization=False)
            with torch.no_grad():  # set the underlying free matrix so that A is the same
                lin.parametrizations.weight.original.copy_(torch.tril(A[0], -1))
            return lambda: lin.weight.unsqueeze(0)

        out["orthogonal(cayley)"] = param
    return out


def _error_text(row: dict) -> str:
    """The row's error against float64, or "n/a" for a variant whose A means another W."""
    err = row.get("rel_error_vs_float64")
    return "n/a" if err is None else f"{err:.1e}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=positive_int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1, 8])
    p.add_argument("--complex", action="store_true", help="complex A (scuRNN) instead of real")
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for batch in args.batch:
        for n in args.n:
            torch.manual_seed(0)
            A = _skew(n, batch, args.complex, device)
            wide = torch.complex128 if args.complex else torch.float64
            W64 = F.cayley(A.to(wide), backend="reference")
            G = torch.randn_like(A)
            for name, fn in variants(device, batch, args.complex).items():
                if name == "orthogonal(cayley)":
                    get = fn(A)  # builds the module once; timing reads its weight
                    run = lambda get=get: get()  # noqa: E731
                    a = None
                else:
                    a = A.clone().requires_grad_()
                    run = lambda fn=fn, a=a: fn(a)  # noqa: E731
                with torch.no_grad():
                    W = run()
                row = {"variant": name, "n": n, "batch": batch, "complex": args.complex,
                       "device": str(device)}
                if name != "orthogonal(cayley)":  # its A is parametrized differently
                    row["rel_error_vs_float64"] = ((W.to(wide) - W64).norm() / W64.norm()).item()
                eye = torch.eye(n, dtype=W.dtype, device=device)
                row["unitarity_error"] = (W.mH @ W - eye).abs().max().item()

                def fwd_bwd(run=run):
                    (run() * G).real.sum().backward()

                def fwd(run=run):
                    with torch.no_grad():
                        run()

                row["forward_s"] = time_it(fwd, device, repeats=args.repeats)
                row["forward_backward_s"] = time_it(fwd_bwd, device, repeats=args.repeats)
                rows.append(row)
                print(f"batch={batch} n={n:5d} {name:>22}: fwd {row['forward_s']['median_s'] * 1e3:9.3f} ms"
                      f"  fwd+bwd {row['forward_backward_s']['median_s'] * 1e3:9.3f} ms"
                      f"  err {_error_text(row)}"
                      f"  |W^H W - I| {row['unitarity_error']:.1e}", flush=True)
    name = "cayley_complex" if args.complex else "cayley_real"
    path = write_result(name, {"environment": environment(device), "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
