"""One loop over time as a single ``scan`` higher-order op: the form that ``torch.export``
captures as one node whatever ``T`` (and the ONNX exporter writes as one ``Scan``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def scan_over_time(
    step: Callable[..., list[torch.Tensor]],
    carry: Sequence[torch.Tensor],
    xs: Sequence[torch.Tensor],
    constants: Sequence[torch.Tensor] = (),
) -> list[torch.Tensor]:
    """``step(*carry, *x_t, *constants) -> [*carry, *y_t]`` for ``t`` over dim 0 of ``xs``.

    Returns ``[*carry_T, *ys]``, each ``ys`` stacked over time. ``step`` must not mutate
    its inputs, nor return an input or the same tensor twice (clone it). Tensors that
    ``step`` reads beside the carry and the step's inputs go in ``constants``, not in a
    closure, so that a trace sees them as inputs of the loop.

    The op is called directly rather than through ``torch._higher_order_ops.scan.scan``:
    that wrapper compiles the loop with Dynamo, and in torch 2.13 a later
    ``ExportedProgram.run_decompositions`` in the same process got the compiled body of a
    different scan from it ("Node.meta arg3_1 is missing val field").
    """
    from torch._higher_order_ops.scan import scan_op  # private: imported on use only

    return scan_op(step, list(carry), list(xs), additional_inputs=tuple(constants))
