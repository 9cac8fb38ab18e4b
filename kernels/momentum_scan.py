"""Triton kernel of the linear scan ``v_t = a_t v_{t-1} + b_t`` over time (MomentumRNN's buffers).

The arguments of ``fastunitary::momentum_scan`` / ``fastunitary::momentum_scan_backward``
(see :mod:`fastunitary.reference.momentum_scan` for the semantics): ``a`` and ``b`` are
``(T, B, d)`` float32, ``a`` usually a broadcast view (a scalar or per-channel ``mu``
expanded, stride 0 along time and/or channels, or a ``(T, 1, 1)`` Nesterov schedule).
The backward is the same scan reversed in time, ``gbar_t = grad_t + a_{t+1} gbar_{t+1}``.

Design: a chunked parallel scan, one launch per direction, float32 throughout. The
``(B, d)`` axes are flattened into ``C = B d`` independent channels; each program owns
``BLOCK_C`` channels and walks the whole sequence in chunks of ``CHUNK`` steps. Per chunk
it loads a ``(CHUNK, BLOCK_C)`` tile of the coefficient and of the input, scans it along
time with ``tl.associative_scan`` under the composition of affine maps
``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)`` (log-depth across threads, sequential
inside a thread), applies the carry of the previous chunk, ``v = A_cum carry + B_cum``,
stores the tile and keeps its last row (in scan order) as the next carry. The backward
runs the chunks from the end with ``reverse=True`` and the coefficient loaded one step
ahead, ``a_{t+1}`` (masked to 0 past the end, so ``gbar_{T-1} = grad_{T-1}``).

Memory layout. The input (``b``, or the gradient in the backward) and the output are
contiguous ``(T, C)``: element ``(t, c)`` at ``t C + c``. ``b = step * u`` is a fresh
contiguous tensor in practice; a stride-0 gradient (a ``.sum()`` loss) or another view is
copied first. The coefficient is never materialized when broadcast; :func:`_coef_layout`
picks how the kernel reads it (``A_MODE``, a constexpr):

- ``A_PER_STEP`` (a scalar or ``(T, 1, 1)`` mu): one value per step, ``t s_t``, a
  ``(CHUNK,)`` load broadcast over the channels;
- ``A_PER_CHANNEL`` (a ``(d,)`` mu): one value per channel, ``(c // d) s_B + (c % d) s_d``,
  loaded once per program before the time loop;
- ``A_FULL`` (a ``(T, B, d)`` mu): read like the input (made contiguous if it is not).

Keeping the per-element offsets ``t C + c`` matters beyond bytes: the compiler then sees
that the channels are contiguous and lays a warp's 32 lanes along them. With every tensor
read through strides and ``c // d`` (an earlier version), triton 3.6 (the GPU machines'
version) put the lanes along time instead (uncoalesced loads, layout conversions through
shared memory) and spilled registers. ``T``, ``B`` and the time stride of ``a`` are not
specialized, so a new sequence length or batch size never recompiles. Offsets are 64-bit.

Cost (roofline): about 5 FLOPs per element (the scan's in-thread step, a product and an
FMA, and the carry's FMA; the cross-warp part is amortized over a thread's rows) against
8 to 12 bytes per element from HBM: read ``b`` (4), write ``v`` (4), read ``a`` (4 for
``A_FULL``; ~0 for the broadcast modes, whose values stay in L1/L2). The backward moves
the same with the gradient for ``b`` (plus 8 when a stride-0 gradient is copied). That is
~0.5 FLOP/byte, far below an H100's fp32 ridge (~20 FLOP/byte: 67 TFLOP/s over 3.35 TB/s),
so the kernel is memory bound: at T = 1000, B = 64, d = 256 (16.4 M elements) a scalar mu
moves 131 MB (~40 us at full bandwidth), a full ``(T, B, d)`` mu 197 MB (~60 us). The
block sizes serve bandwidth:

- ``BLOCK_C = 32`` channels: one warp's 32 lanes along the contiguous channel axis, so
  each tile row is one 128-byte line per warp, fully coalesced (4 bytes per lane: no
  vector loads, since the row start ``t C`` has no known alignment with ``B``
  unspecialized). A narrow block also gives the most programs: ``C / 32`` (512 at
  B = 64, d = 256, for 132 SMs).
- ``CHUNK = 64`` steps, 8 warps: the 64 x 32 tile is 8 rows per thread, so the scan is
  mostly sequential inside a thread and crosses warps once per chunk through shared
  memory. At most 128 registers per thread (triton 3.6 and 3.9, sm_80 and sm_90, no
  spills: ci/compile_check.py), so at least 2 programs (16 warps) per SM, each with 8-16 KB of loads
  in flight per chunk: 2-4 MB over 132 SMs, above the ~2 MB that Little's law asks of an
  H100 (3.35 TB/s x ~600 ns). 4 warps on the same tile (16 rows per thread) take
  150-255 registers and spill on triton 3.6; a 32-step chunk at 4 warps has half the
  bytes in flight per program and twice the carry hand-offs along T.

Where it falls short (a bound, not a measurement: no GPU has been lent): with few
channels (``C / 32`` programs well under the SM count, e.g. B d = 1024) the sequential
walk over ``T / CHUNK`` chunks is latency bound. The lever, not implemented, is to also
split T across programs (a two-pass scan: per-chunk aggregates, a scan of the aggregates,
then a fix-up pass), which costs a second read of the inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._host import alloc, check_float32, launch

#: Time steps per chunk, channels per program, warps per program (see the module docstring).
CHUNK = 64
BLOCK_C = 32
NUM_WARPS = 8

#: Tests set this to allocate outputs filled with NaN, so unwritten elements fail.
FILL_OUTPUTS_WITH_NAN = False


@triton.jit
def _combine(a1, b1, a2, b2):
    """Composition of ``v -> a1 v + b1`` then ``v -> a2 v + b2``."""
    return a1 * a2, a2 * b1 + b2


@triton.jit(do_not_specialize=["T", "B", "sa_t"])
def _scan(
    a_ptr, x_ptr, v0_ptr, out_ptr, T, B, d, sa_t, sa_b, sa_d,
    A_MODE: tl.constexpr, REVERSE: tl.constexpr, HAS_V0: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """``out_t = a_t out_{t-1} + x_t``, or with REVERSE ``out_t = a_{t+1} out_{t+1} + x_t``.

    ``x`` and ``out`` are contiguous ``(T, C)``; ``a`` per A_MODE (see :func:`_coef_layout`):
    0 one value per step at ``t sa_t``, 1 one value per channel at ``(c // d) sa_b +
    (c % d) sa_d``, 2 contiguous ``(T, C)``.
    """
    C = B.to(tl.int64) * d
    ch = tl.program_id(0).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    rows = tl.arange(0, CHUNK)
    if A_MODE == 1:  # a per channel, constant in time: loaded once per program
        a_ch = tl.load(a_ptr + (ch // d) * sa_b + (ch % d) * sa_d, mask=ch_ok, other=0.0)
    if HAS_V0:
        carry = tl.load(v0_ptr + ch, mask=ch_ok, other=0.0)
    else:
        carry = tl.zeros([BLOCK_C], dtype=tl.float32)
    if REVERSE:
        shift = 1  # the backward's coefficient of step t is a_{t+1}
        carry_row = 0  # the earliest step of a chunk is the last one scanned
    else:
        shift = 0
        carry_row = CHUNK - 1
    n_chunks = tl.cdiv(T, CHUNK)
    for i in range(n_chunks):
        if REVERSE:
            k = n_chunks - 1 - i
        else:
            k = i
        t = (k * CHUNK + rows).to(tl.int64)
        io = t[:, None] * C + ch[None, :]
        m = (t < T)[:, None] & ch_ok[None, :]
        x = tl.load(x_ptr + io, mask=m, other=0.0)
        ta_ok = (t + shift) < T  # a_T (backward, past the end) is 0
        if A_MODE == 0:
            a_t = tl.load(a_ptr + (t + shift) * sa_t, mask=ta_ok, other=0.0)
            a = tl.broadcast_to(a_t[:, None], (CHUNK, BLOCK_C))
        elif A_MODE == 1:
            a = tl.where(ta_ok[:, None], a_ch[None, :], 0.0)
        else:
            a = tl.load(a_ptr + io + shift * C, mask=ta_ok[:, None] & ch_ok[None, :], other=0.0)
        a_cum, b_cum = tl.associative_scan((a, x), 0, _combine, reverse=REVERSE)
        v = a_cum * carry[None, :] + b_cum
        tl.store(out_ptr + io, v, mask=m)
        carry = tl.sum(tl.where(rows[:, None] == carry_row, v, 0.0), axis=0)


def _alloc(shape, like: torch.Tensor) -> torch.Tensor:
    return alloc(shape, like.device, FILL_OUTPUTS_WITH_NAN)


#: A_MODE values: how the coefficient ``a`` is read (see :func:`_coef_layout`).
A_PER_STEP, A_PER_CHANNEL, A_FULL = 0, 1, 2


def _coef_layout(a: torch.Tensor):
    """``(A_MODE, tensor, (s_t, s_B, s_d))``: how the kernel reads ``a`` (already ``(T, B, d)``).

    Constant over channels (a scalar or ``(T, 1, 1)`` mu, stride 0 along B and d): one
    value per step, ``A_PER_STEP``. Constant in time (a ``(d,)`` mu): one value per channel,
    loaded once per program, ``A_PER_CHANNEL``. Otherwise the full tensor, read contiguous
    like the input (a no-op for a contiguous ``(T, B, d)``), ``A_FULL``. The broadcast
    modes never materialize ``a``.
    """
    st, sb, sd = (s if n > 1 else 0 for s, n in zip(a.stride(), a.shape))
    if sb == 0 and sd == 0:
        return A_PER_STEP, a, (st, 0, 0)
    if st == 0:
        return A_PER_CHANNEL, a, (0, sb, sd)
    return A_FULL, a.contiguous(), (0, 0, 0)


def _run(a, x, v0, reverse: bool) -> torch.Tensor:
    T, B, d = x.shape
    x = x.contiguous()  # also materializes a stride-0 gradient (from a .sum() loss)
    mode, a, strides = _coef_layout(a.expand(T, B, d))
    out = _alloc((T, B, d), x)
    if out.numel() == 0:
        return out
    launch(_scan, (triton.cdiv(B * d, BLOCK_C),), x.device,
            a, x, out if v0 is None else v0, out, T, B, d, *strides,
            A_MODE=mode, REVERSE=reverse, HAS_V0=v0 is not None, CHUNK=CHUNK,
            BLOCK_C=BLOCK_C, num_warps=NUM_WARPS)
    return out


def forward(a: torch.Tensor, b: torch.Tensor, v0: torch.Tensor | None) -> torch.Tensor:
    """All ``v_t = a_t v_{t-1} + b_t``, ``(T, B, d)`` contiguous.

    The arguments of ``fastunitary::momentum_scan``: ``a``, ``b`` ``(T, B, d)`` float32 (``a``
    usually a broadcast view), ``v0`` ``(B, d)`` or ``None`` for zeros.
    """
    check_float32("momentum scan", a=a, b=b, v0=v0)
    return _run(a, b, None if v0 is None else v0.contiguous(), reverse=False)


def backward(grad_v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``gbar_t = grad_v_t + a_{t+1} gbar_{t+1}``, ``(T, B, d)`` contiguous.

    The arguments of ``fastunitary::momentum_scan_backward``; ``grad_v`` may be a stride-0
    expanded gradient.
    """
    check_float32("momentum scan", grad_v=grad_v, a=a)
    return _run(a, grad_v, None, reverse=True)


def aot_configs(explore: bool = False):
    """Every configuration the dispatch can launch, for ci/compile_check.py.

    Yields ``(name, kernel attribute, signature, constexprs, num_warps, dispatched)``;
    with ``explore``, also other tiles (not dispatched), to see where spills begin.
    """
    tiles = [(CHUNK, BLOCK_C, NUM_WARPS, True)]
    if explore:
        tiles += [(ch, bc, w, False) for ch in (32, 64, 128) for bc in (32, 64, 128)
                  for w in (4, 8) if (ch, bc, w) != (CHUNK, BLOCK_C, NUM_WARPS)]
    modes = {A_PER_STEP: "a per step", A_PER_CHANNEL: "a per channel", A_FULL: "a full"}
    for chunk, block_c, warps, dispatched in tiles:
        for mode, mode_name in modes.items():
            for reverse, has_v0 in ((False, False), (False, True), (True, False)):
                const = {"A_MODE": mode, "REVERSE": reverse, "HAS_V0": has_v0, "CHUNK": chunk,
                         "BLOCK_C": block_c}
                sig = {arg: ("constexpr" if arg in const else
                             ("*fp32" if arg.endswith("_ptr") else "i32"))
                       for arg in _scan.arg_names}
                direction = "bwd" if reverse else ("fwd v0" if has_v0 else "fwd")
                name = (f"momentum_scan.{direction} {mode_name} CHUNK={chunk} "
                        f"BLOCK_C={block_c} warps={warps}")
                yield name, "_scan", sig, const, warps, dispatched
