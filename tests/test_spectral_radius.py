"""fastunitary.functional.spectral_radius / spectral_normalize and their reference."""

import importlib

import pytest
import torch

import fastunitary.functional as F
from fastunitary import reference

# the module (the package re-exports a function of the same name)
sr = importlib.import_module("fastunitary.reference.spectral_radius")

LARGE = sr.FULL_EIG_MAX_N + 16  # sizes that take the float32-eigvals + inverse-iteration route


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


def rotated(block: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``Q diag(block, small) Q^T``: a dense n x n matrix whose dominant part is ``block``."""
    g = torch.Generator().manual_seed(seed)
    D = torch.diag(torch.rand(n, dtype=torch.float64, generator=g) * 0.8 - 0.4)
    k = block.shape[0]
    D[:k, :k] = block
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    return Q @ D @ Q.T


@pytest.mark.parametrize("kind", ["dense", "conjugate_pair", "diagonal", "batched_float32"])
def test_fast_route_equals_full_eigendecomposition(kind):
    """Above FULL_EIG_MAX_N the float32-eigvals + float64 inverse-iteration route gives the
    full float64 eigendecomposition's radius and gradient to float64 rounding."""
    torch.manual_seed(1)
    M = {
        "dense": lambda: torch.randn(LARGE, LARGE, dtype=torch.float64) / LARGE**0.5,
        "conjugate_pair": lambda: with_dominant_pair(LARGE, radius=1.2, angle=0.3),
        # float32 eigenvalues are exact here: the shift must still not make M - sI singular
        "diagonal": lambda: torch.diag(torch.linspace(-0.5, 2.0, LARGE, dtype=torch.float64)),
        "batched_float32": lambda: torch.randn(3, LARGE, LARGE) / LARGE**0.5,
    }[kind]()
    lam32 = torch.linalg.eigvals(M.float())
    shift = lam32.gather(-1, lam32.abs().argmax(-1, keepdim=True)).squeeze(-1).to(torch.complex128)
    assert sr._refine(M.double(), shift)[3].all(), "the refinement must be accepted on these matrices (else the test is vacuous)"
    sigma, grad = sr.spectral_radius(M)
    sigma_ref, grad_ref = sr.spectral_radius_eig(M)
    tol = 1e-6 if M.dtype == torch.float32 else 1e-11
    torch.testing.assert_close(sigma, sigma_ref, rtol=tol, atol=0)
    torch.testing.assert_close(grad, grad_ref, rtol=tol, atol=tol * grad_ref.abs().max().item())


def test_fast_route_gradient_against_finite_differences():
    """Directional central differences in float64 on the fast route (gradcheck's n^2
    directions are too many at this size)."""
    M = with_dominant_pair(LARGE, radius=1.3, angle=0.8, seed=3)
    G = torch.randn(LARGE, LARGE, dtype=torch.float64)
    Mg = M.clone().requires_grad_()
    W2, _, _ = F.spectral_normalize(Mg)
    (grad,) = torch.autograd.grad((W2 * G).sum(), Mg)
    for seed in range(3):
        E = torch.randn(LARGE, LARGE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        eps = 1e-6
        f = lambda X: (F.spectral_normalize(X)[0] * G).sum()
        fd = (f(M + eps * E) - f(M - eps * E)) / (2 * eps)
        torch.testing.assert_close((grad * E).sum(), fd, rtol=1e-6, atol=1e-8)


def test_defective_dominant_eigenvalue_falls_back_to_full_eigendecomposition():
    """A Jordan block on top: inverse iteration cannot give a left/right pair with w u != 0,
    so the refinement is refused and the full eigendecomposition answers."""
    M = rotated(torch.tensor([[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64), LARGE)
    lam32 = torch.linalg.eigvals(M.float())
    shift = lam32[lam32.abs().argmax()].to(torch.complex128)
    assert not sr._refine(M, shift)[3]
    sigma, _ = sr.spectral_radius(M)
    torch.testing.assert_close(sigma, sr.spectral_radius_eig(M)[0])
    assert abs(sigma.item() - 2.0) < 1e-6  # a defective eigenvalue is only ~sqrt(eps)-accurate


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
