"""Time of a PackedSequence batch against the same batch padded, per model.

    python -m bench.packed [--T 200] [--B 32] [--hidden 128] [--models ...]

Sequence lengths are drawn uniformly in [T/2, T] (one of them T). For each model, the
padded tensor and the PackedSequence of the same batch are timed interleaved, forward
only (under ``torch.no_grad``) and forward+backward; ``torch.nn.LSTM`` is timed the same
way for comparison. Before timing, the packed output is checked against the padded one
at every valid step (the padding comes after each sequence, so they must agree). The JSON
is rewritten after every model (``"complete": false`` until the end), so a run stopped by
a time cap keeps what it measured.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastunitary.nn as fnn

from .common import (MODES, add_model_arguments, add_run_arguments, environment, positive_int,
                     time_interleaved, timed_modes, write_result)

MODELS = {
    "lstm": lambda m, n: torch.nn.LSTM(m, n),
    "scornn": lambda m, n: fnn.ScoRNN(m, n),
    "scurnn": lambda m, n: fnn.ScuRNN(m, n // 2),
    "momentumrnn": lambda m, n: fnn.MomentumRNN(m, n, mu=0.6, step=0.6),
    "momentumlstm": lambda m, n: fnn.MomentumLSTM(m, n, mu=0.6, step=0.6),
}


def _output(out) -> torch.Tensor:
    return out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--B", type=positive_int, default=32)
    add_model_arguments(p, MODELS, T=200, hidden=128, input_size=64)
    add_run_arguments(p, repeats=7)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.T, args.B, args.input_size, device=device)
    lengths = torch.randint(args.T // 2, args.T + 1, (args.B,))
    lengths[0] = args.T
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    rows = []
    payload = {"environment": environment(device), "lengths": lengths.tolist(), "rows": rows}
    for name in args.models:
        model = MODELS[name](args.input_size, args.hidden).to(device)
        with torch.no_grad():
            got, _ = pad_packed_sequence(model(packed)[0])
            want = model(x)[0]
        valid = torch.arange(args.T).unsqueeze(1) < lengths.unsqueeze(0)
        err = ((got - want)[valid].abs().max() / want[valid].abs().max()).item()
        row = {"model": name, "T": args.T, "B": args.B, "hidden": args.hidden,
               "input_size": args.input_size, "rel_error_packed_vs_padded": err}
        if not err <= 1e-4:
            row["status"] = "failed correctness gate"
            rows.append(row)
            print(f"{name}: FAILED correctness gate (rel. error {err:.2e})")
            write_result("packed", {**payload, "complete": False}, args.out)
            continue

        runs = {"padded": timed_modes(model, x, _output),
                "packed": timed_modes(model, packed, _output)}
        for mode in MODES:
            t = time_interleaved({k: r[mode] for k, r in runs.items()}, device,
                                 repeats=args.repeats)
            ratio = t["packed"]["median_s"] / t["padded"]["median_s"]
            rows.append({**row, "status": "ok", "mode": mode, "padded_s": t["padded"],
                         "packed_s": t["packed"], "ratio_packed_to_padded": ratio})
            print(f"{name:>13} {mode:>16}: padded {t['padded']['median_s'] * 1e3:7.1f} ms   "
                  f"packed {t['packed']['median_s'] * 1e3:7.1f} ms   packed/padded {ratio:.2f}")
        write_result("packed", {**payload, "complete": False}, args.out)
    path = write_result("packed", {**payload, "complete": True}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
