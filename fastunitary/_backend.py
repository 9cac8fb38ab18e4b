"""Backend selection: ``"auto"``, ``"reference"`` or ``"triton"`` for every op.

An op ``X`` has a Triton implementation exactly when the module ``fastunitary.kernels.X``
exists (the layout of DESIGN.md); no list to keep in sync. ``"auto"`` picks Triton for
CUDA tensors when that kernel exists and the reference otherwise. ``"triton"`` forces the
kernels and raises :class:`BackendUnavailableError` with the reason when they cannot run.
With ``TRITON_INTERPRET=1`` the kernels also accept CPU tensors (Triton's interpreter),
which is how the test suite checks kernels on machines without a GPU.

What exists is found once at import (which kernel modules, whether triton is installed;
neither imports triton), so ``torch.compile`` traces the helpers without graph breaks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pkgutil
import re

import torch

from . import kernels as _kernels

# Op names with a Triton implementation: the modules of fastunitary.kernels (a leading
# underscore marks a shared helper module, not an op).
_KERNEL_OPS = frozenset(
    m.name for m in pkgutil.iter_modules(_kernels.__path__) if not m.name.startswith("_")
)
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _release(*packages: str) -> tuple[int, int] | None:
    """``(major, minor)`` of the first of ``packages`` installed, or ``None`` (read from
    its metadata: nothing is imported). ``"3.6.0+git1234"`` and ``"2.4rc1"`` give
    ``(3, 6)`` and ``(2, 4)``."""
    for package in packages:
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        match = re.match(r"(\d+)(?:\.(\d+))?", version)
        if match:
            return int(match.group(1)), int(match.group(2) or 0)
    return None


def interpreter_conflict() -> str | None:
    """Why Triton's interpreter cannot run here, or ``None``.

    Triton before 3.7 converts one-element NumPy arrays with ``int()`` in its interpreter
    (``range(T)`` over a kernel argument), which NumPy 2.4 made a ``TypeError``
    (triton-lang/triton#9171, fixed in 3.7). torch 2.11 pins triton 3.6, so an
    environment with torch 2.11 and a current NumPy meets it.
    """
    # torch's nightlies ship triton as the distribution pytorch-triton
    triton, numpy = _release("triton", "pytorch-triton"), _release("numpy")
    if triton is None or numpy is None or triton >= (3, 7) or numpy < (2, 4):
        return None
    return (f"Triton {'.'.join(map(str, triton))}'s interpreter fails with NumPy "
            f"{'.'.join(map(str, numpy))} (triton-lang/triton#9171, fixed in Triton 3.7): "
            f"install 'numpy<2.4' or 'triton>=3.7'")


_INTERPRETER_CONFLICT = interpreter_conflict()

BACKENDS = ("auto", "reference", "triton")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this op on these inputs."""


def triton_interpret() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_importable() -> bool:
    return _TRITON_INSTALLED


def has_kernel(op: str) -> bool:
    """True when ``fastunitary.kernels.<op>`` exists."""
    return op in _KERNEL_OPS


def check_backend_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve_backend(
    op: str, backend: str, device: torch.device, unsupported: str | None = None
) -> str:
    """Return ``"reference"`` or ``"triton"`` for running ``op`` on ``device``.

    ``unsupported`` is the caller's reason why the kernel cannot take these inputs (a
    dtype or shape it does not handle), or ``None``: ``"auto"`` then falls back to the
    reference and ``"triton"`` raises with that reason.

    Raises ``ValueError`` for an unknown name and :class:`BackendUnavailableError` when
    ``backend="triton"`` is asked for but cannot run.
    """
    check_backend_name(backend)
    if backend == "reference":
        return "reference"
    if backend == "auto":
        interpreter_broken = _INTERPRETER_CONFLICT is not None and triton_interpret()
        if (device.type == "cuda" and triton_importable() and has_kernel(op)
                and unsupported is None and not interpreter_broken):
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
    if _INTERPRETER_CONFLICT is not None and triton_interpret():
        raise BackendUnavailableError(
            f"backend='triton' for op '{op}' runs in Triton's interpreter "
            f"(TRITON_INTERPRET=1), and {_INTERPRETER_CONFLICT}."
        )
    if unsupported is not None:
        raise BackendUnavailableError(
            f"backend='triton' for op '{op}' cannot run these inputs: {unsupported}. "
            f"Use backend='reference' (or 'auto')."
        )
    return "triton"
