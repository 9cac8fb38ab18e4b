"""Sequential and permuted digits: an 8x8 image fed one pixel per step (METHODS.md section 8).

scikit-learn's bundled ``load_digits`` (1797 images of 8x8 pixels, values 0..16, ten
classes; no download). Fixed split: the first half of the images (898) trains, the second
half (899) tests. Each image is a sequence of ``T = 64`` steps of one pixel, row-major,
scaled to [0, 1]; the ``permuted`` variant applies one fixed permutation of the 64 pixel
positions to every image, ``numpy.random.RandomState(seed).permutation(64)``. The label is
read after the last step. An RBF SVM scores about 0.97 on this split (METHODS.md).

scikit-learn is imported here only (``pip install scikit-learn``, part of the ``dev``
extra), so the core of fastunitary does not need it.
"""

from __future__ import annotations

import numpy as np
import torch

LENGTH = 64
N_CLASSES = 10


def permutation(seed: int, length: int) -> np.ndarray:
    """The fixed pixel permutation of the permuted tasks,
    ``numpy.random.RandomState(seed).permutation(length)`` (METHODS.md section 8)."""
    if not 0 <= seed < 2**32:  # RandomState's range: refused here, not for every task
        raise ValueError(f"seed must be in [0, 2**32) for a permuted task (numpy's "
                         f"RandomState draws its permutation), got {seed}")
    return np.random.RandomState(seed).permutation(length)


def digits_arrays(split: str, *, permuted: bool = False, seed: int = 0):
    """``(x, y)``: ``x`` ``(n, 64, 1)`` float32 in [0, 1], ``y`` ``(n,)`` int64.

    Args:
        split: ``"train"`` (the first 898 images) or ``"test"`` (the other 899).
        permuted: apply the fixed pixel permutation of ``seed``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the digits task needs scikit-learn: pip install scikit-learn") from e
    data = load_digits()
    x = (data.images.reshape(-1, LENGTH) / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    half = len(x) // 2
    x, y = (x[:half], y[:half]) if split == "train" else (x[half:], y[half:])
    if permuted:
        x = x[:, permutation(seed, LENGTH)]
    return x[..., None], y


def digits_tensors(split: str, *, permuted: bool = False, seed: int = 0, device=None):
    """:func:`digits_arrays` as time-major tensors: ``x`` ``(64, n, 1)``, ``y`` ``(n,)``."""
    x, y = digits_arrays(split, permuted=permuted, seed=seed)
    return (torch.from_numpy(x).transpose(0, 1).contiguous().to(device),
            torch.from_numpy(y).to(device))
