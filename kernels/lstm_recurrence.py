"""Fused Triton kernels of the LSTM recurrence: one launch per direction for all T steps.

The op's input term ``g_t`` (``x_t W_ih^T + b_ih + b_hh``, computed outside by one large
product) is ``(T, B, 4n)`` float32 with the gates in ``torch.nn.LSTM``'s order i, f, g, o;
``W_hh`` is ``(4n, n)``, read as four ``n x n`` gate blocks ``W_p = W_hh[p n:(p+1) n]``.
In row form one step is

    z_p = g_p + h_{t-1} W_p^T                                  (p = i, f, g, o)
    c_t = sig(z_f) c_{t-1} + sig(z_i) tanh(z_g),    h_t = sig(z_o) tanh(c_t)

Forward (resident and streamed; split below): each program owns ``BLOCK_B`` batch rows
and all ``n`` columns of every gate, loops over all T steps in one launch and stores
``h_t`` and ``c_t`` (both are outputs of the op). Backward: the same programs run time in reverse,

    dh = grad h_t + dz_{t+1} W_hh,     dc = grad c_t + dc_{t+1} f_{t+1} + dh o (1 - tanh(c_t)^2)
    dz_i = dc c~ i (1 - i),  dz_f = dc c_{t-1} f (1 - f),  dz_g = dc i (1 - c~^2),
    dz_o = dh tanh(c_t) o (1 - o)

storing every ``dz_t`` (which is also ``grad g_t``) and, at the end, the last carry
``dc_0 f_0 = grad c0``. What is recomputed rather than stored: the forward stores only
``h_t`` and ``c_t``; the pre-activations ``z_t`` of all steps are recomputed before the
backward launch by one large cuBLAS product ``g_t + h_{t-1} W_hh^T`` written into the
``grad g`` buffer (no extra memory; the kernel overwrites ``z_t`` with ``dz_t`` step by
step), and the gates ``i, f, c~, o`` and ``tanh(c_t)`` are recomputed from ``z_t`` and
``c_t`` in the kernel. After the launch, ``grad W_hh = sum_t dz_t^T h_{t-1}`` is one large
product over all steps and the batch, and ``grad h0 = dz_0 W_hh``.

Three designs, chosen by ``n`` only (see :func:`plan`):

- **resident** (``n <= RESIDENT_MAX_N``): the four gate blocks of W_hh (``16 n^2`` bytes,
  16 KB at n = 32) are read once per launch and kept on chip for all T steps; the state
  (h, c forward; the carries dh = dz W_hh and dc f backward) stays in registers; ``g_t``
  is prefetched one step ahead in the forward. Same limit as the recurrence kernel's
  complex case (four 32 x 32 blocks); the next tile, four 64 x 64 blocks, spills (see
  ``RESIDENT_MAX_N``).
- **split** (larger n, the default there): the recurrence kernel's split design
  (kernels/recurrence.py): one program per (``BLOCK_B`` batch rows, ``SPLIT_BLOCK_N``
  units of every gate), the programs of a batch block meeting once per step; ``h_{t-1}``
  (forward) and ``dz_{t+1}`` (backward) are read back whole from L2, while ``c`` and the
  carry ``dc f``, elementwise, stay with the program of their units. On an H200 (B = 64,
  T = 1000) a forward step took 8.2 / 22.0 / 150 us at n = 64 / 256 / 1024, 2.5-19x
  faster than streamed; at n = 1024 slower than a per-step cuBLAS loop (86 us).
- **streamed** (``LARGE_N_DESIGN = "streamed"``, kept to be timed beside split): one
  program per batch block re-reads W_hh in ``BLOCK_N x BLOCK_N`` tiles of the four gate
  blocks every step (from L2 after the first step: 16 MB at n = 1024 fits the H100's 50 MB
  L2) and the previous state from the output buffers (``h_{t-1}`` forward, ``dz_{t+1}``
  and a ``(B, n)`` buffer of the carry ``dc f`` backward), with a block-wide barrier
  between steps. On an H200 (first GPU run) MomentumLSTM on it ran at 0.07x cuDNN's LSTM
  forward (T = 1024, B = 64, hidden 256).

Cost per step and batch row: forward ``8 n^2`` FLOPs (the four gate products) plus ~15 n
for the gates; backward ``8 n^2`` plus ~30 n; outside the kernels, the recomputation of
z and the weight gradient ``8 n^2`` each (large cuBLAS products, not on the sequential
chain). Bytes per step and row from HBM: forward reads ``g_t`` (16 n) and writes ``h_t``,
``c_t`` (8 n); backward reads ``grad h_t``, ``grad c_t`` (8 n), ``z_t`` (16 n), ``c_{t-1}``
(4 n; ``c_t`` is carried from the previous iteration) and writes ``dz_t`` (16 n); W_hh
once per launch when resident. In the resident and streamed designs the batch is the
only parallelism (one program per 16 rows), so a step costs one SM's FMA throughput on
``2 * 16 * 4 n^2`` FLOPs plus the latency of the dependent chain; the split design
spreads a step over ``cdiv(n, 16)`` SMs. No per-step launches or host synchronization
(except where the split design's programs cannot all be resident: see
``_host.launch_split``).

Products use ``input_precision="ieee"`` (true fp32, no tf32); gates and state are
float32. Offsets into ``(T, B, *)`` tensors are 64-bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._precision import ieee_float32_matmul
from ..reference._samples import per_sample_outer
from ._host import aot_entry, aot_settings, alloc, check_float32, launch, launch_split, plan_dict
from .recurrence import _arrive, _split_tile, _tanh, _wait_for_block

#: Largest n kept resident on chip (four n x n gate blocks of W_hh). Set by the
#: ahead-of-time compile check (ci/compile_check.py --explore, triton 3.6 and 3.9):
#: BLOCK_N = 32 compiles without spills at 8 warps (<= 128 registers); BLOCK_N = 64 spills
#: at 4 warps in both directions (up to 928 bytes), and at 8 warps the backward spills on
#: sm_80 (triton 3.9) while the forward needs 246 of the 255 registers.
RESIDENT_MAX_N = 32
#: Batch rows per program (the M of every tl.dot, which must be >= 16).
BLOCK_B = 16
#: Tile of the streamed kernels and their warp counts (forward, backward): the only
#: combination found without spills on sm_80 and sm_90 with triton 3.6 (the GPU machines)
#: and 3.9 (CI) alike: the forward at 8 warps and the backward at 4 spill on sm_80 (and
#: sm_90 with 3.6), and BLOCK_N = 32 spills in both directions.
STREAM_BLOCK = 16
STREAM_WARPS = (4, 8)
#: The design of states above RESIDENT_MAX_N: "split" (a step's units across programs) or
#: "streamed" (one program per batch block), as in kernels/recurrence.py.
LARGE_N_DESIGN = "split"
#: Settings of the split kernels, each (forward, backward): BLOCK_N units per program;
#: BLOCK_K of the previous state (forward) or of dz_{t+1}'s gate blocks (backward) per
#: product; warps; ``tl.dot``'s input precision, "ieee" (fp32 FMA) or "tf32x3" (three TF32
#: tensor-core products of split operands: float32 accuracy but for the dropped low x low
#: term, about 2^-22 relative); software-pipeline stages of the k-loop (3: Triton's
#: default). These are the settings whose tests passed compiled on an H200. Timed there
#: (``python -m bench.recurrence_kernel --op lstm_recurrence --block-k 32 64 --warps 4 8
#: --precision ieee tf32x3``, README "GPU speed"), tf32x3 cut the forward step from 22 to
#: 12-14 us (n = 256, B = 64), with outputs as close to the reference as ieee's, and slowed
#: the backward; but at 3 stages the tf32x3 forward spills unless n is a multiple of 16
#: (ci/compile_check.py --explore), and at 1 stage, which never spills, it took 23 us: no
#: faster than ieee.
SPLIT_BLOCK_N = 16
SPLIT_BLOCK_K = (32, 32)
SPLIT_WARPS = (4, 8)
SPLIT_PRECISION = ("ieee", "ieee")
SPLIT_STAGES = (3, 3)

#: Tests set this to allocate outputs filled with NaN, so unwritten elements fail.
FILL_OUTPUTS_WITH_NAN = False


# -- device functions ---------------------------------------------------------------------
@triton.jit
def _sigmoid(x):
    # exp2 rather than exp: the same instruction (ex2.approx), but with tl.exp triton 3.9's
    # LLVM SLP vectorizer (run for sm_90 only) hits an assertion on the resident forward
    return 1.0 / (1.0 + tl.exp2(x * -1.4426950408889634))  # 1 / (1 + e^-x)


@triton.jit
def _cell(zi, zf, zg, zo, c_prev):
    """``(h_t, c_t)`` from the four pre-activation tiles and ``c_{t-1}``."""
    c = _sigmoid(zf) * c_prev + _sigmoid(zi) * _tanh(zg)
    h = _sigmoid(zo) * _tanh(c)
    return h, c


@triton.jit
def _cell_backward(zi, zf, zg, zo, c, c_prev, dh, dc_in):
    """``(dz_i, dz_f, dz_g, dz_o, dc f)``: ``dh`` includes the carry, ``dc_in`` is
    ``grad c_t + dc_{t+1} f_{t+1}``."""
    i = _sigmoid(zi)
    f = _sigmoid(zf)
    cg = _tanh(zg)
    o = _sigmoid(zo)
    tc = _tanh(c)
    dc = dc_in + dh * o * (1.0 - tc * tc)
    dzi = dc * cg * i * (1.0 - i)
    dzf = dc * c_prev * f * (1.0 - f)
    dzg = dc * i * (1.0 - cg * cg)
    dzo = dh * tc * o * (1.0 - o)
    return dzi, dzf, dzg, dzo, dc * f


# -- resident kernels ---------------------------------------------------------------------
@triton.jit
def _step_cell_inputs(z_step, c_ptr, c0_ptr, h_off, row_off, step, t, cj, m_j, N):
    """What the backward of step ``t`` reads of the forward on the units ``cj``: the four
    gates' pre-activations ``z_t`` (at ``z_step``; returned with their pointers ``zp``,
    where ``dz_t`` goes), ``c_t`` and ``c_{t-1}`` (``c0`` at ``t = 0``)."""
    zp = z_step + cj[None, :]
    zi = tl.load(zp, mask=m_j, other=0.0)
    zf = tl.load(zp + N, mask=m_j, other=0.0)
    zg = tl.load(zp + 2 * N, mask=m_j, other=0.0)
    zo = tl.load(zp + 3 * N, mask=m_j, other=0.0)
    c_t = tl.load(c_ptr + h_off + cj[None, :], mask=m_j, other=0.0)
    c_prev = (tl.load(c_ptr + h_off - step + cj[None, :], mask=tl.where(t > 0, m_j, False),
                      other=0.0)
              + tl.load(c0_ptr + row_off + cj[None, :], mask=tl.where(t == 0, m_j, False),
                        other=0.0))
    return zp, zi, zf, zg, zo, c_t, c_prev


@triton.jit(do_not_specialize=["T", "B"])
def _forward_resident(
    g_ptr, w_ptr, h0_ptr, c0_ptr, h_ptr, c_ptr, T, B, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    io_mask = (rows < B)[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    io = rows64 * N + cols[None, :]  # a (B, n) row: h0, c0, h_t, c_t
    gio = rows64 * (4 * N) + cols[None, :]  # a (B, 4n) row, gate p at + p N
    # W_p^T, element [k, j] = W_hh[p N + j, k]: loaded once per launch.
    w_mask = col_ok[:, None] & col_ok[None, :]
    wt = cols[None, :] * N + cols[:, None]
    wt_i = tl.load(w_ptr + wt, mask=w_mask, other=0.0)
    wt_f = tl.load(w_ptr + N * N + wt, mask=w_mask, other=0.0)
    wt_g = tl.load(w_ptr + 2 * N * N + wt, mask=w_mask, other=0.0)
    wt_o = tl.load(w_ptr + 3 * N * N + wt, mask=w_mask, other=0.0)
    h = tl.load(h0_ptr + io, mask=io_mask, other=0.0)
    c = tl.load(c0_ptr + io, mask=io_mask, other=0.0)
    step = B.to(tl.int64) * N
    g_base = g_ptr + gio
    # g_t is loaded one step ahead, so that its latency overlaps the previous step's work
    gi = tl.load(g_base, mask=io_mask, other=0.0)
    gf = tl.load(g_base + N, mask=io_mask, other=0.0)
    gg = tl.load(g_base + 2 * N, mask=io_mask, other=0.0)
    go = tl.load(g_base + 3 * N, mask=io_mask, other=0.0)
    h_ptrs = h_ptr + io
    c_ptrs = c_ptr + io
    for t in range(T):
        # the next step's g (the last step reloads its own: in bounds, unused)
        g_next = g_base + tl.minimum(t + 1, T - 1).to(tl.int64) * (4 * step)
        gi_next = tl.load(g_next, mask=io_mask, other=0.0)
        gf_next = tl.load(g_next + N, mask=io_mask, other=0.0)
        gg_next = tl.load(g_next + 2 * N, mask=io_mask, other=0.0)
        go_next = tl.load(g_next + 3 * N, mask=io_mask, other=0.0)
        zi = tl.dot(h, wt_i, gi, input_precision="ieee")
        zf = tl.dot(h, wt_f, gf, input_precision="ieee")
        zg = tl.dot(h, wt_g, gg, input_precision="ieee")
        zo = tl.dot(h, wt_o, go, input_precision="ieee")
        h, c = _cell(zi, zf, zg, zo, c)
        tl.store(h_ptrs, h, mask=io_mask)
        tl.store(c_ptrs, c, mask=io_mask)
        h_ptrs += step
        c_ptrs += step
        gi = gi_next
        gf = gf_next
        gg = gg_next
        go = go_next


@triton.jit(do_not_specialize=["T", "B"])
def _backward_resident(
    gh_ptr, gc_ptr, dz_ptr, w_ptr, c0_ptr, c_ptr, dc0_ptr, T, B, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    io_mask = (rows < B)[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    io = rows64 * N + cols[None, :]
    gio = rows64 * (4 * N) + cols[None, :]
    # W_p, element [k, j] = W_hh[p N + k, j]: the carry is dh = sum_p dz_p W_p.
    w_mask = col_ok[:, None] & col_ok[None, :]
    wo = cols[:, None] * N + cols[None, :]
    w_i = tl.load(w_ptr + wo, mask=w_mask, other=0.0)
    w_f = tl.load(w_ptr + N * N + wo, mask=w_mask, other=0.0)
    w_g = tl.load(w_ptr + 2 * N * N + wo, mask=w_mask, other=0.0)
    w_o = tl.load(w_ptr + 3 * N * N + wo, mask=w_mask, other=0.0)
    step = B.to(tl.int64) * N
    last = (T - 1).to(tl.int64) * step
    gh_ptrs = gh_ptr + last + io
    gc_ptrs = gc_ptr + last + io
    c_ptrs = c_ptr + last + io
    d_ptrs = dz_ptr + 4 * last + gio  # holds z_t on entry, dz_t on exit
    c_t = tl.load(c_ptrs, mask=io_mask, other=0.0)
    dh_carry = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    dc_carry = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for s in range(T):
        t = T - 1 - s
        # c_{t-1}, or c0 at t = 0: one of the two loads is masked off entirely (branch-free:
        # an if/else here costs a register spill on sm_80 at BLOCK_N = 32)
        c_prev = (tl.load(c_ptrs - step, mask=tl.where(t > 0, io_mask, False), other=0.0)
                  + tl.load(c0_ptr + io, mask=tl.where(t == 0, io_mask, False), other=0.0))
        zi = tl.load(d_ptrs, mask=io_mask, other=0.0)
        zf = tl.load(d_ptrs + N, mask=io_mask, other=0.0)
        zg = tl.load(d_ptrs + 2 * N, mask=io_mask, other=0.0)
        zo = tl.load(d_ptrs + 3 * N, mask=io_mask, other=0.0)
        dh = tl.load(gh_ptrs, mask=io_mask, other=0.0) + dh_carry
        dc_in = tl.load(gc_ptrs, mask=io_mask, other=0.0) + dc_carry
        dzi, dzf, dzg, dzo, dc_carry = _cell_backward(zi, zf, zg, zo, c_t, c_prev, dh, dc_in)
        tl.store(d_ptrs, dzi, mask=io_mask)
        tl.store(d_ptrs + N, dzf, mask=io_mask)
        tl.store(d_ptrs + 2 * N, dzg, mask=io_mask)
        tl.store(d_ptrs + 3 * N, dzo, mask=io_mask)
        dh_carry = tl.dot(dzi, w_i, input_precision="ieee")
        dh_carry = tl.dot(dzf, w_f, dh_carry, input_precision="ieee")
        dh_carry = tl.dot(dzg, w_g, dh_carry, input_precision="ieee")
        dh_carry = tl.dot(dzo, w_o, dh_carry, input_precision="ieee")
        c_t = c_prev
        gh_ptrs -= step
        gc_ptrs -= step
        c_ptrs -= step
        d_ptrs -= 4 * step
    tl.store(dc0_ptr + io, dc_carry, mask=io_mask)  # dc_0 f_0 = grad c0


# -- streamed kernels ---------------------------------------------------------------------
@triton.jit(do_not_specialize=["T", "B"])
def _forward_streamed(
    g_ptr, w_ptr, h0_ptr, c0_ptr, h_ptr, c_ptr, T, B, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    tile = tl.arange(0, BLOCK_N)
    rows64 = rows.to(tl.int64)[:, None]
    row_off = rows64 * N
    grow_off = rows64 * (4 * N)
    step = B.to(tl.int64) * N
    NN = N * N
    h_prev = h0_ptr  # the previous state: h0/c0, then the outputs of the previous step
    c_prev = c0_ptr
    h_cur = h_ptr
    c_cur = c_ptr
    g_step = g_ptr
    for _ in range(T):
        for j0 in range(0, N, BLOCK_N):
            cj = j0 + tile
            cj_ok = cj < N
            m_j = row_ok[:, None] & cj_ok[None, :]
            gp = g_step + grow_off + cj[None, :]
            zi = tl.load(gp, mask=m_j, other=0.0)
            zf = tl.load(gp + N, mask=m_j, other=0.0)
            zg = tl.load(gp + 2 * N, mask=m_j, other=0.0)
            zo = tl.load(gp + 3 * N, mask=m_j, other=0.0)
            for k0 in range(0, N, BLOCK_N):
                ck = k0 + tile
                ck_ok = ck < N
                m_k = row_ok[:, None] & ck_ok[None, :]
                w_mask = ck_ok[:, None] & cj_ok[None, :]
                wt = w_ptr + cj[None, :] * N + ck[:, None]  # [k, j] = W_hh[p N + j, k]
                hk = tl.load(h_prev + row_off + ck[None, :], mask=m_k, other=0.0)
                zi = tl.dot(hk, tl.load(wt, mask=w_mask, other=0.0), zi,
                            input_precision="ieee")
                zf = tl.dot(hk, tl.load(wt + NN, mask=w_mask, other=0.0), zf,
                            input_precision="ieee")
                zg = tl.dot(hk, tl.load(wt + 2 * NN, mask=w_mask, other=0.0), zg,
                            input_precision="ieee")
                zo = tl.dot(hk, tl.load(wt + 3 * NN, mask=w_mask, other=0.0), zo,
                            input_precision="ieee")
            cp = tl.load(c_prev + row_off + cj[None, :], mask=m_j, other=0.0)
            h_new, c_new = _cell(zi, zf, zg, zo, cp)
            tl.store(h_cur + row_off + cj[None, :], h_new, mask=m_j)
            tl.store(c_cur + row_off + cj[None, :], c_new, mask=m_j)
        # every tile of h_t must be written before any thread reads it in step t + 1
        tl.debug_barrier()
        h_prev = h_cur
        c_prev = c_cur
        h_cur += step
        c_cur += step
        g_step += 4 * step


@triton.jit(do_not_specialize=["T", "B"])
def _backward_streamed(
    gh_ptr, gc_ptr, dz_ptr, w_ptr, c0_ptr, c_ptr, dc_ptr, T, B, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # dc_ptr: (B, n) carry dc_{t+1} f_{t+1}, zeros on entry, dc_0 f_0 = grad c0 on exit
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    tile = tl.arange(0, BLOCK_N)
    rows64 = rows.to(tl.int64)[:, None]
    row_off = rows64 * N
    grow_off = rows64 * (4 * N)
    step = B.to(tl.int64) * N
    NN = N * N
    for s in range(T):
        t = T - 1 - s
        t64 = t.to(tl.int64)
        h_off = t64 * step + row_off  # row t of a (T, B, n) tensor
        z_step = dz_ptr + t64 * (4 * step) + grow_off
        next_step = z_step + 4 * step  # dz_{t+1}: out of range and masked off when s == 0
        live = row_ok & (s > 0)
        for j0 in range(0, N, BLOCK_N):
            cj = j0 + tile
            cj_ok = cj < N
            m_j = row_ok[:, None] & cj_ok[None, :]
            dh = tl.load(gh_ptr + h_off + cj[None, :], mask=m_j, other=0.0)
            # one gate per inner loop (the product dz_{t+1} W_hh runs over 4n rows): fewer
            # tiles in flight than four per k step, which spilled on sm_80/sm_90
            for p in tl.static_range(4):
                for k0 in range(0, N, BLOCK_N):
                    ck = k0 + tile
                    ck_ok = ck < N
                    m_k = live[:, None] & ck_ok[None, :]
                    w_mask = ck_ok[:, None] & cj_ok[None, :]
                    wo = w_ptr + p * NN + ck[:, None] * N + cj[None, :]  # W_hh[p N + k, j]
                    dp = next_step + p * N + ck[None, :]
                    dh = tl.dot(tl.load(dp, mask=m_k, other=0.0),
                                tl.load(wo, mask=w_mask, other=0.0), dh, input_precision="ieee")
            zp, zi, zf, zg, zo, c_t, c_prev = _step_cell_inputs(
                z_step, c_ptr, c0_ptr, h_off, row_off, step, t, cj, m_j, N)
            carry_ptrs = dc_ptr + row_off + cj[None, :]
            dc_in = (tl.load(gc_ptr + h_off + cj[None, :], mask=m_j, other=0.0)
                     + tl.load(carry_ptrs, mask=m_j, other=0.0))
            dzi, dzf, dzg, dzo, dcf = _cell_backward(zi, zf, zg, zo, c_t, c_prev, dh, dc_in)
            tl.store(zp, dzi, mask=m_j)
            tl.store(zp + N, dzf, mask=m_j)
            tl.store(zp + 2 * N, dzg, mask=m_j)
            tl.store(zp + 3 * N, dzo, mask=m_j)
            tl.store(carry_ptrs, dcf, mask=m_j)
        tl.debug_barrier()  # dz_t complete before step t - 1 reads it


# -- split kernels ------------------------------------------------------------------------
# As the recurrence's split kernels (kernels/recurrence.py): one program per (BLOCK_B batch
# rows, BLOCK_N units), meeting once per step at their batch block's counter. The cell
# state c and the backward's carry dc f are elementwise, so each program keeps its own
# units of them; only h (forward) and dz (backward) cross programs, read back from L2.
@triton.jit(do_not_specialize=["T", "B", "t_first", "n_steps", "block0"])
def _forward_split(
    g_ptr, w_ptr, h0_ptr, c0_ptr, h_ptr, c_ptr, sync_ptr, T, B, N, t_first, n_steps, block0,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_b, rows, row_ok, cj, cj_ok, m_j = _split_tile(block0, B, N, BLOCK_B, BLOCK_N)
    groups = tl.num_programs(1)
    kk = tl.arange(0, BLOCK_K)
    rows64 = rows.to(tl.int64)[:, None]
    row_off = rows64 * N
    grow_off = rows64 * (4 * N)
    step = B.to(tl.int64) * N
    NN = N * N
    counter = sync_ptr + pid_b  # this batch block's, zero before the launch
    # c_{t-1} of this program's units: c0, or the state the previous launch stored
    c_prev = tl.load(c0_ptr + row_off + cj[None, :], mask=m_j, other=0.0)
    if t_first > 0:
        c_prev = tl.load(c_ptr + (t_first - 1).to(tl.int64) * step + row_off + cj[None, :],
                         mask=m_j, other=0.0)
    for s in range(n_steps):
        t = t_first + s
        # g_t needs no other program: loaded before the wait, its latency hides in it
        gp = g_ptr + t.to(tl.int64) * (4 * step) + grow_off + cj[None, :]
        zi = tl.load(gp, mask=m_j, other=0.0)
        zf = tl.load(gp + N, mask=m_j, other=0.0)
        zg = tl.load(gp + 2 * N, mask=m_j, other=0.0)
        zo = tl.load(gp + 3 * N, mask=m_j, other=0.0)
        if s > 0:
            _wait_for_block(counter, groups * s)
        h_prev = h_ptr + (t - 1).to(tl.int64) * step
        if t == 0:
            h_prev = h0_ptr
        for k0 in range(0, N, BLOCK_K):
            ck = k0 + kk
            ck_ok = ck < N
            m_k = row_ok[:, None] & ck_ok[None, :]
            w_mask = ck_ok[:, None] & cj_ok[None, :]
            wt = w_ptr + cj[None, :] * N + ck[:, None]  # [k, j] = W_hh[p N + j, k]
            hk = tl.load(h_prev + row_off + ck[None, :], mask=m_k, other=0.0,
                         cache_modifier=".cg")
            zi = tl.dot(hk, tl.load(wt, mask=w_mask, other=0.0), zi, input_precision=PRECISION)
            zf = tl.dot(hk, tl.load(wt + NN, mask=w_mask, other=0.0), zf,
                        input_precision=PRECISION)
            zg = tl.dot(hk, tl.load(wt + 2 * NN, mask=w_mask, other=0.0), zg,
                        input_precision=PRECISION)
            zo = tl.dot(hk, tl.load(wt + 3 * NN, mask=w_mask, other=0.0), zo,
                        input_precision=PRECISION)
        h_new, c_prev = _cell(zi, zf, zg, zo, c_prev)
        at = t.to(tl.int64) * step + row_off + cj[None, :]
        tl.store(h_ptr + at, h_new, mask=m_j)
        tl.store(c_ptr + at, c_prev, mask=m_j)
        if s + 1 < n_steps:
            _arrive(counter)


@triton.jit(do_not_specialize=["T", "B", "t_first", "n_steps", "block0"])
def _backward_split(
    gh_ptr, gc_ptr, dz_ptr, w_ptr, c0_ptr, c_ptr, dc_ptr, sync_ptr, T, B, N, t_first, n_steps,
    block0,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Steps ``t_first, t_first - 1, ...``. ``dc_ptr``: ``(B, n)``, the carry ``dc_{t+1}
    f_{t+1}`` between launches (zeros before the first), ``grad c0`` after the last."""
    pid_b, rows, row_ok, cj, cj_ok, m_j = _split_tile(block0, B, N, BLOCK_B, BLOCK_N)
    groups = tl.num_programs(1)
    kk = tl.arange(0, BLOCK_K)
    rows64 = rows.to(tl.int64)[:, None]
    row_off = rows64 * N
    grow_off = rows64 * (4 * N)
    step = B.to(tl.int64) * N
    NN = N * N
    counter = sync_ptr + pid_b  # this batch block's, zero before the launch
    carry_ptrs = dc_ptr + row_off + cj[None, :]
    dc_carry = tl.load(carry_ptrs, mask=m_j, other=0.0)
    for s in range(n_steps):
        t = t_first - s
        t64 = t.to(tl.int64)
        h_off = t64 * step + row_off
        z_step = dz_ptr + t64 * (4 * step) + grow_off  # holds z_t on entry, dz_t on exit
        # what needs no other program (this program's units of grad h_t, grad c_t, z_t,
        # c_t, c_{t-1}) is loaded before the wait, its latency hidden in it
        dh = tl.load(gh_ptr + h_off + cj[None, :], mask=m_j, other=0.0)
        zp, zi, zf, zg, zo, c_t, c_prev = _step_cell_inputs(
            z_step, c_ptr, c0_ptr, h_off, row_off, step, t, cj, m_j, N)
        dc_in = tl.load(gc_ptr + h_off + cj[None, :], mask=m_j, other=0.0) + dc_carry
        if s > 0:
            _wait_for_block(counter, groups * s)
        if t + 1 < T:
            next_step = z_step + 4 * step  # dz_{t+1}, stored by every program of the block
            for p in tl.static_range(4):
                for k0 in range(0, N, BLOCK_K):
                    ck = k0 + kk
                    ck_ok = ck < N
                    m_k = row_ok[:, None] & ck_ok[None, :]
                    w_mask = ck_ok[:, None] & cj_ok[None, :]
                    wo = w_ptr + p * NN + ck[:, None] * N + cj[None, :]  # W_hh[p N + k, j]
                    dp = tl.load(next_step + p * N + ck[None, :], mask=m_k, other=0.0,
                                 cache_modifier=".cg")
                    dh = tl.dot(dp, tl.load(wo, mask=w_mask, other=0.0), dh,
                                input_precision=PRECISION)
        dzi, dzf, dzg, dzo, dc_carry = _cell_backward(zi, zf, zg, zo, c_t, c_prev, dh, dc_in)
        tl.store(zp, dzi, mask=m_j)
        tl.store(zp + N, dzf, mask=m_j)
        tl.store(zp + 2 * N, dzg, mask=m_j)
        tl.store(zp + 3 * N, dzo, mask=m_j)
        if s + 1 < n_steps:
            _arrive(counter)
    tl.store(carry_ptrs, dc_carry, mask=m_j)


