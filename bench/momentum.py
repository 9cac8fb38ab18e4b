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

Correctness gate (GPU.md): before timing, each variant's output is compared with an
independent computation of the same model on the same input (the modules, compiled or
not, with the per-step loop of their parameters; ``torch.nn.LSTM`` with its own loop; the
loop with the module's ``backend="reference"``). A variant beyond the suite's float32
tolerance is recorded (``status``, ``rel_error``) and not timed; ratios that need it are
``null``.
"""

from __future__ import annotations

import argparse

import torch

from fastunitary.nn import AdamLSTM, MomentumLSTM, NesterovLSTM

from .common import add_run_arguments, environment, positive_int, time_interleaved, write_result
from .registry import momentum_lstm_loop, torch_lstm_loop
from .suite import TOLERANCE, relative_error

#: relative error (Frobenius, whole output) a variant may have against its reference: the
#: suite's float32 tolerance (cuDNN's LSTM may run TF32 on CUDA)
GATE = TOLERANCE["fp32"]


def gate(outputs: dict, references: dict) -> dict[str, float]:
    """``{name: relative error}`` of each variant's output against its reference.

    ``outputs``/``references``: ``{name: fn}``, each ``fn()`` a ``(T, B, hidden)`` output.
    Run with autograd on (outputs detached), so that a compiled variant compiles here the
    graph its timing runs.
    """
    errors = {}
    for name, output in outputs.items():
        with torch.no_grad():
            want = references[name]().float()
        errors[name] = relative_error(output().detach(), want)
    return errors


def _ratio(times: dict, num: str, den: str) -> float | None:
    """Median of ``num`` over median of ``den``; ``None`` where one was not timed."""
    if num not in times or den not in times:
        return None
    return times[num]["median_s"] / times[den]["median_s"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=positive_int, default=1000)
    p.add_argument("--B", type=positive_int, default=32)
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--input", type=positive_int, default=32)
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
    models = {name: mod.to(device) for name, mod in models.items()}
    # each variant's output, and an independent computation of it (the gate's reference)
    outputs = {name: (lambda mod=mod: mod(x)[0]) for name, mod in models.items()}
    references = {name: (lambda mod=mod: momentum_lstm_loop(mod, x)) for name, mod in models.items()}
    references["torch.nn.LSTM"] = lambda: torch_lstm_loop(models["torch.nn.LSTM"], x)
    # the same module with backend="reference": the lstm_recurrence op on every device
    momentum_model = models["MomentumLSTM(mu=0.6)"]
    reference_model = MomentumLSTM(m, n, mu=0.6, step=0.6, backend="reference").to(device)
    reference_model.load_state_dict(momentum_model.state_dict())
    if not args.no_compile:
        # the same module compiled: on the CPU its layers are the onednn_lstm op, and with
        # backend="reference" the lstm_recurrence op (the compiled route before it)
        for name, mod in (("MomentumLSTM(mu=0.6), compiled", momentum_model),
                          ("MomentumLSTM(mu=0.6), compiled, lstm_recurrence op", reference_model)):
            outputs[name] = lambda fn=torch.compile(mod, fullgraph=True): fn(x)[0]
            references[name] = references["MomentumLSTM(mu=0.6)"]
    loop = "per-step Python loop (mu=0.6)"
    outputs[loop] = lambda: momentum_lstm_loop(momentum_model, x)
    references[loop] = lambda: reference_model(x)[0]
    errors = gate(outputs, references)
    status = {k: "ok" if e <= GATE else "failed correctness gate" for k, e in errors.items()}
    for name, e in errors.items():
        if status[name] != "ok":
            print(f"{name:>30}: FAILED correctness gate (rel. error {e:.2e} > {GATE:g}): not timed")
    runs = {name: (lambda out=out: out().sum().backward())
            for name, out in outputs.items() if status[name] == "ok"}
    times = time_interleaved(runs, device, repeats=args.repeats) if runs else {}
    for name, t in times.items():
        print(f"{name:>30}: {t['median_s'] * 1e3:9.1f} ms fwd+bwd "
              f"[{t['q20_s'] * 1e3:.1f}, {t['q80_s'] * 1e3:.1f}]", flush=True)
    mom, compiled = "MomentumLSTM(mu=0.6)", "MomentumLSTM(mu=0.6), compiled"
    ratios = {
        "momentum_over_mu0": _ratio(times, mom, "MomentumLSTM(mu=0)"),
        "per_step_loop_over_momentum": _ratio(times, loop, mom),
        "momentum_over_torch_lstm": _ratio(times, mom, "torch.nn.LSTM"),
    }
    if not args.no_compile:
        ratios["compiled_over_eager"] = _ratio(times, compiled, mom)
        ratios["compiled_lstm_recurrence_over_compiled"] = _ratio(
            times, "MomentumLSTM(mu=0.6), compiled, lstm_recurrence op", compiled)
    for k, v in ratios.items():
        print(f"{k}: {'-' if v is None else f'{v:.2f}'}")
    payload = {"environment": environment(device), "config": vars(args), "tolerance": GATE,
               "rel_error": errors, "status": status, "times": times, "ratios": ratios}
    print(f"wrote {write_result('momentum', payload, args.out)}")


if __name__ == "__main__":
    main()
