"""ONNX export of fastunitary models, for inference in ONNX Runtime and other runtimes.

``torch.onnx.export`` alone cannot translate a fastunitary model: its ops are custom ops
(``fastunitary::recurrence``, ...) with no ONNX counterpart. :func:`export` does two
things before handing the model to it:

1. Every recurrent matrix ``W`` is computed once, as an eval-mode forward would (after one
   eager call on the example, which runs the model's hooks), and enters
   the graph as a constant (:func:`fastunitary.nn._base.frozen_recurrent_weights`). ONNX
   has no linear solve and no eigenvalue operator, so the Cayley transform and ENRNN's
   normalization could not run in the graph; at inference ``W`` is fixed anyway, and the
   exported model does no ``O(n^3)`` work per call. A model of the user's own that calls
   ``F.cayley`` or ``F.spectral_radius`` (``spectral_normalize``) on its parameters gets
   the same: each such call is evaluated on the parameters' values and replaced by its
   result (:func:`fold_weight_ops`).
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

import copy
import dataclasses
import operator
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


# The ops that ONNX cannot express (a linear solve, an eigendecomposition). They are
# evaluated at export where their inputs are the model's weights, and refused otherwise.
_FOLDED_OPS = ("cayley", "spectral_radius")

# Inputs of an exported program that hold the model's state, not a call's data.
_STATE_KINDS = ("PARAMETER", "BUFFER", "CONSTANT_TENSOR")


def _state_values(program: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Placeholder name -> value, for each parameter, buffer and lifted constant."""
    values = {}
    for spec in program.graph_signature.input_specs:
        if spec.kind.name in _STATE_KINDS:
            source = program.state_dict if spec.target in program.state_dict else program.constants
            values[spec.arg.name] = source[spec.target]
    return values


def _renamed(spec, names: dict[str, str]):
    """An input or output spec of an exported program whose argument follows ``names``."""
    name = getattr(spec.arg, "name", None)
    if name not in names or names[name] == name:
        return spec
    return dataclasses.replace(spec, arg=dataclasses.replace(spec.arg, name=names[name]))


def _evaluate(targets: list[torch.fx.Node], known: dict[str, Any],
              root: nn.Module) -> dict[str, Any]:
    """The values of ``targets`` and their ancestors computed from ``known`` (placeholder
    name -> value), in graph order; a node that depends on anything else (a model input)
    gets no value."""
    ancestors, stack = set(), list(targets)
    while stack:
        node = stack.pop()
        if node not in ancestors:
            ancestors.add(node)
            stack.extend(node.all_input_nodes)
    values = dict(known)
    for node in next(iter(targets)).graph.nodes:
        if node not in ancestors or node.name in values:
            continue
        if node.op == "get_attr":
            value = root
            for part in node.target.split("."):
                value = getattr(value, part)
            values[node.name] = value
        elif node.op == "call_function" and all(n.name in values for n in node.all_input_nodes):
            def value_of(arg):
                return values[arg.name]

            values[node.name] = node.target(*torch.fx.node.map_arg(node.args, value_of),
                                            **torch.fx.node.map_arg(node.kwargs, value_of))
    return values


