"""Float32 matmul precision for host-side products that need true float32, and an epsilon
that survives export (imports only torch, so that the reference implementations, the
modules and the kernels' host code can share it)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def ieee_float32_matmul():
    """IEEE float32 matmuls while the block runs, whatever the process asked for.

    TF32 or bf16 float32 matmuls (``set_float32_matmul_precision("high")``, or the
    per-backend ``fp32_precision`` API) carry ~1e-3 relative error: too much for the
    spectral radius' powers route, and for a kernel's backward that recomputes the
    pre-activations its forward computed in true float32. The two APIs refuse to be mixed,
    so the one the process uses is the one restored. (A process-wide setting: not
    thread-safe, like every use of it.)"""
    try:
        previous = torch.get_float32_matmul_precision()
    except RuntimeError:  # the process uses the per-backend fp32_precision API
        backends = [b.matmul for b in (torch.backends.cuda, torch.backends.mkldnn)]
        saved = [b.fp32_precision for b in backends]
        for b in backends:
            b.fp32_precision = "ieee"
        try:
            yield
        finally:
            for b, value in zip(backends, saved):
                b.fp32_precision = value
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def plus_epsilon(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x + eps``, with ``eps`` a one-element tensor of ``x``'s dtype (``x`` has at least
    one dimension), not a Python scalar.

    Exported to ONNX, ``x + c`` with a scalar ``|c| < 1e-8`` is rewritten to ``x`` by
    onnxscript's optimizer (0.7, the no-op rule of ``torch.onnx.export(optimize=True)``):
    the epsilon that keeps a ``0 / sqrt(0)`` out would vanish, and a zero input (padding,
    a zero bias) give NaN in ONNX Runtime. A tensor constant is left alone.
    """
    return x + x.new_full((1,), eps)
