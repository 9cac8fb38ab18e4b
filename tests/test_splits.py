"""fastunitary.tasks.splits: the tasks as HuggingFace datasets splits (torch format)."""

import time

import numpy as np
import pytest
import torch

from fastunitary.tasks import copying_arrays, digits_arrays
from fastunitary.tasks.splits import arrow_dataset, load_task

# the dev extra installs it (CI); the lent GPU machines' image has no HuggingFace datasets
pytest.importorskip("datasets")


def test_copying_splits_match_the_generator_and_are_seeded():
    s = load_task("copying", delay=7, n_train=50, n_test=20, seed=4)
    assert s["train"].num_rows == 50 and s["test"].num_rows == 20
    b = s["train"][:50]
    assert b["x"].shape == (50, 27) and b["x"].dtype == torch.int64
    x, y = copying_arrays(50, 7, rng=np.random.default_rng(4))
    assert torch.equal(b["x"], torch.from_numpy(x)) and torch.equal(b["y"], torch.from_numpy(y))
    again = load_task("copying", delay=7, n_train=50, n_test=20, seed=4)
    assert torch.equal(again["test"][:]["x"], s["test"][:]["x"])
    assert not torch.equal(s["test"][:20]["x"], b["x"][:20])  # test has its own stream


def test_adding_and_digits_splits():
    s = load_task("adding", length=9, n_train=8, n_test=4)
    row = s["train"][0]
    assert row["x"].shape == (9, 2) and row["x"].dtype == torch.float32 and row["y"].shape == ()
    assert torch.allclose(row["y"], (row["x"][:, 0] * row["x"][:, 1]).sum())
    d = load_task("permuted_digits", seed=1)
    x, y = digits_arrays("test", permuted=True, seed=1)
    assert d["test"].num_rows == len(y)
    assert torch.equal(d["test"][:]["x"], torch.from_numpy(x))
    assert d["train"][0]["x"].shape == (64, 1)


def test_a_hundred_thousand_copying_sequences_in_seconds():
    t = time.perf_counter()
    s = load_task("copying", delay=1000, n_train=100_000, n_test=10)
    elapsed = time.perf_counter() - t
    assert s["train"].num_rows == 100_000 and s["train"][99_999]["x"].shape == (1020,)
    assert elapsed < 15, elapsed  # ~1 s on the project's 2-core CPU


def test_bad_options():
    with pytest.raises(ValueError, match="task must be one of"):
        load_task("mnist")
    with pytest.raises(ValueError, match="n_train must be a positive int"):
        load_task("adding", length=5, n_train=0)
    with pytest.raises(ValueError, match="equal lengths"):
        arrow_dataset({"a": np.zeros((2, 3)), "b": np.zeros(3)}, "bad")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        load_task("adding", length=5, seed=-1)


@pytest.mark.parametrize("task, options", [("copying", {"delay": 10}), ("adding", {"length": 9})])
def test_no_seed_s_test_split_is_in_another_seed_s_training_split(task, options):
    """The test stream was default_rng(seed + 1): the start of seed + 1's training split."""
    trains = {seed: load_task(task, n_train=60, n_test=20, seed=seed, **options)["train"][:]["x"]
              for seed in range(4)}
    for seed in range(3):
        test = load_task(task, n_train=60, n_test=20, seed=seed, **options)["test"][:]["x"]
        for other, train in trains.items():
            rows = (train.unsqueeze(1) == test.unsqueeze(0)).flatten(2).all(-1)
            assert not rows.any(), (seed, other)


def test_sizes_and_seed_take_numpy_ints():
    s = load_task("adding", length=5, n_train=np.int64(6), n_test=np.int32(3), seed=np.int64(2))
    assert (s["train"].num_rows, s["test"].num_rows) == (6, 3)
    same = load_task("adding", length=5, n_train=6, n_test=3, seed=2)
    assert torch.equal(s["test"][:]["x"], same["test"][:]["x"])
