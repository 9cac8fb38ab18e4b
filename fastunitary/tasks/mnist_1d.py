"""MNIST-1D (METHODS.md section 8): 4000 train / 1000 test sequences of length 40, 10
classes, regenerated locally by the ``mnist1d`` package (``pip install mnist1d``) with its
published default arguments (seed 42); nothing is downloaded.

The shuffled variant permutes time with the package's own ``shuffle_seq`` option (one
fixed permutation for all sequences). Values are the package's, centred and scaled to unit
standard deviation over the whole set.
"""

from __future__ import annotations

import functools

import numpy as np

LENGTH = 40
N_CLASSES = 10
#: test accuracies of the MNIST-1D paper (Greydanus, 2020), for comparison
PUBLISHED_ACCURACY = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91}


@functools.lru_cache(maxsize=4)
def _generate(shuffled: bool, seed: int) -> dict:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError(
            "MNIST-1D needs the mnist1d package, which regenerates the data locally: "
            "pip install mnist1d (or the fastunitary[dev] extra)") from e
    import random

    args = get_dataset_args()
    args.shuffle_seq, args.seed = shuffled, seed
    # make_dataset reseeds numpy's and Python's global generators: give them back
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def mnist1d_arrays(split: str, *, shuffled: bool = False,
                   seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``x`` ``(n, 40, 1)`` float32 and ``y`` ``(n,)`` int64 for ``"train"`` (4000) or
    ``"test"`` (1000). ``seed`` is the generator's (42: the published data set)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = _generate(bool(shuffled), int(seed))
    suffix = "" if split == "train" else "_test"
    x, y = data["x" + suffix], data["y" + suffix]
    return x.astype(np.float32)[..., None], y.astype(np.int64)
