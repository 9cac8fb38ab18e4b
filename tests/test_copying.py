"""fastunitary/tasks/copying.py."""

import math
import time

import numpy as np
import pytest

from fastunitary.tasks import copying


@pytest.mark.parametrize("convention, marker", [("scornn", 0), ("exprnn", 1)])
@pytest.mark.parametrize("T", [1, 5, 100])
def test_layout(convention, marker, T):
    x, y = copying.copying_arrays(50, T, convention=convention, rng=np.random.default_rng(0))
    L = T + 20
    assert x.shape == y.shape == (50, L)
    symbols = x[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    m = T + 9 + marker
    assert (x[:, m] == 9).all()
    rest = np.delete(x[:, 10:], m - 10, axis=1)
    assert (rest == 0).all()  # blanks everywhere else
    assert (y[:, : T + 10] == 0).all()
    assert (y[:, T + 10 :] == symbols).all()


def test_baseline_value():
    assert copying.copying_baseline(1000) == pytest.approx(0.0204, abs=1e-4)
    assert copying.copying_baseline(100) == pytest.approx(10 * math.log(8) / 120)
    for delay in (0, -20):
        with pytest.raises(ValueError, match="delay T must be >= 1"):
            copying.copying_baseline(delay)


def test_batch_is_time_major_and_fresh():
    rng = np.random.default_rng(0)
    x1, y1 = copying.copying_batch(8, 30, rng=rng)
    x2, _ = copying.copying_batch(8, 30, rng=rng)
    assert x1.shape == (50, 8) and y1.shape == (50, 8)
    assert not (x1 == x2).all()


def test_fast_generation():
    t = time.perf_counter()
    copying.copying_arrays(100_000, 1000, rng=np.random.default_rng(0))
    assert time.perf_counter() - t < 10.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="convention"):
        copying.copying_arrays(2, 10, convention="other")
    with pytest.raises(ValueError, match="delay"):
        copying.copying_arrays(2, 0)
