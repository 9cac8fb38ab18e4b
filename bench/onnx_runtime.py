"""Inference in ONNX Runtime (``fastunitary.onnx.export``) beside the same model in PyTorch.

    python -m bench.onnx_runtime [--T 256] [--B 16] [--hidden 128] [--models ...]

For each model, in eval mode: the module's forward under ``torch.no_grad()`` and ONNX
Runtime's CPU session on the exported model (each recurrence one ONNX ``Scan``), timed
interleaved on the same input. For scale, ``torch.nn.LSTM`` of the same width both ways
(``torch.onnx.export``, ONNX's own ``LSTM`` operator). Both runtimes use their default CPU
threads. Writes ``bench/results/onnx_runtime_cpu.json``.

Before timing, both float32 outputs are compared with a float64 copy of the module: ONNX
Runtime's relative error may be at most ``GATE`` times PyTorch's own (or below 1e-5). Over
a few hundred steps float32 rounding grows by itself (an LSTM at T = 256 drifts ~1e-4 from
float64 on either runtime), so a fixed tolerance against the float32 module would gate the
length, not the export. A model that fails is reported and not timed.
"""

from __future__ import annotations

import argparse
import copy
import logging
import warnings

import torch

from .common import (add_model_arguments, add_run_arguments, environment, positive_int,
                     time_interleaved, write_result)
from .per_sample import MODELS

BASELINE = "torch.nn.LSTM"
GATE = 4.0


def _relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got.double() - exact).abs().max() / exact.abs().max()).item()


def _session(program):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # not the exporter's unused-initializer warnings
    return onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def _export(name: str, model, x):
    import fastunitary.onnx

    if name == BASELINE:  # PyTorch's own exporter: ONNX's LSTM operator
        return torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    return fastunitary.onnx.export(model, (x,))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--B", type=positive_int, default=16)
    add_model_arguments(p, MODELS, T=256, hidden=128, input_size=32)
    add_run_arguments(p, repeats=7)
    args = p.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("ONNX Runtime is timed on the CPU here: pass --device cpu")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    warnings.filterwarnings("ignore", category=FutureWarning)
    device = torch.device("cpu")
    torch.manual_seed(0)
    x = torch.randn(args.T, args.B, args.input_size)
    builders = {**{k: MODELS[k] for k in args.models},
                BASELINE: lambda m, n: torch.nn.LSTM(m, n)}
    payload = {"environment": environment(device), "config": vars(args), "models": {}}
    for name, build in builders.items():
        model = build(args.input_size, args.hidden).eval()
        session = _session(_export(name, model, x))
        feed = {session.get_inputs()[0].name: x.numpy()}
        with torch.no_grad():
            exact = copy.deepcopy(model).double()(x.double())[0]
            errors = {"pytorch": _relative_error(model(x)[0], exact),
                      "onnxruntime": _relative_error(
                          torch.from_numpy(session.run(None, feed)[0]), exact)}
        entry = {"rel_error_vs_float64": errors}
        if not errors["onnxruntime"] <= max(GATE * errors["pytorch"], 1e-5):
            print(f"{name}: FAILED correctness gate (rel. error vs float64: "
                  f"{errors['onnxruntime']:.1e}, PyTorch's {errors['pytorch']:.1e}): not timed")
            payload["models"][name] = {**entry, "status": "failed correctness gate"}
            continue

        def pytorch(model=model):
            with torch.no_grad():
                model(x)

        times = time_interleaved({"pytorch": pytorch,
                                  "onnxruntime": lambda s=session: s.run(None, feed)},
                                 device, repeats=args.repeats)
        speedup = times["pytorch"]["median_s"] / times["onnxruntime"]["median_s"]
        payload["models"][name] = {**entry, "status": "ok", "times": times,
                                   "onnxruntime_speedup": speedup}
        print(f"{name:>14}: PyTorch {times['pytorch']['median_s'] * 1e3:7.1f} ms, "
              f"ONNX Runtime {times['onnxruntime']['median_s'] * 1e3:7.1f} ms "
              f"({speedup:.2f}x); rel. error vs float64 {errors['pytorch']:.1e} (PyTorch), "
              f"{errors['onnxruntime']:.1e} (ONNX Runtime)")
    print(f"wrote {write_result('onnx_runtime', payload, args.out)}")


if __name__ == "__main__":
    main()
