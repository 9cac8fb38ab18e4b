"""Compile time of ``torch.compile(fullgraph=True)`` for ScuRNN at two sequence lengths.

    python -m bench.compile_time [--T 64 1024]

Each length is compiled in a fresh Python process with Inductor's on-disk caches disabled
(so neither length profits from the other), and timed from the first call to the end of
its first forward+backward, minus the eager time of the same call: what compilation adds. The recurrence is one registered op, so the graph
does not grow with T and neither should the compile time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from fastunitary.nn import ScuRNN

from .common import environment, positive_int, write_result


def measure(T: int, B: int, n: int) -> dict:
    torch.manual_seed(0)
    rnn = ScuRNN(8, n, num_layers=2)
    x = torch.randn(T, B, 8)
    rnn(x)[0].sum().backward()  # warm up the process, then time one eager call
    t = time.perf_counter()
    rnn(x)[0].sum().backward()
    eager = time.perf_counter() - t
    compiled = torch.compile(rnn, fullgraph=True)
    t = time.perf_counter()
    compiled(x)[0].sum().backward()
    first = time.perf_counter() - t
    return {"T": T, "B": B, "n": n, "layers": 2, "first_call_s": first,
            "eager_call_s": eager, "compile_s": first - eager}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=positive_int, nargs="+", default=[64, 1024])
    p.add_argument("--B", type=positive_int, default=16)
    p.add_argument("--n", type=positive_int, default=64)
    p.add_argument("--out", default=None)
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:  # child process: one length, result as JSON on stdout
        print(json.dumps(measure(args.T[0], args.B, args.n)))
        return
    rows = []
    env = dict(os.environ, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")
    for T in args.T:
        cmd = [sys.executable, "-m", "bench.compile_time", "--single", "--T", str(T),
               "--B", str(args.B), "--n", str(args.n)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"T={T:5d}: first compiled call {row['first_call_s']:6.1f} s, eager call "
              f"{row['eager_call_s']:5.2f} s, compile time ~ {row['compile_s']:5.1f} s")
    path = write_result("compile_time", {"environment": environment(), "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
