"""Forward+backward time of a complex recurrence beside torch.nn.LSTM of equal real state.

    python -m bench.recurrence_vs_lstm [--T 1000] [--B 64] [--n 64] [--input-size 1 64]

ScuRNN with complex state n (2n reals) against ``torch.nn.LSTM(hidden_size=2n)`` (oneDNN on
CPU, cuDNN on CUDA), and against the per-step autograd loop of the same model (what the
official code does), measured in one process on the same inputs. On CUDA ScuRNN runs with
each backend (the fused Triton recurrence and the reference). The timed region is the
whole module call (input projection and Cayley map included) plus ``backward``; each
variant's output is first compared with the reference and a mismatch is reported, not
timed.
"""

from __future__ import annotations

import argparse

import torch

from fastunitary.nn import ScuRNN

from .common import add_run_arguments, environment, positive_int, time_it, write_result
from .registry import cell_loop


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=positive_int, default=1000)
    p.add_argument("--B", type=positive_int, default=64)
    p.add_argument("--n", type=positive_int, default=64, help="complex state size of scuRNN")
    p.add_argument("--input-size", type=positive_int, nargs="+", default=[1, 64])
    p.add_argument("--backends", nargs="+", default=None,
                   help="ScuRNN backends to time (default: auto, plus reference on CUDA)")
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    backends = args.backends or (["auto", "reference"] if device.type == "cuda" else ["auto"])
    for m in args.input_size:
        x = torch.randn(args.T, args.B, m, device=device)
        scurnn = ScuRNN(m, args.n).to(device)
        lstm = torch.nn.LSTM(m, 2 * args.n).to(device)

        def step(f):
            def run():
                f().sum().backward()
            return run

        t_lstm = time_it(step(lambda: lstm(x)[0]), device, repeats=args.repeats)
        t_naive = time_it(step(lambda: cell_loop(scurnn, x)), device,
                          repeats=max(1, args.repeats // 2))
        with torch.no_grad():
            scurnn.backend = "reference"
            expected = scurnn(x)[0]
        for backend in backends:
            scurnn.backend = backend
            row = {
                "T": args.T, "B": args.B, "n_complex": args.n, "lstm_hidden": 2 * args.n,
                "input_size": m, "device": str(device), "backend": backend,
                "lstm_s": t_lstm, "naive_loop_s": t_naive,
            }
            with torch.no_grad():
                err = ((scurnn(x)[0] - expected).norm() / expected.norm()).item()
            row["rel_error_vs_reference"] = err
            if not err <= 1e-4:
                row["status"] = "failed correctness gate"
                rows.append(row)
                print(f"input_size={m:3d} backend={backend}: FAILED correctness gate (rel. error {err:.2e})")
                continue
            t_ours = time_it(step(lambda: scurnn(x)[0]), device, repeats=args.repeats)
            row.update({
                "status": "ok", "scurnn_s": t_ours,
                "ratio_scurnn_to_lstm": t_ours["median_s"] / t_lstm["median_s"],
                "ratio_naive_to_lstm": t_naive["median_s"] / t_lstm["median_s"],
            })
            rows.append(row)
            print(f"input_size={m:3d} {backend:>9}: scuRNN {t_ours['median_s'] * 1e3:8.1f} ms "
                  f"[{t_ours['q20_s'] * 1e3:.1f}, {t_ours['q80_s'] * 1e3:.1f}]   "
                  f"LSTM({2 * args.n}) {t_lstm['median_s'] * 1e3:8.1f} ms   "
                  f"naive loop {t_naive['median_s'] * 1e3:8.1f} ms   "
                  f"scuRNN/LSTM {row['ratio_scurnn_to_lstm']:.2f}   "
                  f"naive/LSTM {row['ratio_naive_to_lstm']:.2f}")
    path = write_result("recurrence_vs_lstm", {"environment": environment(device), "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
