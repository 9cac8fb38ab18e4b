"""Host-side helpers shared by the kernel modules (not an op: names starting with ``_`` are
skipped by the backend discovery and the compile check)."""

from __future__ import annotations

import functools

import torch
import triton

from .. import _backend


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
    running at once. Compiled, a launch holds at most one program per SM, batch blocks in
    turn where more are needed. Triton's interpreter runs a grid's programs one after the
    other (CPU tensors, or CUDA tensors it copies), so there a launch holds one program,
    which can only wait for itself: one column group per batch block. Where a batch
    block's column groups cannot all run at once (more than the SMs, or more than one
    under the interpreter), one step is launched at a time: the launches order the steps
    and no program waits (:func:`split_schedule`).

    ``p``: the kernel module's plan (``BLOCK_B`` batch rows and ``BLOCK_N`` units per
    program); ``args``: the kernel's arguments before ``sync_ptr``, which is followed by
    ``T, B, n, t_first, n_steps, block0``; ``meta``: its constexprs but ``BLOCK_K`` and
    ``PRECISION``, and ``num_warps``; ``BLOCK_K``, ``PRECISION`` and ``num_stages`` come
    from ``p`` (their ``_backward`` entries when ``reverse``).
    """
    own = "_backward" if reverse else ""
    tiles = dict(BLOCK_K=p["BLOCK_K" + own], PRECISION=p["PRECISION" + own],
                 num_stages=p["num_stages" + own])
    groups = triton.cdiv(n, p["BLOCK_N"])
    blocks = triton.cdiv(B, p["BLOCK_B"])
    # a counter per batch block (the kernels index it by batch block, so the launches of
    # disjoint batch blocks share it; one-step launches never count)
    sync = torch.zeros(blocks, dtype=torch.int32, device=device)
    schedule = split_schedule(T, blocks, groups, programs_at_once(device), reverse)
    for block0, count, t_first, n_steps in schedule:
        launch(kernel, (count, groups), device, *args, sync, T, B, n, t_first, n_steps,
               block0, **tiles, **meta)


def plan_dict(design: str, block_b: int, block_n: int, block_k, warps, precision, stages) -> dict:
    """A kernel module's ``plan(n)``: ``{"design", "BLOCK_B", "BLOCK_N", "BLOCK_K",
    "num_warps", "PRECISION", "num_stages"}`` for the forward and the last four again with
    ``_backward`` for the backward. ``block_k``, ``warps``, ``precision``, ``stages``: one
    value for both directions, or ``(forward, backward)``."""
    def pair(v):
        return v if isinstance(v, tuple) else (v, v)

    (k, k_b), (w, w_b), (p, p_b), (s, s_b) = map(pair, (block_k, warps, precision, stages))
    return {"design": design, "BLOCK_B": block_b, "BLOCK_N": block_n,
            "BLOCK_K": k, "BLOCK_K_backward": k_b, "num_warps": w, "num_warps_backward": w_b,
            "PRECISION": p, "PRECISION_backward": p_b, "num_stages": s, "num_stages_backward": s_b}


#: The kernel of each (design, direction) in both recurrence modules, by attribute name.
AOT_KERNELS = {(design, direction): f"_{'forward' if direction == 'fwd' else 'backward'}_{design}"
               for design in ("resident", "split", "streamed") for direction in ("fwd", "bwd")}
#: A plan's entries that make one compiled configuration of a direction (with ``_backward``
#: appended but to the first two for the backward).
_AOT_KEYS = ("design", "BLOCK_N", "BLOCK_K", "num_warps", "PRECISION", "num_stages")


def aot_settings(plans, extra=()) -> list[tuple[tuple, bool]]:
    """``(setting, dispatched)`` for ci/compile_check.py, a setting being ``(direction,
    design, BLOCK_N, BLOCK_K, num_warps, PRECISION, num_stages)``: those of ``plans`` (the
    module's ``plan`` dicts, both directions), dispatched, then the ``extra`` settings
    not among them, each group sorted."""
    used = set()
    for p in plans:
        used.add(("fwd",) + tuple(p[k] for k in _AOT_KEYS))
        used.add(("bwd",) + tuple(p[k if k in ("design", "BLOCK_N") else k + "_backward"]
                                  for k in _AOT_KEYS))

    def order(setting):
        return tuple(str(v) for v in setting)  # None beside ints

    return ([(c, True) for c in sorted(used, key=order)]
            + [(c, False) for c in sorted(set(extra) - used, key=order)])


def aot_entry(module: str, kernels: dict, setting: tuple, const: dict, label: str = ""):
    """``(name, kernel attribute, signature, constexprs, options)`` of one ``setting`` (see
    :func:`aot_settings`) of ``module``'s kernels (``kernels``: the module's globals), with
    the constexprs ``const`` beside the setting's; ``label`` goes into the name."""
    direction, design, block_n, block_k, warps, precision, stages = setting
    kernel = AOT_KERNELS[design, direction]
    const = {**const, "BLOCK_N": block_n}
    options = {"num_warps": warps}
    if design == "split":
        const.update(BLOCK_K=block_k, PRECISION=precision)
        options["num_stages"] = stages
    sig = {a: ("constexpr" if a in const else "*i32" if a == "sync_ptr" else
               ("*fp32" if a.endswith("_ptr") else "i32"))
           for a in kernels[kernel].arg_names}
    split = f" BLOCK_K={block_k} {precision} stages={stages}" if design == "split" else ""
    name = f"{module}.{design}_{direction} {label}BLOCK_N={block_n}{split} warps={warps}"
    return name, kernel, sig, const, options


def programs_at_once(device: torch.device) -> int:
    """How many programs of a launch on ``device`` surely run at the same time: one per SM
    compiled on CUDA; one under Triton's interpreter, whatever the tensors' device."""
    if device.type == "cuda" and not _backend.triton_interpret():
        return sm_count(torch.cuda.current_device() if device.index is None else device.index)
    return 1


def split_schedule(T: int, blocks: int, groups: int, at_once: int, reverse: bool):
    """The launches of a split kernel: ``(block0, batch blocks, t_first, n_steps)`` each,
    for ``blocks`` batch blocks of ``groups`` programs, when ``at_once`` programs can run
    at the same time."""
    if groups <= at_once:  # whole batch blocks at once, each launch over all steps
        per_launch = at_once // groups
        return [(block0, min(per_launch, blocks - block0), T - 1 if reverse else 0, T)
                for block0 in range(0, blocks, per_launch)]
    return [(0, blocks, T - 1 - t if reverse else t, 1) for t in range(T)]
