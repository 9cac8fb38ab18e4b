"""fastunitary.functional.spectral_radius / spectral_normalize and their reference."""

import pytest
import torch

import fastunitary.functional as F
from fastunitary import reference


def with_dominant_pair(n, *, radius=1.5, angle=0.6, seed=0):
    """A real matrix whose dominant eigenvalues are the pair radius * exp(±i angle)."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(n, n, dtype=torch.float64, generator=g)
    D = torch.diag(torch.rand(n, dtype=torch.float64, generator=g) * 0.8 - 0.4)
    c, s = radius * torch.cos(torch.tensor(angle)), radius * torch.sin(torch.tensor(angle))
    D[0, 0] = D[1, 1] = c
    D[0, 1], D[1, 0] = -s, s
    return Q @ D @ torch.linalg.inv(Q)


def test_value_matches_eigvals_batched():
    M = torch.randn(4, 9, 9)
    expected = torch.linalg.eigvals(M.double()).abs().max(-1).values.float()
    torch.testing.assert_close(F.spectral_radius(M), expected)


@pytest.mark.parametrize("kind", ["random", "conjugate_pair"])
def test_gradient_against_float64_finite_differences(kind):
    """gradcheck = central finite differences in float64, for sigma and for M / sigma."""
    M = (with_dominant_pair(6) if kind == "conjugate_pair" else torch.randn(6, 6, dtype=torch.float64))
    if kind == "conjugate_pair":
        lam = torch.linalg.eigvals(M)
        top = lam[lam.abs().argsort(descending=True)[:2]]
        assert torch.allclose(top[0], top[1].conj()) and top[0].imag.abs() > 0.1
    M.requires_grad_()
    assert torch.autograd.gradcheck(F.spectral_radius, (M,))
    assert torch.autograd.gradcheck(lambda M: F.spectral_normalize(M)[0], (M,))


def test_closed_form_matches_methods_formula():
    """grad M = G / sigma - <G, M> / sigma^3 (alpha Re P + beta Im P) (METHODS.md section 4)."""
    M = with_dominant_pair(5, radius=2.0).requires_grad_()
    G = torch.randn(5, 5, dtype=torch.float64)
    W2, sigma, on = F.spectral_normalize(M)
    assert on.item()
    (grad,) = torch.autograd.grad((W2 * G).sum(), M)
    lam, U = torch.linalg.eig(M.detach())
    k = lam.abs().argmax()
    Uinv = torch.linalg.inv(U)
    v = Uinv[k].conj()  # left eigenvector: v^H M = lam v^H
    u = U[:, k]
    P = torch.outer(v.conj(), u) / (v.conj() @ u)
    s = lam[k].abs()
    expected = G / s - (G * M.detach()).sum() / s**3 * (lam[k].real * P.real + lam[k].imag * P.imag)
    torch.testing.assert_close(grad, expected)


def test_matches_autograd_through_eigvals_where_simple():
    M = torch.randn(3, 7, 7, dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(F.spectral_radius(M).sum(), M)
    (g2,) = torch.autograd.grad(reference.spectral_radius_autograd(M).sum(), M)
    torch.testing.assert_close(g1, g2)


def test_rules():
    small = torch.eye(4) * 0.5
    big = torch.eye(4) * 2.0
    W, sigma, on = F.spectral_normalize(small)
    assert torch.equal(W, small) and not on
    W, sigma, on = F.spectral_normalize(big)
    torch.testing.assert_close(W, torch.eye(4))
    assert on and sigma == 2.0
    # sticky: once on, a matrix inside the unit disc is still divided by its radius
    W, sigma, on = F.spectral_normalize(small, rule="sticky", active=torch.tensor(True))
    torch.testing.assert_close(W, torch.eye(4))
    assert on
    W, sigma, on = F.spectral_normalize(small, rule="sticky", active=torch.tensor(False))
    assert torch.equal(W, small) and not on


@pytest.mark.slow
def test_compiles_without_graph_breaks():
    torch._dynamo.reset()

    def f(M, active):
        W, sigma, on = F.spectral_normalize(M, rule="sticky", active=active)
        return W.sum() + sigma.sum(), on

    M = torch.randn(2, 5, 5) * 2
    active = torch.zeros(2, dtype=torch.bool)
    assert torch._dynamo.explain(f)(M, active).graph_break_count == 0
    out_c, on_c = torch.compile(f, fullgraph=True)(M, active)
    out_e, on_e = f(M, active)
    torch.testing.assert_close(out_c, out_e)
    assert torch.equal(on_c, on_e)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.spectral_radius(torch.zeros(3, 4)), ValueError, "square"),
        (lambda: F.spectral_radius(torch.zeros(3, 3, dtype=torch.complex64)), TypeError, "real"),
        (lambda: F.spectral_normalize(torch.zeros(3, 3), rule="always"), ValueError, "rule"),
        (lambda: F.spectral_normalize(torch.zeros(3, 3), rule="sticky", active=torch.tensor(1)),
         TypeError, "bool"),
        (lambda: F.spectral_normalize(torch.zeros(2, 3, 3), rule="sticky",
                                      active=torch.zeros(3, dtype=torch.bool)), ValueError, r"\(2,\)"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
