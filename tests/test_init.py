"""fastunitary/nn/init.py."""

import math

import pytest
import torch

import fastunitary.functional as F
from fastunitary.nn.init import cayley_skew_init, glorot_uniform_, scaling_signs


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_cayley_skew_init_spreads_eigenvalues(n):
    A = cayley_skew_init(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(A, -A.t())
    if n % 2:
        assert torch.equal(A[-1], torch.zeros(n))
    # 2x2 blocks [[0, s], [-s, 0]] with s = tan(t / 2): eigenvalues of cayley(A) are exp(±i t)
    ang = torch.linalg.eigvals(F.cayley(A.double())).angle().abs()
    assert (ang <= math.pi / 2 + 1e-9).all()
    mask = torch.ones(n, n, dtype=torch.bool)
    for k in range(n // 2):
        mask[2 * k, 2 * k + 1] = mask[2 * k + 1, 2 * k] = False
    assert torch.equal(A[mask], torch.zeros(int(mask.sum())))


def test_glorot_bound():
    w = glorot_uniform_(torch.empty(200, 300), 300, 200)
    a = math.sqrt(6 / 500)
    assert w.abs().max() <= a and w.abs().max() > 0.9 * a


def test_scaling_signs():
    assert torch.equal(scaling_signs(4, 1), torch.tensor([1.0, 1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="rho"):
        scaling_signs(4, 5)
