"""The tasks as HuggingFace ``datasets`` splits in torch format.

    from fastunitary.tasks.splits import load_task
    splits = load_task("copying", delay=1000, n_train=100_000)   # DatasetDict train/test
    batch = splits["train"][:32]          # {"x": (32, 1020) int64, "y": (32, 1020) int64}

Every split is generated (or read) as numpy arrays by the task's own vectorized code and
handed to Arrow as fixed-size list arrays over the same buffers, with a fingerprint named
after the task's options: no per-row Python, no hashing of the data, so 100 000 copying
sequences of length 1020 take about a second. Nothing is downloaded (``HF_HUB_OFFLINE``
plays no part): the synthetic tasks are drawn from seeded generators, the digits come
with scikit-learn, Fashion-MNIST from Debian's package or a local folder.

Rows are sequences, batch first (``torch.utils.data.DataLoader`` stacks them to
``(B, T, ...)``; the modules take ``batch_first=True`` or a transpose). Token columns are
stored as uint8 and come out as int64.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_positive_int
from .adding import adding_arrays
from .copying import copying_arrays
from .digits import digits_arrays
from .fashion_mnist import fashion_mnist_arrays
from .mnist_1d import mnist1d_arrays

TASKS = ("copying", "adding", "digits", "permuted_digits", "fashion_mnist",
         "permuted_fashion_mnist", "mnist1d", "shuffled_mnist1d")


def arrow_dataset(columns: dict[str, np.ndarray], fingerprint: str):
    """A torch-format ``datasets.Dataset`` over ``columns`` (equal first dimensions, one
    row each), each column a nest of fixed-size lists over its numpy buffer."""
    import datasets
    import pyarrow as pa

    def fixed(a: np.ndarray):
        arr = pa.array(np.ascontiguousarray(a).reshape(-1))
        for d in reversed(a.shape[1:]):
            arr = pa.FixedSizeListArray.from_arrays(arr, d)
        return arr

    lengths = {len(a) for a in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns must have equal lengths, got {lengths}")
    table = pa.table({name: fixed(a) for name, a in columns.items()})
    ds = datasets.Dataset(datasets.table.InMemoryTable(table), fingerprint=fingerprint)
    return ds.with_format("torch")


def split_streams(seed: int) -> dict[str, np.random.Generator]:
    """The generators of a synthetic task's splits: ``default_rng(seed)`` for train, and
    for test a child of ``seed``'s seed sequence (``spawn_key=(1,)``), which no integer
    seed's stream equals. (A test stream of ``default_rng(seed + 1)`` was the start of the
    next seed's training split: a model trained on ``seed=1`` had seen ``seed=0``'s test
    set.)"""
    return {"train": np.random.default_rng(seed),
            "test": np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))}


def _splits(make, n_train: int, n_test: int, seed: int, tag: str):
    import datasets

    for name, n in (("n_train", n_train), ("n_test", n_test)):
        check_positive_int(name, n)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    streams = split_streams(int(seed))
    return datasets.DatasetDict({
        split: arrow_dataset(make(n, streams[split]), f"{tag}-{split}-{n}-{seed}-v2")
        for split, n in (("train", n_train), ("test", n_test))
    })


def copying_splits(delay: int, *, n_train: int = 10_000, n_test: int = 1_000,
                   convention: str = "scornn", seed: int = 0):
    """``x``, ``y``: ``(T + 20,)`` tokens per row (see :mod:`fastunitary.tasks.copying`)."""
    def make(n, rng):
        x, y = copying_arrays(n, delay, convention=convention, rng=rng)
        return {"x": x.astype(np.uint8), "y": y.astype(np.uint8)}
    return _splits(make, n_train, n_test, seed, f"copying-{delay}-{convention}")


def adding_splits(length: int, *, n_train: int = 10_000, n_test: int = 1_000, seed: int = 0):
    """``x``: ``(L, 2)`` float32 per row (values, markers); ``y``: ``()`` float32."""
    def make(n, rng):
        x, y = adding_arrays(n, length, rng=rng)
        return {"x": x, "y": y}
    return _splits(make, n_train, n_test, seed, f"adding-{length}")


def _fixed_splits(arrays, tag: str):
    """A data set with a fixed split: ``arrays(split) -> (x, y)``."""
    import datasets

    return datasets.DatasetDict({
        split: arrow_dataset(dict(zip("xy", arrays(split))), f"{tag}-{split}")
        for split in ("train", "test")})


def _image_splits(arrays, name: str, permuted: bool, seed: int, **options):
    tag = f"{name}-{'permuted-' + str(seed) if permuted else 'sequential'}"
    return _fixed_splits(lambda split: arrays(split, permuted=permuted, seed=seed, **options), tag)


def digits_splits(*, permuted: bool = False, seed: int = 0):
    """The fixed split of :mod:`fastunitary.tasks.digits`: ``x`` ``(64, 1)`` float32 per row,
    ``y`` the class (``seed`` picks the permutation when ``permuted``)."""
    return _image_splits(digits_arrays, "digits", permuted, seed)


def fashion_mnist_splits(*, permuted: bool = False, seed: int = 0, root=None):
    """Fashion-MNIST (:mod:`fastunitary.tasks.fashion_mnist`): ``x`` ``(784, 1)`` float32,
    ``y`` the class; 60 000 train and 10 000 test rows."""
    name = "fashion-mnist" + ("" if root is None else f"-{root}")
    return _image_splits(fashion_mnist_arrays, name, permuted, seed, root=root)


def mnist1d_splits(*, shuffled: bool = False, seed: int = 42):
    """MNIST-1D (:mod:`fastunitary.tasks.mnist_1d`): ``x`` ``(40, 1)`` float32, ``y`` the
    class; 4000 train and 1000 test rows (``seed``: the generator's, 42 published)."""
    tag = f"mnist1d-{'shuffled' if shuffled else 'sequential'}-{seed}"
    return _fixed_splits(lambda split: mnist1d_arrays(split, shuffled=shuffled, seed=seed), tag)


def load_task(name: str, **options):
    """``datasets.DatasetDict`` with ``"train"`` and ``"test"`` for a task of :data:`TASKS`.

    Options: copying ``delay``, ``convention``, ``n_train``, ``n_test``, ``seed``; adding
    ``length``, ``n_train``, ``n_test``, ``seed``; digits ``seed``; fashion_mnist ``seed``,
    ``root`` (the IDX folder); mnist1d ``seed`` (the generator's, 42 published).
    """
    if name == "copying":
        return copying_splits(**options)
    if name == "adding":
        return adding_splits(**options)
    if name in ("digits", "permuted_digits"):
        return digits_splits(permuted=name == "permuted_digits", **options)
    if name in ("mnist1d", "shuffled_mnist1d"):
        return mnist1d_splits(shuffled=name.startswith("shuffled_"), **options)
    if name in ("fashion_mnist", "permuted_fashion_mnist"):
        return fashion_mnist_splits(permuted=name.startswith("permuted_"), **options)
    raise ValueError(f"task must be one of {TASKS}, got {name!r}")
