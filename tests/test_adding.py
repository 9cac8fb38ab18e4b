"""fastunitary/tasks/adding.py."""

import numpy as np
import pytest

from fastunitary.tasks import adding


@pytest.mark.parametrize("L", [2, 3, 50, 751])
def test_layout(L):
    x, y = adding.adding_arrays(500, L, rng=np.random.default_rng(0))
    assert x.shape == (500, L, 2) and y.shape == (500,)
    values, marks = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert (marks.sum(1) == 2).all()
    half = L // 2
    assert (marks[:, :half].sum(1) == 1).all() and (marks[:, half:].sum(1) == 1).all()
    np.testing.assert_allclose(y, (values * marks).sum(1), rtol=1e-6)


def test_baseline_is_the_variance_of_the_target():
    _, y = adding.adding_arrays(200_000, 20, rng=np.random.default_rng(1))
    assert abs(((y - 1.0) ** 2).mean() - adding.BASELINE) < 2e-3


def test_batch_is_time_major():
    x, y = adding.adding_batch(4, 10, rng=np.random.default_rng(0))
    assert tuple(x.shape) == (10, 4, 2) and tuple(y.shape) == (4,)


def test_bad_length():
    with pytest.raises(ValueError, match="length"):
        adding.adding_arrays(2, 1)
