"""The adding problem: sum the two marked values of a long sequence (METHODS.md section 8).

Inputs have length ``L`` and two channels: values uniform in [0, 1], and a marker channel
with exactly two ones, one at a uniform position in the first half (``[0, L // 2)``) and
one in the second (``[L // 2, L)``). The target is the sum of the two marked values, read
after the last step; the loss is MSE. Always predicting 1 scores the baseline
``Var(a + b) = 1/6 ~ 0.167``.
"""

from __future__ import annotations

import numpy as np
import torch

BASELINE = 1.0 / 6.0


def adding_arrays(
    n: int, length: int, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences: inputs ``(n, L, 2)`` float32 and targets ``(n,)`` float32. Vectorized."""
    if length < 2:
        raise ValueError(f"length L must be >= 2, got {length}")
    rng = np.random.default_rng() if rng is None else rng
    values = rng.random((n, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    marks = np.zeros((n, length), dtype=np.float32)
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    return np.stack([values, marks], axis=-1), target.astype(np.float32)


def adding_batch(
    batch_size: int,
    length: int,
    *,
    rng: np.random.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh batch, time-major: inputs ``(L, batch_size, 2)`` and targets ``(batch_size,)``."""
    x, y = adding_arrays(batch_size, length, rng=rng)
    return (torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2))).to(device),
            torch.from_numpy(y).to(device))
