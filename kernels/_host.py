"""Host-side helpers shared by the kernel modules (not an op: names starting with ``_`` are
skipped by the backend discovery and the compile check)."""

from __future__ import annotations

import functools

import torch
import triton


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


@functools.lru_cache(maxsize=None)
def sm_count(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (cached)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def launch_split(kernel, device, T, B, n, p, args, meta, reverse: bool) -> None:
    """Launch a split kernel (``kernels/recurrence.py``, ``kernels/lstm_recurrence.py``)
    over all T steps, in reverse time for the backward.

    Its programs wait for each other once per step, so all programs of a launch must be
    resident at once: a launch holds at most as many as the GPU has SMs, batch blocks in
    turn where more are needed. A state too wide for that (more column groups than SMs)
    and Triton's interpreter (which runs the programs one by one) launch one step at a
    time instead: the launches order the steps and no program waits.

    ``p``: the kernel module's plan (``BLOCK_B`` batch rows and ``BLOCK_N`` units per
    program); ``args``: the kernel's arguments before ``sync_ptr``, which is followed by
    ``T, B, n, t_first, n_steps, block0``; ``meta``: its constexprs and ``num_warps``.
    """
    groups = triton.cdiv(n, p["BLOCK_N"])
    blocks = triton.cdiv(B, p["BLOCK_B"])
    sms = 0
    if device.type == "cuda":
        sms = sm_count(torch.cuda.current_device() if device.index is None else device.index)
    if groups <= sms:
        per_launch = max(1, sms // groups)
        spans = [(T - 1 if reverse else 0, T)]
    else:
        per_launch = blocks
        spans = [(T - 1 - t if reverse else t, 1) for t in range(T)]
    for block0 in range(0, blocks, per_launch):
        count = min(per_launch, blocks - block0)
        sync = torch.zeros(count, dtype=torch.int32, device=device)
        for t_first, n_steps in spans:
            launch(kernel, (count, groups), device, *args, sync, T, B, n, t_first, n_steps,
                   block0, **meta)
