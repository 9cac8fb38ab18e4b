"""fastunitary.tasks.digits: the sequential / permuted 8x8 digits."""

import numpy as np
import pytest

from fastunitary.tasks import digits_arrays, digits_tensors


def test_fixed_split_shapes_and_range():
    x_tr, y_tr = digits_arrays("train")
    x_te, y_te = digits_arrays("test")
    assert x_tr.shape == (898, 64, 1) and x_te.shape == (899, 64, 1)
    assert x_tr.dtype == np.float32 and 0 <= x_tr.min() and x_tr.max() <= 1
    assert set(np.unique(y_tr)) == set(range(10))


def test_permutation_is_fixed_and_applied_to_every_image():
    x, _ = digits_arrays("test")
    xp, _ = digits_arrays("test", permuted=True, seed=3)
    perm = np.random.RandomState(3).permutation(64)
    np.testing.assert_array_equal(xp, x[:, perm])
    np.testing.assert_array_equal(xp, digits_arrays("test", permuted=True, seed=3)[0])


def test_tensors_are_time_major():
    x, y = digits_tensors("train")
    assert tuple(x.shape) == (64, 898, 1) and tuple(y.shape) == (898,)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        digits_arrays("validation")
