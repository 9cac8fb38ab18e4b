"""ScoRNN / ScoRNNCell specifics: real state, fixed signs D."""

import pytest
import torch

from fastunitary.nn import ScoRNN, ScoRNNCell


def test_D_is_a_buffer_with_rho_negatives_last():
    cell = ScoRNNCell(3, 10, rho=3)
    assert torch.equal(cell.D, torch.tensor([1.0] * 7 + [-1.0] * 3))
    assert "D" in cell.state_dict() and "D" not in dict(cell.named_parameters())
    assert ScoRNNCell(3, 170).rho == 17  # official MNIST setup as default


def test_orthogonal_real_W_with_D():
    cell = ScoRNNCell(3, 9, rho=4)
    W = cell.recurrent_matrix()
    assert W.dtype == torch.float32
    torch.testing.assert_close(W.t() @ W, torch.eye(9), atol=1e-6, rtol=0)
    # D = diag(±1) multiplies the columns of the Cayley transform
    A = cell.skew_matrix().detach()
    K = torch.linalg.solve(torch.eye(9) + A, torch.eye(9) - A)
    torch.testing.assert_close(W.detach(), K * cell.D, atol=1e-6, rtol=0)


def test_no_D_group_and_D_never_changes():
    rnn = ScoRNN(3, 6, rho=2)
    groups = {g["name"] for g in rnn.param_groups()}
    assert groups == {"A", "other"}
    D0 = rnn.layers[0].D.clone()
    opt = torch.optim.Adam(rnn.parameters(), lr=0.1)
    rnn(torch.randn(5, 2, 3))[0].sum().backward()
    opt.step()
    assert torch.equal(rnn.layers[0].D, D0)


def test_rho_validation_and_complex_state_rejected():
    with pytest.raises(ValueError, match="rho must be an int in"):
        ScoRNN(3, 4, rho=5)
    with pytest.raises(TypeError, match="state is real"):
        ScoRNN(3, 4)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.complex64))


def test_parameter_count_is_that_of_the_model():
    n, m = 7, 3
    rnn = ScoRNN(m, n)
    # U (n m) + c (n) + A (n(n-1)/2) + modReLU bias (n)
    assert sum(p.numel() for p in rnn.parameters()) == n * m + n + n * (n - 1) // 2 + n


def test_rho_follows_a_loaded_D():
    rnn = ScoRNN(3, 10, 2, rho=0)
    rnn.load_state_dict(ScoRNN(3, 10, 2, rho=5).state_dict())
    assert [cell.rho for cell in rnn.layers] == [5, 5] and "rho=5" in repr(rnn)
    cell = ScoRNNCell(3, 10, rho=2)
    cell.load_state_dict(ScoRNNCell(3, 10, rho=7).state_dict())
    assert cell.rho == 7 and "rho=7" in repr(cell)
    cell.reset_parameters()  # re-initializes with the loaded rho
    assert int((cell.D < 0).sum()) == 7
