"""Fused Triton kernels of the recurrence ``h_t = act(W h_{t-1} + u_t)``: one launch per direction.

Layout (the "planes" of ``fastunitary.functional.planes``): a state of ``n`` complex numbers
is the real row ``[Re h | Im h]`` of width ``D = 2n``; a real state has ``D = n``. ``u``,
``h`` and the gradients are ``(T, B, D)`` float32, contiguous; ``W`` is ``(D, D)`` (for a
complex state its real embedding, read as four ``n x n`` blocks ``W_pq``, so any real
``2n x 2n`` matrix is handled exactly). In row form one step is

    z_p = u_p + sum_q h_q W_pq^T        (p, q over the planes: 1 real, 2 complex)
    h   = act(z)                         (modReLU couples the planes through |z|)

Forward (resident and streamed designs; split below): each program owns ``BLOCK_B``
batch rows and all ``n`` columns, loops over all T steps in one launch, and stores every
``h_t``. Backward: the same programs run time in reverse, ``g_t = grad h_t + dz_{t+1} W``
(row form of ``W^T dz``), ``dz_t = act'(z_t) g_t``, storing every ``dz_t`` (which is also
``grad u_t``). What is recomputed rather than stored:
modReLU's pre-activations ``z_t`` are recomputed for all steps before the backward launch
by one large cuBLAS product ``h_{t-1} W^T + u_t`` (cheaper than storing them in the forward
and no extra memory: they are written into the ``dz`` buffer, which the kernel then
overwrites step by step); tanh and relu take their derivative from the stored ``h_t``.
The weight gradient ``sum_t dz_t^T h_{t-1}`` is one large product after the launch, the
modReLU bias gradient a per-program partial sum reduced once (deterministic).

Three designs, chosen by ``n`` (see :func:`plan`):

- **resident** (``n <= RESIDENT_MAX_N``): one program per ``BLOCK_B`` batch rows; W is
  read from HBM once per launch and kept on chip for all T steps (the compiler stages it
  in shared memory and loads the FMA product's operands into registers every step); the
  state stays on chip.
- **split** (larger ``n``, the default there): one program per (``BLOCK_B`` batch rows,
  ``SPLIT_BLOCK_N`` state columns), so a step of a batch block runs on
  ``cdiv(n, SPLIT_BLOCK_N)`` SMs. Each program computes its columns of ``z_t`` from the
  whole ``h_{t-1}``, read back from the output buffer (L2) once every program of its
  batch block has stored its part: the programs of a batch block meet at a barrier each
  step (a counter per batch block; see the split kernels' comment). Backward likewise,
  ``dz_{t+1}`` read back whole. W is read in ``BLOCK_K x SPLIT_BLOCK_N`` tiles from L2
  every step, each program its own columns only.
- **streamed** (``LARGE_N_DESIGN = "streamed"``, kept to be timed beside split): one
  program per batch block computes all columns, re-reading W in ``BLOCK_N x BLOCK_N``
  tiles every step (from L2 after the first: 16 MB at n = 1024 complex fits the H100's
  50 MB L2), with a block-wide barrier between steps.

Cost per step and batch row (``D`` reals of state): forward ``2 D^2`` FLOPs (the product)
plus ~10 D for the activation; backward ``2 D^2`` plus ~20 D. Bytes per step and row from
HBM: ``u_t`` and ``h_t`` (``8 D``) forward; ``grad h_t``, ``z_t`` (or ``h_t``) and ``dz_t``
(``12 D``) backward; W once per launch when resident.

Where the time goes (a bound; the measurement follows): the batch is
the only parallelism, one program per 16 rows, so B <= 16 runs on one SM and B = 64 on
four of an H100's 132. Each program's step is ``2 * 16 * D^2`` fp32 FMA FLOPs on one SM
(about 0.5 TFLOP/s of the chip's 67): about 0.26 us at D = 64 (resident), 1 us at D = 128
and 0.27 ms at D = 2048 (n = 1024 complex, streamed, which also re-reads 16.8 MB of W
from L2 per program per step). HBM traffic is far below that (64 KB per step at D = 128,
B = 64). So the kernels are bound by one SM's arithmetic plus the latency of the
dependent chain (product, activation, store) per step. The design avoids adding to it:
no per-step launches or host synchronization, W never re-read from HBM when resident,
coalesced row-major loads of ``u_t``, prefetched one step ahead. The lever left, to be
measured on a GPU, is splitting the output columns across programs (the persistent
design of DESIGN.md with a grid barrier per step, or per-step launches captured in a
CUDA graph) so that small batches use more than one SM.

Measured on an H200 (triton 3.6, fp32, T = 1000, B = 64; bench/results/
recurrence_kernel_nvidia-h200.json and bench_gpu_nvidia-h200.json), the streamed design
alone (before split existed): complex n = 64 22 us per forward step; n = 128 (D = 256,
inside ScuRNN) about 89 us, where the bound above is about 4 us; n = 256 335 us, slower
than the per-step cuBLAS loop of the reference (141 us). The streamed step is
latency-bound: its ``(D / BLOCK_N)^2`` small W tiles are loaded from L2 and multiplied
one after the other by one SM. The split design spreads them over ``cdiv(n, 16)`` SMs.

Products use ``input_precision="ieee"`` (true fp32, no tf32): a unitary recurrence must
preserve norms over 10^4 steps, which tf32's 10-bit mantissa would not. Offsets into
``(T, B, D)`` tensors are 64-bit (the pointers advance by ``B * D`` per step).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._precision import ieee_float32_matmul
from ..reference.recurrence import weight_gradients_per_sample
from ._host import aot_entry, aot_settings, alloc, check_float32, launch, launch_split, plan_dict

#: modReLU's ``eps`` (added to |z|^2); equal to fastunitary.reference.modrelu.MODRELU_EPS.
MODRELU_EPS = tl.constexpr(1e-12)
ACTIVATION_CODES = {"modrelu": 0, "tanh": 1, "relu": 2, "identity": 3}

#: Largest n kept resident on chip: D = 64 reals of state. Set by the ahead-of-time
#: compile check (ci/compile_check.py --explore): the next tile (complex 64 / real 128)
#: spills on sm_80 and sm_90 whatever the warp count, because the true-fp32 FMA product
#: holds its W operand in registers. (With tf32x3 products those tiles compile without
#: spills, but their accuracy needs a GPU to verify; not used.)
RESIDENT_MAX_N = {True: 32, False: 64}
#: Batch rows per program (the M of every tl.dot, which must be >= 16).
BLOCK_B = 16
#: Tile of the streamed kernels (complex: four W blocks per tile, so a smaller tile) and
#: their warp counts (forward, backward): the largest tiles that compile without spills on
#: sm_80 and sm_90 with triton 3.6 (the GPU machines) and 3.9 (CI) alike; triton 3.6
#: spills one register in the complex modReLU backward at 8 warps, hence 4 there. At 4 it
#: still spills 16 bytes on sm_90 when n is not a multiple of 16 (pointers aligned, sizes
#: not); num_stages=1 avoids that but drops the k-loop pipelining: to be timed on a GPU.
STREAM_BLOCK = {True: 16, False: 32}
STREAM_WARPS = {True: (8, 4), False: (8, 8)}
#: The design of states above RESIDENT_MAX_N: "split" (the hidden units of a step across
#: programs) or "streamed" (one program per batch block; kept to be timed beside it).
LARGE_N_DESIGN = "split"
#: Tiles of the split kernels: BLOCK_N state columns per program (16, the smallest tl.dot
#: operand, for the most programs per step), BLOCK_K of the previous state per product.
SPLIT_BLOCK_N = 16
SPLIT_BLOCK_K = {True: 32, False: 64}
SPLIT_WARPS = 4
#: ``tl.dot``'s input precision in the split kernels: "ieee" (fp32 FMA, no tensor cores) or
#: "tf32x3" (three TF32 tensor-core products, each operand split into a high and a low
#: TF32 part: float32 accuracy but for the dropped low x low term, about 2^-22 relative)
SPLIT_PRECISION = "ieee"
#: Software-pipeline stages of the split kernels' k-loop (Triton's default on CUDA).
SPLIT_STAGES = 3

#: Tests set this to allocate outputs filled with NaN, so unwritten elements fail.
FILL_OUTPUTS_WITH_NAN = False


# -- device functions ---------------------------------------------------------------------
@triton.jit
def _tanh(x):
    """tanh to a few float32 ulps everywhere. ``(1 - e) / (1 + e)`` with ``e = exp(-2|x|)``
    cancels as ``x -> 0`` (relative error ``~ulp / |x|``: 1e-2 at 1e-6, and 0 below 1e-8),
    so below 0.3 the Taylor series through ``x^11`` answers (its next term is 2e-9 of it)."""
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    t = (1.0 - e) / (1.0 + e)
    a2 = a * a
    p = -1382.0 / 155925.0
    p = p * a2 + 62.0 / 2835.0
    p = p * a2 - 17.0 / 315.0
    p = p * a2 + 2.0 / 15.0
    p = p * a2 - 1.0 / 3.0
    p = p * a2 + 1.0
    t = tl.where(a < 0.3, a * p, t)
    return tl.where(x < 0, -t, t)


@triton.jit
def _relu(x):
    # not tl.maximum(x, 0): it lowers to max.f32, which drops a NaN; torch.relu keeps it
    return tl.where(x < 0.0, 0.0, x)


@triton.jit
def _sign(x):
    # torch.sign: 0 at 0, and NaN where x is NaN
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, x * 0.0))


@triton.jit
def _activate(zr, zi, bias, ACT: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """``act(z)`` on one tile; ``zi`` is ignored for a real state."""
    hr = zr
    hi = zi
    if ACT == 0:
        if IS_COMPLEX:  # z * relu(r + b) / r, r = sqrt(|z|^2 + eps); exact division so that
            # b = 0 gives scale == 1.0 and norms are preserved exactly
            r = tl.sqrt_rn(zr * zr + zi * zi + MODRELU_EPS)
            scale = tl.div_rn(_relu(r + bias), r)
            hr = zr * scale
            hi = zi * scale
        else:  # sign(z) relu(|z| + b) exactly, zeroed where |z| + b < 0 so that a NaN stays
            # NaN (reference/modrelu.py)
            hr = tl.where(tl.abs(zr) + bias < 0, 0.0, zr + bias * _sign(zr))
    elif ACT == 1:
        hr = _tanh(zr)
        hi = _tanh(zi)
    elif ACT == 2:
        hr = _relu(zr)
        hi = _relu(zi)
    return hr, hi


@triton.jit
def _activate_backward(ar, ai, gr, gi, bias, ACT: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """``(dz_r, dz_i, bias contribution)`` from the saved tile ``a`` (z for modReLU, else h)."""
    dzr = gr
    dzi = gi
    contrib = gr * 0.0
    if ACT == 0:
        if IS_COMPLEX:  # METHODS.md section 2: s g - c Re(conj(phi) g) phi
            r = tl.sqrt_rn(ar * ar + ai * ai + MODRELU_EPS)
            rb = r + bias
            s = tl.div_rn(_relu(rb), r)
            c = tl.where(rb > 0, tl.div_rn(bias, r), 0.0)
            phr = tl.div_rn(ar, r)
            phi = tl.div_rn(ai, r)
            dot = phr * gr + phi * gi
            dzr = s * gr - c * dot * phr
            dzi = s * gi - c * dot * phi
            # NaN where z or b is (rb), as the reference's Phi: not a silent 0
            contrib = tl.where(rb > 0, dot, tl.where(rb <= 0, 0.0, rb))
        else:  # phi = sign(z): g where |z| + b >= 0, else 0, NaN for a NaN z or b
            a = tl.abs(ar) + bias
            inactive_or_nan = tl.where(a < 0, 0.0, a)
            dzr = tl.where(a >= 0, gr, inactive_or_nan * gr)
            contrib = tl.where(a >= 0, _sign(ar) * gr, inactive_or_nan * gr)
    elif ACT == 1:
        dzr = gr * (1.0 - ar * ar)
        dzi = gi * (1.0 - ai * ai)
    elif ACT == 2:
        dzr = tl.where(ar > 0, gr, 0.0)
        dzi = tl.where(ai > 0, gi, 0.0)
    return dzr, dzi, contrib


# -- resident kernels ---------------------------------------------------------------------
@triton.jit(do_not_specialize=["T", "B"])
def _forward_resident(
    u_ptr, w_ptr, bias_ptr, h0_ptr, out_ptr, T, B, N,
    ACT: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    io_mask = (rows < B)[:, None] & col_ok[None, :]
    D = 2 * N if IS_COMPLEX else N
    io = rows.to(tl.int64)[:, None] * D + cols[None, :]
    # W^T blocks, element [k, j] = W_pq[j, k] = W[p N + j, q N + k]: loaded once per launch.
    w_mask = col_ok[:, None] & col_ok[None, :]
    wt = cols[None, :] * D + cols[:, None]
    wt00 = tl.load(w_ptr + wt, mask=w_mask, other=0.0)
    wt01 = wt00
    wt10 = wt00
    wt11 = wt00
    if IS_COMPLEX:
        wt01 = tl.load(w_ptr + N + wt, mask=w_mask, other=0.0)
        wt10 = tl.load(w_ptr + N * D + wt, mask=w_mask, other=0.0)
        wt11 = tl.load(w_ptr + N * D + N + wt, mask=w_mask, other=0.0)
    bias = 0.0
    if ACT == 0:
        bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
    hr = tl.load(h0_ptr + io, mask=io_mask, other=0.0)
    hi = hr
    if IS_COMPLEX:
        hi = tl.load(h0_ptr + N + io, mask=io_mask, other=0.0)
    step = B.to(tl.int64) * D
    u_ptrs = u_ptr + io
    o_ptrs = out_ptr + io
    # u_t is loaded one step ahead, so that its latency overlaps the previous step's work
    # instead of sitting on the dependent chain of the product
    ur = tl.load(u_ptrs, mask=io_mask, other=0.0)
    ui = ur
    if IS_COMPLEX:
        ui = tl.load(u_ptrs + N, mask=io_mask, other=0.0)
    u_base = u_ptr + io
    for t in range(T):
        # the next step's u (the last step reloads its own: in bounds, unused)
        u_ptrs = u_base + tl.minimum(t + 1, T - 1).to(tl.int64) * step
        ur_next = tl.load(u_ptrs, mask=io_mask, other=0.0)
        ui_next = ur_next
        if IS_COMPLEX:
            ui_next = tl.load(u_ptrs + N, mask=io_mask, other=0.0)
        zr = tl.dot(hr, wt00, ur, input_precision="ieee")
        zi = zr
        if IS_COMPLEX:
            zr = tl.dot(hi, wt01, zr, input_precision="ieee")
            zi = tl.dot(hr, wt10, ui, input_precision="ieee")
            zi = tl.dot(hi, wt11, zi, input_precision="ieee")
        hr, hi = _activate(zr, zi, bias, ACT, IS_COMPLEX)
        tl.store(o_ptrs, hr, mask=io_mask)
        if IS_COMPLEX:
            tl.store(o_ptrs + N, hi, mask=io_mask)
        o_ptrs += step
        ur = ur_next
        ui = ui_next


@triton.jit(do_not_specialize=["T", "B"])
def _backward_resident(
    gh_ptr, saved_ptr, dz_ptr, w_ptr, bias_ptr, bpart_ptr, T, B, N,
    ACT: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    io_mask = (rows < B)[:, None] & col_ok[None, :]
    D = 2 * N if IS_COMPLEX else N
    io = rows.to(tl.int64)[:, None] * D + cols[None, :]
    # W blocks, element [j, k] = W_pq[j, k]: the carry is dh_q = sum_p dz_p W_pq.
    w_mask = col_ok[:, None] & col_ok[None, :]
    wo = cols[:, None] * D + cols[None, :]
    w00 = tl.load(w_ptr + wo, mask=w_mask, other=0.0)
    w01 = w00
    w10 = w00
    w11 = w00
    if IS_COMPLEX:
        w01 = tl.load(w_ptr + N + wo, mask=w_mask, other=0.0)
        w10 = tl.load(w_ptr + N * D + wo, mask=w_mask, other=0.0)
        w11 = tl.load(w_ptr + N * D + N + wo, mask=w_mask, other=0.0)
    bias = 0.0
    if ACT == 0:
        bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
    step = B.to(tl.int64) * D
    last = (T - 1).to(tl.int64) * step
    g_ptrs = gh_ptr + last + io
    a_ptrs = saved_ptr + last + io
    d_ptrs = dz_ptr + last + io
    carry_r = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    carry_i = carry_r
    bsum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for _ in range(T):
        gr = tl.load(g_ptrs, mask=io_mask, other=0.0) + carry_r
        ar = tl.load(a_ptrs, mask=io_mask, other=0.0)
        gi = gr
        ai = ar
        if IS_COMPLEX:
            gi = tl.load(g_ptrs + N, mask=io_mask, other=0.0) + carry_i
            ai = tl.load(a_ptrs + N, mask=io_mask, other=0.0)
        dzr, dzi, contrib = _activate_backward(ar, ai, gr, gi, bias, ACT, IS_COMPLEX)
        tl.store(d_ptrs, dzr, mask=io_mask)
        carry_r = tl.dot(dzr, w00, input_precision="ieee")
        if IS_COMPLEX:
            tl.store(d_ptrs + N, dzi, mask=io_mask)
            carry_r = tl.dot(dzi, w10, carry_r, input_precision="ieee")
            carry_i = tl.dot(dzr, w01, input_precision="ieee")
            carry_i = tl.dot(dzi, w11, carry_i, input_precision="ieee")
        bsum += tl.sum(contrib, axis=0)
        g_ptrs -= step
        a_ptrs -= step
        d_ptrs -= step
    if ACT == 0:
        tl.store(bpart_ptr + pid * N + cols, bsum, mask=col_ok)


# -- streamed kernels ---------------------------------------------------------------------
@triton.jit(do_not_specialize=["T", "B"])
def _forward_streamed(
    u_ptr, w_ptr, bias_ptr, h0_ptr, out_ptr, T, B, N,
    ACT: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    tile = tl.arange(0, BLOCK_N)
    D = 2 * N if IS_COMPLEX else N
    row_off = rows.to(tl.int64)[:, None] * D
    step = B.to(tl.int64) * D
    prev_ptr = h0_ptr  # the previous state: h0, then the output of the previous step
    cur_ptr = out_ptr
    u_step = u_ptr
    for _ in range(T):
        for j0 in range(0, N, BLOCK_N):
            cj = j0 + tile
            cj_ok = cj < N
            m_j = row_ok[:, None] & cj_ok[None, :]
            zr = tl.load(u_step + row_off + cj[None, :], mask=m_j, other=0.0)
            zi = zr
            if IS_COMPLEX:
                zi = tl.load(u_step + row_off + N + cj[None, :], mask=m_j, other=0.0)
            for k0 in range(0, N, BLOCK_N):
                ck = k0 + tile
                ck_ok = ck < N
                m_k = row_ok[:, None] & ck_ok[None, :]
                w_mask = ck_ok[:, None] & cj_ok[None, :]
                wt = cj[None, :] * D + ck[:, None]  # [k, j] = W[p N + j, q N + k]
                hr = tl.load(prev_ptr + row_off + ck[None, :], mask=m_k, other=0.0)
                zr = tl.dot(hr, tl.load(w_ptr + wt, mask=w_mask, other=0.0), zr,
                            input_precision="ieee")
                if IS_COMPLEX:
                    hi = tl.load(prev_ptr + row_off + N + ck[None, :], mask=m_k, other=0.0)
                    zr = tl.dot(hi, tl.load(w_ptr + N + wt, mask=w_mask, other=0.0), zr,
                                input_precision="ieee")
                    zi = tl.dot(hr, tl.load(w_ptr + N * D + wt, mask=w_mask, other=0.0), zi,
                                input_precision="ieee")
                    zi = tl.dot(hi, tl.load(w_ptr + N * D + N + wt, mask=w_mask, other=0.0),
                                zi, input_precision="ieee")
            bias = 0.0
            if ACT == 0:
                bias = tl.load(bias_ptr + cj, mask=cj_ok, other=0.0)[None, :]
            hr_new, hi_new = _activate(zr, zi, bias, ACT, IS_COMPLEX)
            tl.store(cur_ptr + row_off + cj[None, :], hr_new, mask=m_j)
            if IS_COMPLEX:
                tl.store(cur_ptr + row_off + N + cj[None, :], hi_new, mask=m_j)
        # every tile of h_t must be written before any thread reads it in step t + 1
        tl.debug_barrier()
        prev_ptr = cur_ptr
        cur_ptr += step
        u_step += step


@triton.jit(do_not_specialize=["T", "B"])
def _backward_streamed(
    gh_ptr, saved_ptr, dz_ptr, w_ptr, bias_ptr, bpart_ptr, zeros_ptr, T, B, N,
    ACT: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    tile = tl.arange(0, BLOCK_N)
    D = 2 * N if IS_COMPLEX else N
    row_off = rows.to(tl.int64)[:, None] * D
    step = B.to(tl.int64) * D
    last = (T - 1).to(tl.int64) * step
    g_step = gh_ptr + last
    a_step = saved_ptr + last
    d_step = dz_ptr + last
    next_ptr = zeros_ptr  # dz_{t+1}: zeros after the last step
    for _ in range(T):
        for j0 in range(0, N, BLOCK_N):
            cj = j0 + tile
            cj_ok = cj < N
            m_j = row_ok[:, None] & cj_ok[None, :]
            gr = tl.load(g_step + row_off + cj[None, :], mask=m_j, other=0.0)
            gi = gr
            if IS_COMPLEX:
                gi = tl.load(g_step + row_off + N + cj[None, :], mask=m_j, other=0.0)
            for k0 in range(0, N, BLOCK_N):
                ck = k0 + tile
                ck_ok = ck < N
                m_k = row_ok[:, None] & ck_ok[None, :]
                w_mask = ck_ok[:, None] & cj_ok[None, :]
                wo = ck[:, None] * D + cj[None, :]  # [k, j] = W[p N + k, q N + j]
                dr = tl.load(next_ptr + row_off + ck[None, :], mask=m_k, other=0.0)
                gr = tl.dot(dr, tl.load(w_ptr + wo, mask=w_mask, other=0.0), gr,
                            input_precision="ieee")
                if IS_COMPLEX:
                    di = tl.load(next_ptr + row_off + N + ck[None, :], mask=m_k, other=0.0)
                    gr = tl.dot(di, tl.load(w_ptr + N * D + wo, mask=w_mask, other=0.0), gr,
                                input_precision="ieee")
                    gi = tl.dot(dr, tl.load(w_ptr + N + wo, mask=w_mask, other=0.0), gi,
                                input_precision="ieee")
                    gi = tl.dot(di, tl.load(w_ptr + N * D + N + wo, mask=w_mask, other=0.0),
                                gi, input_precision="ieee")
            ar = tl.load(a_step + row_off + cj[None, :], mask=m_j, other=0.0)
            ai = ar
            if IS_COMPLEX:
                ai = tl.load(a_step + row_off + N + cj[None, :], mask=m_j, other=0.0)
            bias = 0.0
            if ACT == 0:
                bias = tl.load(bias_ptr + cj, mask=cj_ok, other=0.0)[None, :]
            dzr, dzi, contrib = _activate_backward(ar, ai, gr, gi, bias, ACT, IS_COMPLEX)
            tl.store(d_step + row_off + cj[None, :], dzr, mask=m_j)
            if IS_COMPLEX:
                tl.store(d_step + row_off + N + cj[None, :], dzi, mask=m_j)
            if ACT == 0:
                b_ptrs = bpart_ptr + pid * N + cj
                tl.store(b_ptrs, tl.load(b_ptrs, mask=cj_ok, other=0.0) + tl.sum(contrib, axis=0),
                         mask=cj_ok)
        tl.debug_barrier()  # dz_t complete before step t - 1 reads it
        next_ptr = d_step
        g_step -= step
        a_step -= step
        d_step -= step


# -- host side ----------------------------------------------------------------------------
# -- split kernels ------------------------------------------------------------------------
# One program per (block of BLOCK_B batch rows, block of BLOCK_N state columns): a step of a
# batch block is spread over cdiv(n, BLOCK_N) programs on as many SMs, each computing its
# columns from the whole previous state, which it reads back from global memory (L2)
# after the block's programs have all written it. The programs of a batch block meet once
# per step at a barrier: the block's counter ``sync_ptr[pid_b]``, raised by each program
# once its part of the step is stored (release), awaited until it counts every program
# (acquire). On a GPU one launch runs all steps (the launch's programs must all be
# resident: the host launches at most as many as there are SMs). Triton's interpreter
# runs a grid's programs one after the other, so there a launch over all steps holds one
# program per batch block, and wider blocks are launched one step at a time
# (``n_steps = 1``): the launches order the steps (``_host.launch_split``).
@triton.jit
def _wait_for_block(sync_ptr, target):
    """Spin until the batch block's counter reaches ``target`` arrivals (acquire: the
    arrivals' stores are then visible), then let every thread of the program go on."""
    seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _arrive(sync_ptr):
    """Count this program's part of the step as stored: every thread's stores first (the
    block-wide barrier), then one release increment."""
    tl.debug_barrier()
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")