# -- host side ----------------------------------------------------------------------------
def plan(n: int) -> dict:
    """Which kernels and tile sizes run a state of ``n`` values.

    Returns ``{"design": "resident" | "split" | "streamed", "BLOCK_B", "BLOCK_N",
    "BLOCK_K", "num_warps", "PRECISION", "num_stages"}`` for the forward, and each of the
    last four again with ``_backward`` for the backward (``BLOCK_K``: split only, else 0;
    ``PRECISION``: the products' ``input_precision``, "ieee" but in the split kernels;
    ``num_stages``: split only, else None: Triton's default). The
    rule depends on ``n`` only: never on T or B, so a new batch size or sequence length
    never triggers a recompilation or a re-tune.
    """
    if n <= RESIDENT_MAX_N:
        block_n = max(16, triton.next_power_of_2(n))
        warps = 4 if block_n <= 16 else 8
        return plan_dict("resident", BLOCK_B, block_n, 0, warps, "ieee", None)
    if LARGE_N_DESIGN == "split":
        return plan_dict("split", BLOCK_B, SPLIT_BLOCK_N, SPLIT_BLOCK_K, SPLIT_WARPS, SPLIT_PRECISION,
                     SPLIT_STAGES)
    return plan_dict("streamed", BLOCK_B, STREAM_BLOCK, 0, STREAM_WARPS, "ieee", None)


