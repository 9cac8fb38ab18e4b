"""How a registered op reaches its implementation.

Each op ``X`` is a pair of ``torch.library`` custom ops, ``fastunitary::X`` and
``fastunitary::X_backward``, whose implementations receive the resolved backend name as
an explicit argument (the route DESIGN.md found to compile with ``fullgraph=True``, also
under ``TRITON_INTERPRET=1``). The reference implementation lives in
``fastunitary.reference``; the Triton one in the module ``fastunitary.kernels.X``, which
provides ``forward`` and ``backward`` with the same arguments as the two custom ops.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch


def kernel_module(op: str) -> ModuleType:
    """The Triton implementation of ``op`` (exists when ``resolve_backend`` chose it)."""
    return importlib.import_module(f"fastunitary.kernels.{op}")


def autocast_off(t: torch.Tensor):
    """Context in which an op implementation runs: autocast off on ``t``'s device.

    A custom op's body runs below the autocast dispatch key only for the op call itself;
    the torch functions it calls would otherwise be autocast again (a backward invoked
    inside an autocast region would compute its products in bfloat16). The ops manage
    their own precision, so autocast stays out of them.
    """
    return torch.autocast(device_type=t.device.type, enabled=False)