@triton.jit
def _split_tile(block0, B, N, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """A split program's batch block, its batch rows and units (columns), and their mask:
    ``(pid_b, rows, row_ok, cj, cj_ok, m_j)``."""
    pid_b = block0 + tl.program_id(0)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    cj = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cj_ok = cj < N
    return pid_b, rows, row_ok, cj, cj_ok, row_ok[:, None] & cj_ok[None, :]


@triton.jit(do_not_specialize=["T", "B", "t_first", "n_steps", "block0"])
def _forward_split(
    u_ptr, w_ptr, bias_ptr, h0_ptr, out_ptr, sync_ptr, T, B, N, t_first, n_steps, block0,
    ACT: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_b, rows, row_ok, cj, cj_ok, m_j = _split_tile(block0, B, N, BLOCK_B, BLOCK_N)
    groups = tl.num_programs(1)
    kk = tl.arange(0, BLOCK_K)
    D = 2 * N if IS_COMPLEX else N
    row_off = rows.to(tl.int64)[:, None] * D
    step = B.to(tl.int64) * D
    counter = sync_ptr + pid_b  # this batch block's, zero before the launch
    bias = 0.0
    if ACT == 0:
        bias = tl.load(bias_ptr + cj, mask=cj_ok, other=0.0)[None, :]
    for s in range(n_steps):
        t = t_first + s
        # u_t needs no other program: loaded before the wait, its latency hidden in it
        u_t = u_ptr + t.to(tl.int64) * step
        zr = tl.load(u_t + row_off + cj[None, :], mask=m_j, other=0.0)
        zi = zr
        if IS_COMPLEX:
            zi = tl.load(u_t + row_off + N + cj[None, :], mask=m_j, other=0.0)
        if s > 0:
            _wait_for_block(counter, groups * s)
        prev_ptr = out_ptr + (t - 1).to(tl.int64) * step
        if t == 0:
            prev_ptr = h0_ptr
        for k0 in range(0, N, BLOCK_K):
            ck = k0 + kk
            ck_ok = ck < N
            m_k = row_ok[:, None] & ck_ok[None, :]
            w_mask = ck_ok[:, None] & cj_ok[None, :]
            wt = cj[None, :] * D + ck[:, None]  # [k, j] = W[p N + j, q N + k]
            # .cg: from L2, where the other programs' stores of h_{t-1} are, never from a
            # stale L1 line
            hr = tl.load(prev_ptr + row_off + ck[None, :], mask=m_k, other=0.0,
                         cache_modifier=".cg")
            zr = tl.dot(hr, tl.load(w_ptr + wt, mask=w_mask, other=0.0), zr,
                        input_precision=PRECISION)
            if IS_COMPLEX:
                hi = tl.load(prev_ptr + row_off + N + ck[None, :], mask=m_k, other=0.0,
                             cache_modifier=".cg")
                zr = tl.dot(hi, tl.load(w_ptr + N + wt, mask=w_mask, other=0.0), zr,
                            input_precision=PRECISION)
                zi = tl.dot(hr, tl.load(w_ptr + N * D + wt, mask=w_mask, other=0.0), zi,
                            input_precision=PRECISION)
                zi = tl.dot(hi, tl.load(w_ptr + N * D + N + wt, mask=w_mask, other=0.0), zi,
                            input_precision=PRECISION)
        hr_new, hi_new = _activate(zr, zi, bias, ACT, IS_COMPLEX)
        o_t = out_ptr + t.to(tl.int64) * step + row_off
        tl.store(o_t + cj[None, :], hr_new, mask=m_j)
        if IS_COMPLEX:
            tl.store(o_t + N + cj[None, :], hi_new, mask=m_j)
        if s + 1 < n_steps:
            _arrive(counter)


@triton.jit(do_not_specialize=["T", "B", "t_first", "n_steps", "block0"])
def _backward_split(
    gh_ptr, saved_ptr, dz_ptr, w_ptr, bias_ptr, bpart_ptr, sync_ptr, T, B, N, t_first, n_steps,
    block0,
    ACT: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    """Steps ``t_first, t_first - 1, ...`` (``n_steps`` of them): ``g_t = grad h_t +
    dz_{t+1} W`` on this program's columns, ``dz_t = act'(saved_t) g_t`` stored in place
    of ``saved_t`` where that is the dz buffer (modReLU's recomputed z)."""
    pid_b, rows, row_ok, cj, cj_ok, m_j = _split_tile(block0, B, N, BLOCK_B, BLOCK_N)
    groups = tl.num_programs(1)
    kk = tl.arange(0, BLOCK_K)
    D = 2 * N if IS_COMPLEX else N
    row_off = rows.to(tl.int64)[:, None] * D
    step = B.to(tl.int64) * D
    counter = sync_ptr + pid_b  # this batch block's, zero before the launch
    bias = 0.0
    if ACT == 0:
        bias = tl.load(bias_ptr + cj, mask=cj_ok, other=0.0)[None, :]
    bsum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for s in range(n_steps):
        t = t_first - s
        # Unlike the forward's u_t, this step's own inputs (grad h_t, the saved state) are
        # loaded after the wait: loaded before it, ptxas kept a 64-bit value on the stack
        # in the complex backward on sm_80 (triton 3.9), in every order tried
        if s > 0:
            _wait_for_block(counter, groups * s)
        at = t.to(tl.int64) * step + row_off
        gr = tl.load(gh_ptr + at + cj[None, :], mask=m_j, other=0.0)
        gi = gr
        if IS_COMPLEX:
            gi = tl.load(gh_ptr + at + N + cj[None, :], mask=m_j, other=0.0)
        if t + 1 < T:
            next_ptr = dz_ptr + (t + 1).to(tl.int64) * step + row_off
            for k0 in range(0, N, BLOCK_K):
                ck = k0 + kk
                ck_ok = ck < N
                m_k = row_ok[:, None] & ck_ok[None, :]
                w_mask = ck_ok[:, None] & cj_ok[None, :]
                wo = ck[:, None] * D + cj[None, :]  # [k, j] = W[p N + k, q N + j]
                dr = tl.load(next_ptr + ck[None, :], mask=m_k, other=0.0, cache_modifier=".cg")
                gr = tl.dot(dr, tl.load(w_ptr + wo, mask=w_mask, other=0.0), gr,
                            input_precision=PRECISION)
                if IS_COMPLEX:
                    di = tl.load(next_ptr + N + ck[None, :], mask=m_k, other=0.0,
                                 cache_modifier=".cg")
                    gr = tl.dot(di, tl.load(w_ptr + N * D + wo, mask=w_mask, other=0.0), gr,
                                input_precision=PRECISION)
                    gi = tl.dot(dr, tl.load(w_ptr + N + wo, mask=w_mask, other=0.0), gi,
                                input_precision=PRECISION)
                    gi = tl.dot(di, tl.load(w_ptr + N * D + N + wo, mask=w_mask, other=0.0),
                                gi, input_precision=PRECISION)
        ar = tl.load(saved_ptr + at + cj[None, :], mask=m_j, other=0.0)
        ai = ar
        if IS_COMPLEX:
            ai = tl.load(saved_ptr + at + N + cj[None, :], mask=m_j, other=0.0)
        dzr, dzi, contrib = _activate_backward(ar, ai, gr, gi, bias, ACT, IS_COMPLEX)
        tl.store(dz_ptr + at + cj[None, :], dzr, mask=m_j)
        if IS_COMPLEX:
            tl.store(dz_ptr + at + N + cj[None, :], dzi, mask=m_j)
        bsum += tl.sum(contrib, axis=0)
        if s + 1 < n_steps:
            _arrive(counter)
    if ACT == 0:  # this program's columns of its batch block's slot, over this launch's steps
        b_ptrs = bpart_ptr + pid_b * N + cj
        tl.store(b_ptrs, tl.load(b_ptrs, mask=cj_ok, other=0.0) + bsum, mask=cj_ok)


def plan(n: int, is_complex: bool) -> dict:
    """Which kernels and tile sizes run a state of ``n`` (complex or real) values.

    Returns ``{"design": "resident" | "split" | "streamed", "BLOCK_B", "BLOCK_N",
    "BLOCK_K", "num_warps", "PRECISION", "num_stages"}`` for the forward, and each of the
    last four again with ``_backward`` for the backward (``_host.plan_dict``; ``BLOCK_K``:
    split only, else 0; ``PRECISION``: the products' ``input_precision``, "ieee" but in the
    split kernels; ``num_stages``: split only, else None: Triton's default).
    The rule depends on ``n`` only: never on T or B, so a new batch size or sequence
    length never triggers a recompilation or a re-tune.
    """
    if n <= RESIDENT_MAX_N[is_complex]:
        block_n = max(16, triton.next_power_of_2(n))
        width = block_n * (2 if is_complex else 1)  # reals of state per row, padded
        warps = 4 if width <= 32 else 8
        return plan_dict("resident", BLOCK_B, block_n, 0, warps, "ieee", None)
    if LARGE_N_DESIGN == "split":
        return plan_dict("split", BLOCK_B, SPLIT_BLOCK_N, SPLIT_BLOCK_K[is_complex], SPLIT_WARPS,
                         SPLIT_PRECISION, SPLIT_STAGES)
    return plan_dict("streamed", BLOCK_B, STREAM_BLOCK[is_complex], 0, STREAM_WARPS[is_complex],
                     "ieee", None)


def _alloc(shape, like: torch.Tensor) -> torch.Tensor:
    return alloc(shape, like.device, FILL_OUTPUTS_WITH_NAN)


def forward(u, W, bias, h0, activation: str, is_complex: bool) -> torch.Tensor:
    """All states ``(T, B, D)``; the arguments of ``fastunitary::recurrence``."""
    check_float32("recurrence", u=u, W=W)
    T, B, D = u.shape
    n = D // 2 if is_complex else D
    u, W = u.contiguous(), W.contiguous()
    h0 = torch.zeros((B, D), dtype=u.dtype, device=u.device) if h0 is None else h0.contiguous()
    bias = u.new_zeros(n) if bias is None else bias.contiguous()
    out = _alloc((T, B, D), u)
    p = plan(n, is_complex)
    meta = dict(ACT=ACTIVATION_CODES[activation], IS_COMPLEX=is_complex, BLOCK_B=p["BLOCK_B"],
                BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps"])
    if p["design"] == "split":
        launch_split(_forward_split, u.device, T, B, n, p, (u, W, bias, h0, out), meta,
                     reverse=False)
        return out
    kernel = _forward_resident if p["design"] == "resident" else _forward_streamed
    launch(kernel, (triton.cdiv(B, p["BLOCK_B"]),), u.device, u, W, bias, h0, out, T, B, n,
           **meta)
    return out


# the recomputed pre-activations must equal the forward's IEEE float32 ones, whatever TF32
# setting the process chose (see fastunitary/_precision.py)
@ieee_float32_matmul()
def backward(grad_h, u, W, bias, h0, h, activation: str, is_complex: bool, samples: int = 1):
    """``(grad_u, grad_W, grad_bias, grad_h0)``; the arguments of ``fastunitary::recurrence_backward``
    (``samples > 1``: ``grad_W`` and ``grad_bias`` per sample, as the reference's)."""
    check_float32("recurrence", h=h, W=W)
    T, B, D = h.shape
    n = D // 2 if is_complex else D
    W = W.contiguous()
    grad_h = grad_h.to(torch.float32).contiguous()  # also materializes stride-0 gradients
    h0 = torch.zeros((B, D), dtype=h.dtype, device=h.device) if h0 is None else h0.contiguous()
    has_bias = activation == "modrelu"
    bias_c = (u.new_zeros(n) if bias is None else bias.contiguous()) if has_bias else h.new_zeros(1)
    dz = _alloc((T, B, D), h)
    if activation == "modrelu":
        # z_t = h_{t-1} W^T + u_t for all t at once, written where dz_t will go.
        torch.addmm(u[0], h0, W.t(), out=dz[0])
        if T > 1:
            torch.addmm(u[1:].reshape(-1, D), h[:-1].reshape(-1, D), W.t(),
                        out=dz[1:].view(-1, D))
        saved = dz
    else:
        saved = h.contiguous()
    p = plan(n, is_complex)
    programs = triton.cdiv(B, p["BLOCK_B"])
    # per-program partial sums of the bias gradient: written whole by the resident kernel
    # (NaN-filled in tests so a missed row fails), accumulated into by the others (the
    # split kernels: each program into its columns of its batch block's row)
    resident = p["design"] == "resident"
    bpart = (_alloc((programs, n), h) if resident else
             torch.zeros((programs, n), dtype=torch.float32, device=h.device))
    meta = dict(ACT=ACTIVATION_CODES[activation], IS_COMPLEX=is_complex, BLOCK_B=p["BLOCK_B"],
                BLOCK_N=p["BLOCK_N"], num_warps=p["num_warps_backward"])
    if p["design"] == "split":
        launch_split(_backward_split, h.device, T, B, n, p,
                     (grad_h, saved, dz, W, bias_c, bpart), meta, reverse=True)
    elif resident:
        launch(_backward_resident, (programs,), h.device, grad_h, saved, dz, W, bias_c, bpart,
                T, B, n, **meta)
    else:
        zeros = torch.zeros((B, D), dtype=torch.float32, device=h.device)
        launch(_backward_streamed, (programs,), h.device, grad_h, saved, dz, W, bias_c, bpart,
                zeros, T, B, n, **meta)
    grad_h0 = dz[0] @ W
    if samples > 1:  # vmap's per-sample gradients
        grad_W, grad_bias = weight_gradients_per_sample(
            grad_h, dz, u, W, bias if has_bias else None, h0, h, is_complex, samples)
        return dz, grad_W, grad_bias, grad_h0
    # Weight gradient: one large product over all steps and the batch (plus the h0 term).
    grad_W = dz[0].t() @ h0
    if T > 1:
        grad_W.addmm_(dz[1:].reshape(-1, D).t(), h[:-1].reshape(-1, D))
    grad_bias = bpart.sum(0) if (has_bias and bias is not None) else None
    return dz, grad_W, grad_bias, grad_h0


def aot_configs(explore: bool = False):
    """Every configuration the dispatch can launch, for ci/compile_check.py.

    Yields ``(name, kernel attribute, signature, constexprs, options, dispatched)``
    (``options``: ``triton.compile``'s, ``num_warps`` and for the split kernels
    ``num_stages``); with ``explore``, also the larger resident tiles and the split
    kernels' other settings (not dispatched), which set the limits.
    """
    for is_complex in (False, True):
        extra = set()
        if explore:
            extra = ({(d, "resident", bn, 0, w, "ieee", None) for d in ("fwd", "bwd")
                      for bn in (16, 32, 64, 128) for w in (4, 8)}
                     | {(d, "split", SPLIT_BLOCK_N, bk, w, prec, st) for d in ("fwd", "bwd")
                        for bk in (32, 64, 128) for w in (4, 8) for prec in ("ieee", "tf32x3")
                        for st in (1, 3)})
        # the streamed kernels, kept to be timed beside the split ones (LARGE_N_DESIGN)
        extra |= {(d, "streamed", STREAM_BLOCK[is_complex], 0, w, "ieee", None)
                  for d, w in zip(("fwd", "bwd"), STREAM_WARPS[is_complex])}
        kind = "complex" if is_complex else "real"
        for setting, dispatched in aot_settings((plan(n, is_complex) for n in range(1, 2049)),
                                                extra):
            for act, code in ACTIVATION_CODES.items():
                const = {"ACT": code, "IS_COMPLEX": is_complex, "BLOCK_B": BLOCK_B}
                yield *aot_entry("recurrence", globals(), setting, const, f"{kind} {act} "), dispatched
