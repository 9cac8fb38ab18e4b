"""Backend selection: ``"auto"``, ``"reference"`` or ``"triton"`` for every op.

An op ``X`` has a Triton implementation exactly when the module ``fastunitary.kernels.X``
exists (the layout of DESIGN.md); no list to keep in sync. ``"auto"`` picks Triton for
CUDA tensors when that kernel exists and the reference otherwise. ``"triton"`` forces the
kernels and raises :class:`BackendUnavailableError` with the reason when they cannot run.
With ``TRITON_INTERPRET=1`` the kernels also accept CPU tensors (Triton's interpreter),
which is how the test suite checks kernels on machines without a GPU.

The helpers are cached or read only the environment, so ``torch.compile`` traces them
without graph breaks.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

BACKENDS = ("auto", "reference", "triton")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this op on these inputs."""


def triton_interpret() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=None)
def has_kernel(op: str) -> bool:
    """True when ``fastunitary.kernels.<op>`` exists."""
    return importlib.util.find_spec(f"fastunitary.kernels.{op}") is not None


def check_backend_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve_backend(op: str, backend: str, device: torch.device) -> str:
    """Return ``"reference"`` or ``"triton"`` for running ``op`` on ``device``.

    Raises ``ValueError`` for an unknown name and :class:`BackendUnavailableError` when
    ``backend="triton"`` is asked for but cannot run.
    """
    check_backend_name(backend)
    if backend == "reference":
        return "reference"
    if backend == "auto":
        if device.type == "cuda" and triton_importable() and has_kernel(op):
            return "triton"
        return "reference"
    # backend == "triton": explain precisely what is missing.
    if not has_kernel(op):
        raise BackendUnavailableError(
            f"backend='triton' is not available yet for fastunitary op '{op}': its Triton "
            f"kernel has not landed. Use backend='reference' (or 'auto')."
        )
    if not triton_importable():
        raise BackendUnavailableError(
            f"backend='triton' for op '{op}' needs the triton package "
            f"(pip install triton; Linux only). Use backend='reference' (or 'auto')."
        )
    if device.type != "cuda" and not triton_interpret():
        raise BackendUnavailableError(
            f"backend='triton' for op '{op}' needs CUDA tensors, got tensors on {device}. "
            f"Set TRITON_INTERPRET=1 to run the kernels on CPU tensors (slow; for tests)."
        )
    return "triton"
