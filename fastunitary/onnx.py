"""ONNX export of fastunitary models, for inference in ONNX Runtime and other runtimes.

``torch.onnx.export`` alone cannot translate a fastunitary model: its ops are custom ops
(``fastunitary::recurrence``, ...) with no ONNX counterpart. :func:`export` does two
things before handing the model to it:

1. Every recurrent matrix ``W`` is computed once, as an eval-mode forward would, and enters
   the graph as a constant (:func:`fastunitary.nn._base.frozen_recurrent_weights`). ONNX
   has no linear solve and no eigenvalue operator, so the Cayley transform and ENRNN's
   normalization could not run in the graph; at inference ``W`` is fixed anyway, and the
   exported model does no ``O(n^3)`` work per call.
2. ``torch.export`` captures the model with each sequence op as one node; each is then
   replaced by its reference written as one ``scan`` higher-order op
   (``reference.recurrence_hop``, ``lstm_hop``, ``linear_scan_hop``, ``sbo_hop``: see
   :func:`decompositions`), which the ONNX exporter writes as one ONNX ``Scan`` node. The
   graph's size does not grow with ``T``, and with dynamic shapes the model takes any
   sequence length and batch size.

Needs the packages ``onnx`` and ``onnxscript`` (``pip install onnx onnxscript``; and
``onnxruntime`` to run the result). Inference only: the exported graph has no backward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from . import reference
from .nn._base import frozen_recurrent_weights


def _recurrence(u, W, bias, h0, activation, is_complex, backend, leak):
    return reference.recurrence_hop(u, W, bias, h0, activation, is_complex, leak)


def _lstm_recurrence(g, W_hh, h0, c0, W_hr, backend):
    return reference.lstm_hop(g, W_hh, h0, c0, W_hr)


def _momentum_scan(a, b, v0, backend):
    return reference.linear_scan_hop(a, b, v0)


def _sbo_recurrence(u, W, h0, m0, mu, eta, steps, method):
    return reference.sbo_hop(u, W, h0, m0, mu, eta, steps, method)


def _onednn_lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
    """oneDNN's layer (``h0``, ``c0`` ``(1, B, n)``) as the LSTM scan on its input term."""
    h, c = reference.lstm_hop(torch.nn.functional.linear(x, w_ih, b_ih + b_hh), w_hh,
                              h0[0], c0[0])
    return h, h[-1:], c[-1:]


def decompositions() -> dict[torch._ops.OpOverload, Callable]:
    """The export table: each sequence op -> its reference as one ``scan``.

    For ``ExportedProgram.run_decompositions`` in a pipeline of your own; :func:`export`
    applies it. ``cayley`` and ``spectral_radius`` have no entry (see the module).
    """
    ops = torch.ops.fastunitary
    return {
        ops.recurrence.default: _recurrence,
        ops.lstm_recurrence.default: _lstm_recurrence,
        ops.momentum_scan.default: _momentum_scan,
        ops.sbo_recurrence.default: _sbo_recurrence,
        ops.onednn_lstm.default: _onednn_lstm,
    }


def _named_dims(dynamic_shapes: Any) -> Any:
    """``dynamic_shapes`` with every string replaced by ``torch.export.Dim`` of that name
    (one object per name, so that equal names are one dimension), as ``torch.onnx.export``
    accepts them; everything else is passed to ``torch.export`` as it is."""
    dims: dict[str, Any] = {}

    def convert(spec):
        if isinstance(spec, str):
            if spec not in dims:
                dims[spec] = torch.export.Dim(spec)
            return dims[spec]
        if isinstance(spec, Mapping):
            return {k: convert(v) for k, v in spec.items()}
        if isinstance(spec, (list, tuple)):
            return type(spec)(convert(v) for v in spec)
        return spec

    return convert(dynamic_shapes)


def export(
    model: nn.Module,
    args: tuple,
    f: str | None = None,
    *,
    kwargs: dict | None = None,
    dynamic_shapes: Any = None,
    **options,
) -> "torch.onnx.ONNXProgram":
    """Export a fastunitary model (or any module using its ops) to ONNX.

    Args:
        model: a module in eval mode (``model.eval()``, every submodule): the export is
            for inference.
        args: example positional inputs, e.g. ``(x,)`` with ``x`` ``(T, B, input_size)``.
        f: path of the ``.onnx`` file to write, or ``None`` to only return the program.
        kwargs: example keyword inputs.
        dynamic_shapes: as for ``torch.export.export``, where a dimension may also be named
            by a string as for ``torch.onnx.export``: ``({0: "T", 1: "B"},)`` lets the
            model take any length and batch size. ``None``: the example's shapes only.
        **options: passed to ``torch.onnx.export`` (``opset_version``, ``input_names``,
            ``output_names``, ``optimize``, ``verbose``, ...).
    Returns:
        The ``torch.onnx.ONNXProgram`` (``.model_proto``, ``.save(path)``).
    Raises:
        ValueError: the model (or a submodule) is in training mode.
        ImportError: ``onnx`` or ``onnxscript`` is missing.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if any(m.training for m in model.modules()):
        raise ValueError("export is for inference: call model.eval() first (dropout, the "
                         "weight cache and the momentum routes all follow the mode)")
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError as error:
            raise ImportError(f"ONNX export needs the package {package!r}: "
                              "pip install onnx onnxscript") from error
    args = args if isinstance(args, tuple) else (args,)
    with frozen_recurrent_weights(model):
        program = torch.export.export(model, args, kwargs=kwargs,
                                      dynamic_shapes=_named_dims(dynamic_shapes), strict=False)
    program = program.run_decompositions(decompositions())
    options.setdefault("verbose", False)
    return torch.onnx.export(program, args, f, kwargs=kwargs, dynamo=True, **options)