def _alloc(shape, like: torch.Tensor) -> torch.Tensor:
    return alloc(shape, like.device, FILL_OUTPUTS_WITH_NAN)


def _state(s, B: int, n: int, like: torch.Tensor) -> torch.Tensor:
    if s is None:
        return torch.zeros((B, n), dtype=torch.float32, device=like.device)
    return s.contiguous()


def forward(g, W_hh, h0, c0):
    """``(h, c)``, ``(T, B, n)`` each; the arguments of ``fastunitary::lstm_recurrence``."""
    check_float32("LSTM recurrence", g=g, W_hh=W_hh, h0=h0, c0=c0)
    T, B, G = g.shape
    n = G // 4
    g, W = g.contiguous(), W_hh.contiguous()
    h0, c0 = _state(h0, B, n, g), _state(c0, B, n, g)
    h = _alloc((T, B, n), g)
    c = _alloc((T, B, n), g)
    p = plan(n)
    meta = dict(BLOCK_B=p["BLOCK_B"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
    if p["design"] == "split":
        launch_split(_forward_split, g.device, T, B, n, p, (g, W, h0, c0, h, c), meta,
                     reverse=False)
        return h, c
    kernel = _forward_resident if p["design"] == "resident" else _forward_streamed
    launch(kernel, (triton.cdiv(B, p["BLOCK_B"]),), g.device, g, W, h0, c0, h, c, T, B, n,
           **meta)
    return h, c


# the recomputed pre-activations must equal the forward's IEEE float32 ones, whatever TF32
# setting the process chose (see fastunitary/_precision.py)
@ieee_float32_matmul()
def backward(grad_h, grad_c, g, W_hh, h0, c0, h, c, samples: int = 1):
    """``(grad_g, grad_W_hh, grad_h0, grad_c0)``; the arguments of
    ``fastunitary::lstm_recurrence_backward`` (``samples > 1``: ``grad_W_hh`` per sample,
    as the reference's)."""
    check_float32("LSTM recurrence", g=g, W_hh=W_hh, h0=h0, c0=c0, h=h, c=c)
    T, B, G = g.shape
    n = G // 4
    W = W_hh.contiguous()
    grad_h = grad_h.to(torch.float32).contiguous()  # also materializes stride-0 gradients
    grad_c = grad_c.to(torch.float32).contiguous()
    h, c = h.contiguous(), c.contiguous()
    h0, c0 = _state(h0, B, n, g), _state(c0, B, n, g)
    dz = _alloc((T, B, G), g)
    # z_t = g_t + h_{t-1} W_hh^T for all t at once, written where dz_t will go.
    torch.addmm(g[0], h0, W.t(), out=dz[0])
    if T > 1:
        torch.addmm(g[1:].reshape(-1, G), h[:-1].reshape(-1, n), W.t(), out=dz[1:].view(-1, G))
    p = plan(n)
    programs = triton.cdiv(B, p["BLOCK_B"])
    meta = dict(BLOCK_B=p["BLOCK_B"], BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps_backward"])
    if p["design"] == "resident":
        # written whole by the kernel (NaN-filled in tests so a missed element fails)
        grad_c0 = _alloc((B, n), g)
        launch(_backward_resident, (programs,), g.device, grad_h, grad_c, dz, W, c0, c,
                grad_c0, T, B, n, **meta)
    elif p["design"] == "split":
        # the carry dc_{t+1} f_{t+1} between launches: zero after the last step
        grad_c0 = torch.zeros((B, n), dtype=torch.float32, device=g.device)
        launch_split(_backward_split, g.device, T, B, n, p,
                     (grad_h, grad_c, dz, W, c0, c, grad_c0), meta, reverse=True)
    else:
        # the carry dc_{t+1} f_{t+1} lives here between steps: zero after the last step
        grad_c0 = torch.zeros((B, n), dtype=torch.float32, device=g.device)
        launch(_backward_streamed, (programs,), g.device, grad_h, grad_c, dz, W, c0, c,
                grad_c0, T, B, n, **meta)
    grad_h0 = dz[0] @ W
    if samples > 1:  # vmap's per-sample gradients: the h0 term, then all later steps
        grad_W = per_sample_outer(dz[:1], h0.unsqueeze(0), samples)
        if T > 1:
            grad_W += per_sample_outer(dz[1:], h[:-1], samples)
        return dz, grad_W, grad_h0, grad_c0
    # Weight gradient: one large product over all steps and the batch (plus the h0 term).
    grad_W = dz[0].t() @ h0
    if T > 1:
        grad_W.addmm_(dz[1:].reshape(-1, G).t(), h[:-1].reshape(-1, n))
    return dz, grad_W, grad_h0, grad_c0


def aot_configs(explore: bool = False):
    """Every configuration the dispatch can launch, for ci/compile_check.py.

    Yields ``(name, kernel attribute, signature, constexprs, options, dispatched)``
    (``options``: ``triton.compile``'s, ``num_warps`` and for the split kernels
    ``num_stages``);
    with ``explore``, also the larger resident tiles and streamed tiles (not dispatched)
    that set the limits.
    """
    # the streamed kernels, kept to be timed beside the split ones (LARGE_N_DESIGN)
    extra = {(d, "streamed", STREAM_BLOCK, 0, w, "ieee", None)
             for d, w in zip(("fwd", "bwd"), STREAM_WARPS)}
    if explore:
        extra |= ({(d, "resident", bn, 0, w, "ieee", None) for d in ("fwd", "bwd")
                   for bn in (16, 32, 64) for w in (4, 8)}
                  | {(d, "streamed", bn, 0, w, "ieee", None) for d in ("fwd", "bwd")
                     for bn in (16, 32) for w in (4, 8)}
                  | {(d, "split", SPLIT_BLOCK_N, bk, w, prec, st) for d in ("fwd", "bwd")
                     for bk in (32, 64, 128) for w in (4, 8) for prec in ("ieee", "tf32x3")
                     for st in (1, 3)})
    for setting, dispatched in aot_settings((plan(n) for n in range(1, 2049)), extra):
        yield *aot_entry("lstm_recurrence", globals(), setting, {"BLOCK_B": BLOCK_B}), dispatched
