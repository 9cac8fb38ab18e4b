"""Host-side helpers shared by the kernel modules (not an op: names starting with ``_`` are
skipped by the backend discovery and the compile check)."""

from __future__ import annotations

import torch


def launch(kernel, grid, device: torch.device, *args, **meta) -> None:
    """Launch on ``device``'s CUDA context, or through Triton's interpreter for CPU tensors
    (``TRITON_INTERPRET=1``)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernel[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)


def alloc(shape, device: torch.device, fill_nan: bool) -> torch.Tensor:
    """A float32 output; NaN-filled when ``fill_nan`` (tests: an unwritten element fails)."""
    if fill_nan:
        return torch.full(shape, float("nan"), dtype=torch.float32, device=device)
    return torch.empty(shape, dtype=torch.float32, device=device)


def check_float32(what: str, **tensors) -> None:
    """``TypeError`` unless every given tensor (``None`` skipped) is float32."""
    for name, t in tensors.items():
        if t is not None and t.dtype != torch.float32:
            raise TypeError(f"the Triton {what} runs in float32; {name} is {t.dtype}")
