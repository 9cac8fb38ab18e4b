"""ScuRNN / ScuRNNCell specifics: complex state, learned phases."""

import math

import pytest
import torch

import fastunitary as fu
from fastunitary.nn import ScuRNN, ScuRNNCell


def test_initialization_follows_methods():
    torch.manual_seed(3)
    cell = ScuRNNCell(5, 10)
    A = cell.skew_matrix()
    assert A.dtype == torch.complex64
    assert torch.equal(A.imag, torch.zeros_like(A.imag))  # imaginary part starts at zero
    assert ((cell.theta >= 0) & (cell.theta < 2 * math.pi)).all()
    assert cell.modrelu_bias.abs().max() <= 0.01
    bound = math.sqrt(6 / (5 + 10))  # Glorot on Re U and Im U, fan_in 5, fan_out 10
    assert cell.weight_ih.abs().max() <= bound and cell.weight_ih.shape == (20, 5)
    # eigenvalues of K = cayley(A) are exp(±i t_k) with t_k in [0, pi/2]
    K = fu.functional.cayley(A)
    ang = torch.linalg.eigvals(K).angle().abs()
    assert (ang <= math.pi / 2 + 1e-5).all()


def test_unitary_and_phases_in_D():
    cell = ScuRNNCell(3, 6)
    W = cell.recurrent_matrix()
    assert W.dtype == torch.complex64
    torch.testing.assert_close(W.mH @ W, torch.eye(6, dtype=W.dtype), atol=1e-6, rtol=0)
    K = fu.functional.cayley(cell.skew_matrix())
    torch.testing.assert_close(W, K * torch.polar(torch.ones(6), cell.theta.detach()), atol=1e-6, rtol=0)


def test_phases_form_their_own_group():
    groups = {g["name"]: g["params"] for g in ScuRNN(3, 4, 2).param_groups()}
    assert len(groups["D"]) == 2 and all(p.shape == (4,) for p in groups["D"])
    assert len(groups["A"]) == 4  # skew_re and skew_im per layer


def test_complex_state_accepted_and_as_complex():
    rnn = ScuRNN(3, 4, 2)
    x = torch.randn(6, 2, 3)
    hx = torch.randn(2, 2, 4, dtype=torch.complex64)
    out, h_n = rnn(x, hx)
    out2, _ = rnn(x, fu.functional.to_planes(hx))
    torch.testing.assert_close(out, out2)
    z = fu.as_complex(out)
    assert z.dtype == torch.complex64 and z.shape == (6, 2, 4)
    torch.testing.assert_close(z.real, out[..., :4])
    torch.testing.assert_close(fu.as_complex(h_n)[-1], z[-1])


def test_as_complex_bad_input():
    with pytest.raises(ValueError, match="even last dimension"):
        fu.as_complex(torch.zeros(3, 5))
    with pytest.raises(TypeError, match="real tensor"):
        fu.as_complex(torch.zeros(3, 4, dtype=torch.complex64))


def test_parameter_count_is_that_of_the_model():
    n, m = 7, 3
    rnn = ScuRNN(m, n, bias=True)
    # U (2n m) + c (2n) + A (n^2 real dof) + theta (n) + modReLU bias (n)
    assert sum(p.numel() for p in rnn.parameters()) == 2 * n * m + 2 * n + n * n + n + n
