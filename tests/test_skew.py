"""fastunitary/nn/_skew.py: exact skew matrices from packed free entries."""

import pytest
import torch

from fastunitary.nn import _skew


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("complex_", [False, True])
def test_exactly_skew_and_pack_inverts(n, complex_):
    n_re, n_im = _skew.packed_sizes(n)
    re = torch.randn(n_re)
    im = torch.randn(n_im) if complex_ else None
    Ap = _skew.skew_planes(re, im, n)
    A = torch.complex(Ap[0], Ap[1]) if complex_ else Ap[0]
    assert torch.equal(A, -A.mH)
    re2, im2 = _skew.pack(A)
    assert torch.equal(re2, re)
    if complex_:
        assert torch.equal(im2, im)


def test_gradient_is_upper_triangle_of_M_minus_MH():
    n = 4
    idx = _skew.triu_indices(n)
    re = torch.randn(6, requires_grad=True)
    im = torch.randn(10, requires_grad=True)
    M = torch.randn(n, n, dtype=torch.complex64)
    Ap = _skew.skew_planes(re, im, n)
    loss = (Ap[0] * M.real).sum() + (Ap[1] * M.imag).sum()
    g_re, g_im = torch.autograd.grad(loss, (re, im))
    S = M - M.mH
    torch.testing.assert_close(g_re, S.real[idx[0][0], idx[0][1]])
    # the diagonal of Im A appears once: its gradient is Im M_ii, half of Im (M - M^H)_ii
    expected_im = S.imag[idx[1][0], idx[1][1]].clone()
    diag = idx[1][0] == idx[1][1]
    expected_im[diag] = expected_im[diag] / 2
    torch.testing.assert_close(g_im, expected_im)
