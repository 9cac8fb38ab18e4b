"""The copying problem: remember ten symbols over a delay ``T`` (METHODS.md section 8).

Alphabet: blank 0, symbols 1-8, marker 9. Sequences have length ``T + 20`` and the loss is
cross-entropy over all positions. Two conventions are in use:

``"scornn"`` (scoRNN/scuRNN/ENRNN code, the default)::

    input : s1..s10, 0 x (T-1), 9, 0 x 10        marker at index T + 9
    target: 0 x (T+10), s1..s10

``"exprnn"`` (expRNN and MomentumRNN code): the marker comes one step later, so the first
symbol is due on the step the marker is read::

    input : s1..s10, 0 x T, 9, 0 x 9             marker at index T + 10
    target: 0 x (T+10), s1..s10

A model that outputs blanks and then guesses uniformly among the 8 symbols scores the
baseline ``10 ln 8 / (T + 20)`` (0.0204 at T = 1000).
"""

from __future__ import annotations

import math

import numpy as np
import torch

CONVENTIONS = ("scornn", "exprnn")
N_SYMBOLS = 10  # copied symbols
VOCAB = 10  # input alphabet: blank, 8 symbols, marker
N_CLASSES = 9  # output alphabet: blank and 8 symbols


def copying_baseline(delay: int) -> float:
    """Cross-entropy of the blanks-then-uniform-guess strategy: ``10 ln 8 / (T + 20)``."""
    if delay < 1:  # as the generator: -20 divided by zero, 0 gave a task that does not exist
        raise ValueError(f"delay T must be >= 1, got {delay}")
    return N_SYMBOLS * math.log(8) / (delay + 2 * N_SYMBOLS)


def copying_arrays(
    n: int, delay: int, *, convention: str = "scornn", rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences as int64 arrays ``(n, T + 20)``: inputs and targets. Vectorized."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if delay < 1:
        raise ValueError(f"delay T must be >= 1, got {delay}")
    rng = np.random.default_rng() if rng is None else rng
    L = delay + 2 * N_SYMBOLS
    symbols = rng.integers(1, 9, size=(n, N_SYMBOLS), dtype=np.int64)
    x = np.zeros((n, L), dtype=np.int64)
    y = np.zeros((n, L), dtype=np.int64)
    x[:, :N_SYMBOLS] = symbols
    marker = delay + N_SYMBOLS - 1 if convention == "scornn" else delay + N_SYMBOLS
    x[:, marker] = 9
    y[:, L - N_SYMBOLS :] = symbols
    return x, y


def copying_batch(
    batch_size: int,
    delay: int,
    *,
    convention: str = "scornn",
    rng: np.random.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh batch, time-major: inputs and targets, each ``(T + 20, batch_size)`` int64."""
    x, y = copying_arrays(batch_size, delay, convention=convention, rng=rng)
    return (
        torch.from_numpy(x.T.copy()).to(device),
        torch.from_numpy(y.T.copy()).to(device),
    )
