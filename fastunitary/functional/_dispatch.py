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


def kernel_module(op: str) -> ModuleType:
    """The Triton implementation of ``op`` (exists when ``resolve_backend`` chose it)."""
    return importlib.import_module(f"fastunitary.kernels.{op}")
