"""fastunitary.tasks.mnist_1d: MNIST-1D regenerated locally by the mnist1d package."""

import numpy as np
import pytest

from fastunitary.tasks.mnist_1d import mnist1d_arrays
from fastunitary.tasks.splits import load_task
from fastunitary.train import TrainConfig, train

# the dev extra installs it (CI); the lent GPU machines' image does not
pytest.importorskip("mnist1d")


def test_the_published_split_shapes_and_determinism():
    x, y = mnist1d_arrays("train")
    xt, yt = mnist1d_arrays("test")
    assert x.shape == (4000, 40, 1) and xt.shape == (1000, 40, 1) and x.dtype == np.float32
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    all_x = np.concatenate([x, xt])
    assert abs(all_x.mean()) < 1e-4 and abs(all_x.std() - 1) < 1e-4  # the package's scaling
    assert np.array_equal(mnist1d_arrays("train", seed=42)[0], x)
    assert not np.array_equal(mnist1d_arrays("train", seed=1)[0], x)


def test_shuffled_variant_permutes_time_once_for_all():
    x, _ = mnist1d_arrays("train")
    xs, _ = mnist1d_arrays("train", shuffled=True)
    assert not np.array_equal(xs, x)
    # one permutation of the 40 steps maps every sequence (same generator state otherwise)
    order = [int(np.argmin(np.abs(x[:50, :, 0] - xs[:50, j:j + 1, 0]).sum(0))) for j in range(40)]
    assert sorted(order) == list(range(40))
    np.testing.assert_array_equal(xs[:, :, 0], x[:, order, 0])


def test_splits_training_and_bad_split():
    s = load_task("mnist1d")
    assert s["train"].num_rows == 4000 and s["test"][0]["x"].shape == (40, 1)
    m = train(TrainConfig(task="shuffled_mnist1d", model="lstm", hidden=8, batch=8, steps=2,
                          eval_every=2), progress=False)
    assert m["steps"] == 2 and 0 <= m["best_eval_accuracy"] <= 1
    with pytest.raises(ValueError, match="split must be"):
        mnist1d_arrays("valid")


def test_generation_leaves_the_global_generators_alone():
    import random

    from fastunitary.tasks import mnist_1d

    mnist_1d._generate.cache_clear()
    np.random.seed(7)
    random.seed(7)
    mnist1d_arrays("test", seed=3)
    after = np.random.random(), random.random()
    np.random.seed(7)
    random.seed(7)
    assert after == (np.random.random(), random.random())
