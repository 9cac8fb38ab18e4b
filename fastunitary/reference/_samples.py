"""Pieces the recurrences' backwards share: the previous states, and per-sample sums.

Under ``vmap`` an op's batching rule stacks the samples along its batch axis,
sample-major: in a ``(T, S B, k)`` tensor the rows ``s B ... (s + 1) B - 1`` are sample
``s``. The backward, told ``S``, sums each weight gradient per sample with these instead
of over the batch.
"""

from __future__ import annotations

import torch


def previous_states(h0: torch.Tensor | None, h: torch.Tensor, start: int = 0,
                    stop: int | None = None) -> torch.Tensor:
    """``h_{t-1}`` for the steps ``t`` in ``[start, stop)`` (default all ``T``) of the
    states ``h`` ``(T, B, d)``: ``(stop - start, B, d)``, a view of ``h`` unless the range
    starts at step 0, where ``h0`` (zeros when ``None``) comes first."""
    stop = h.shape[0] if stop is None else stop
    if start > 0:
        return h[start - 1:stop - 1]
    first = h.new_zeros(h.shape[1:]) if h0 is None else h0
    return torch.cat([first.unsqueeze(0), h[:stop - 1]])


def per_sample_sum(rows: torch.Tensor, samples: int) -> torch.Tensor:
    """``(T, S B, k)`` -> ``(S, k)``: the sum over time and over each sample's ``B`` rows."""
    return rows.unflatten(1, (samples, -1)).sum(dim=(0, 2))


#: Elements of each input a step of per_sample_outer copies: 2^20 floats = 4 MiB.
CHUNK_ELEMENTS = 1 << 20


def per_sample_outer(left: torch.Tensor, right: torch.Tensor, samples: int) -> torch.Tensor:
    """``(T, S B, i)``, ``(T, S B, j)`` -> ``(S, i, j)``: ``sum_t left_t^T right_t`` over
    each sample's rows: batched products over chunks of steps (each chunk is copied into
    sample-major order, so the extra memory is bounded whatever ``T``)."""
    T, rows = left.shape[:2]
    step = max(1, CHUNK_ELEMENTS // max(1, rows * max(left.shape[-1], right.shape[-1])))
    total = None
    for t0 in range(0, T, step):
        a, b = (x[t0:t0 + step].unflatten(1, (samples, -1)).movedim(1, 0).flatten(1, 2)
                for x in (left, right))
        part = a.mT @ b
        total = part if total is None else total.add_(part)
    return total
