"""What momentum costs: the MomentumRNN family's LSTMs beside the same module with mu = 0,
``torch.nn.LSTM`` and a per-step Python loop (the official code's form).

    python -m bench.momentum [--T 1000] [--B 32] [--hidden 128] [--input 32]

Forward+backward time of one sequence batch for: ``MomentumLSTM(mu=0.6)``, the same with
``mu=0`` (no scan: the plain LSTM path), ``AdamLSTM`` (two scans), ``NesterovLSTM``
(per-step coefficients), ``torch.nn.LSTM`` (oneDNN on CPU, cuDNN on CUDA), and a
per-step Python loop with the same parameters differentiated by autograd (how the
official code runs), and ``MomentumLSTM(mu=0.6)`` under ``torch.compile(fullgraph=True)``,
as it compiles and with ``backend="reference"`` (compiled through ``lstm_recurrence``).
The variants are timed in turn within each repeat, so that the ratios survive a noisy
machine. Writes ``bench/results/momentum_<device>.json``.
"""

from __future__ import annotations

import argparse

import torch

from fastunitary.nn import AdamLSTM, MomentumLSTM, NesterovLSTM

from .common import add_run_arguments, environment, time_interleaved, write_result
from .registry import momentum_lstm_loop


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    add_run_arguments(p, repeats=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.T, args.B, args.input, device=device)
    m, n = args.input, args.hidden
    models = {
        "MomentumLSTM(mu=0.6)": MomentumLSTM(m, n, mu=0.6, step=0.6),
        "MomentumLSTM(mu=0)": MomentumLSTM(m, n, mu=0.0, step=0.6),
        "AdamLSTM": AdamLSTM(m, n, mu=0.6, step=0.6),
        "NesterovLSTM(R=2)": NesterovLSTM(m, n, step=0.6, restart=2),
        "torch.nn.LSTM": torch.nn.LSTM(m, n),
    }
    runs = {name: (lambda mod=mod.to(device): mod(x)[0].sum().backward()) for name, mod in models.items()}
    if not args.no_compile:
        # the same module compiled: on the CPU its layers are the onednn_lstm op, and with
        # backend="reference" the lstm_recurrence op (the compiled route before it)
        compiled_model = models["MomentumLSTM(mu=0.6)"]
        reference_model = MomentumLSTM(m, n, mu=0.6, step=0.6, backend="reference").to(device)
        reference_model.load_state_dict(compiled_model.state_dict())
        for name, mod in (("MomentumLSTM(mu=0.6), compiled", compiled_model),
                          ("MomentumLSTM(mu=0.6), compiled, lstm_recurrence op", reference_model)):
            fn = torch.compile(mod, fullgraph=True)
            runs[name] = lambda fn=fn: fn(x)[0].sum().backward()
    loop_model = models["MomentumLSTM(mu=0.6)"]
    runs["per-step Python loop (mu=0.6)"] = lambda: momentum_lstm_loop(loop_model, x).sum().backward()
    times = time_interleaved(runs, device, repeats=args.repeats)
    for name, t in times.items():
        print(f"{name:>30}: {t['median_s'] * 1e3:9.1f} ms fwd+bwd "
              f"[{t['q20_s'] * 1e3:.1f}, {t['q80_s'] * 1e3:.1f}]", flush=True)
    ref = times["MomentumLSTM(mu=0)"]["median_s"]
    mom = times["MomentumLSTM(mu=0.6)"]["median_s"]
    ratios = {
        "momentum_over_mu0": mom / ref,
        "per_step_loop_over_momentum": times["per-step Python loop (mu=0.6)"]["median_s"] / mom,
        "momentum_over_torch_lstm": mom / times["torch.nn.LSTM"]["median_s"],
    }
    if not args.no_compile:
        ratios["compiled_over_eager"] = times["MomentumLSTM(mu=0.6), compiled"]["median_s"] / mom
        ratios["compiled_lstm_recurrence_over_compiled"] = (
            times["MomentumLSTM(mu=0.6), compiled, lstm_recurrence op"]["median_s"]
            / times["MomentumLSTM(mu=0.6), compiled"]["median_s"])
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    payload = {"environment": environment(device), "config": vars(args), "times": times, "ratios": ratios}
    print(f"wrote {write_result('momentum', payload, args.out)}")


if __name__ == "__main__":
    main()