def fold_weight_ops(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with every ``cayley`` and ``spectral_radius`` call computed and stored
    as a constant: the form in which ONNX can hold them.

    Each call whose inputs derive from parameters, buffers and constants alone (a ``W``
    built from weights, as in a cell of your own) is evaluated once on their values,
    without gradients, and its outputs enter the program as lifted constants; what only
    fed it is dropped.

    Raises:
        ValueError: a call's input depends on the model's inputs (a ``W`` made from the
            data, e.g. by a hypernetwork): ONNX has no linear solve or eigenvalue
            operator to compute it in the graph.
    """
    from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

    folded = [getattr(torch.ops.fastunitary, name).default for name in _FOLDED_OPS]
    if not any(node.target in folded for node in program.graph.nodes):
        return program
    graph_module = copy.deepcopy(program.graph_module)
    graph = graph_module.graph
    # The copy may rename nodes (an input named ``input`` becomes ``input_1``: fx keeps
    # builtins' names free); the signature must follow.
    renamed = {old.name: new.name for old, new in zip(program.graph.nodes, graph.nodes)}
    calls = [node for node in graph.nodes if node.op == "call_function" and node.target in folded]
    with torch.no_grad():
        values = _evaluate(calls, _state_values(program), graph_module)
    specs = [_renamed(spec, renamed) for spec in program.graph_signature.input_specs]
    constants = dict(program.constants)
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    first_user_input = next((i for i, spec in enumerate(specs)
                             if spec.kind == InputKind.USER_INPUT), len(specs))
    anchor = (placeholders[first_user_input] if first_user_input < len(placeholders)
              else next(n for n in graph.nodes if n.op != "placeholder"))
    taken = set(program.state_dict) | set(constants) | {node.name for node in graph.nodes}

    for node in calls:
        value = values.get(node.name)
        if value is None:
            raise ValueError(
                f"fastunitary.onnx.export: {node.target.name()} is applied to a tensor that "
                "depends on the model's inputs (a matrix made from the data). ONNX has no "
                "linear solve or eigenvalue operator to compute it in the graph; only one "
                "computed from parameters and buffers can be exported (as a constant).")
        for user in list(node.users):
            if user.target is not operator.getitem:
                raise ValueError(f"fastunitary.onnx.export: unexpected use of "
                                 f"{node.target.name()}'s outputs: {user.format_node()}")
            index = 0
            while f"folded_{node.name}_{user.args[1]}_{index}" in taken:
                index += 1
            name = f"folded_{node.name}_{user.args[1]}_{index}"
            taken.add(name)
            constants[name] = value[user.args[1]].detach().clone()
            # Lifted constants precede the user's inputs, in the graph as in the signature.
            with graph.inserting_before(anchor):
                constant = graph.placeholder(name)
            constant.meta.update(user.meta)
            user.replace_all_uses_with(constant)
            specs.insert(first_user_input, InputSpec(InputKind.CONSTANT_TENSOR,
                                                     TensorArgument(constant.name), name))
            first_user_input += 1
            graph.erase_node(user)
    graph.eliminate_dead_code()
    # A weight that only fed a folded op is no longer an input of the program.
    for node in [n for n in graph.nodes if n.op == "placeholder" and not n.users]:
        spec = next(s for s in specs if s.arg.name == node.name)
        if spec.kind.name in _STATE_KINDS:
            specs.remove(spec)
            graph.erase_node(node)
    state_dict = {k: v for k, v in program.state_dict.items()
                  if any(s.target == k for s in specs)}
    constants = {k: v for k, v in constants.items() if any(s.target == k for s in specs)}
    graph_module.recompile()
    signature = type(program.graph_signature)(
        specs, [_renamed(spec, renamed) for spec in program.graph_signature.output_specs])
    return torch.export.ExportedProgram(
        root=graph_module, graph=graph, graph_signature=signature, state_dict=state_dict,
        range_constraints=program.range_constraints,
        module_call_graph=program.module_call_graph, example_inputs=program.example_inputs,
        constants=constants)


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
        ValueError: the model (or a submodule) is in training mode, or it applies
            ``cayley`` or ``spectral_radius`` to a matrix made from its inputs
            (:func:`fold_weight_ops`).
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
    # Hook-based reparametrizations (pruning, spectral_norm, the old weight_norm) refresh a
    # cell's W sources in a forward pre-hook; after an optimizer step they still hold the
    # last call's values, and W would be frozen from those (20% off with spectral_norm).
    # One eager call runs every hook first (eval mode: nothing else moves).
    with torch.no_grad():
        model(*args, **(kwargs or {}))
    with frozen_recurrent_weights(model):
        program = torch.export.export(model, args, kwargs=kwargs,
                                      dynamic_shapes=_named_dims(dynamic_shapes), strict=False)
    program = fold_weight_ops(program).run_decompositions(decompositions())
    options.setdefault("verbose", False)
    # the original names again: torch.onnx.export renames the program's symbolic axes
    # (s31, s81) after the strings of dynamic_shapes, as for a module it exports itself
    return torch.onnx.export(program, args, f, kwargs=kwargs, dynamo=True,
                             dynamic_shapes=dynamic_shapes, **options)
