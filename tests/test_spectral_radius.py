"""fastunitary.functional.spectral_radius / spectral_normalize and their reference."""

import importlib

import pytest
import torch

import fastunitary.functional as F
from fastunitary import reference

# the module (the package re-exports a function of the same name)
sr = importlib.import_module("fastunitary.reference.spectral_radius")

LARGE = sr.FULL_EIG_MAX_N + 16  # sizes that take the squaring (float32) or inverse-iteration (float64) route


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


@pytest.mark.parametrize("kind", ["dense", "conjugate_pair", "diagonal", "batched"])
def test_float64_route_equals_full_eigendecomposition(kind):
    """Above FULL_EIG_MAX_N a float64 M takes float32 eigenvalues + float64 inverse
    iteration: the full float64 eigendecomposition's radius and gradient to float64 rounding."""
    torch.manual_seed(1)
    M = {
        "dense": lambda: torch.randn(LARGE, LARGE, dtype=torch.float64) / LARGE**0.5,
        "conjugate_pair": lambda: with_dominant_pair(LARGE, radius=1.2, angle=0.3),
        # float32 eigenvalues are exact here: the shift must still not make M - sI singular
        "diagonal": lambda: torch.diag(torch.linspace(-0.5, 2.0, LARGE, dtype=torch.float64)),
        "batched": lambda: torch.randn(3, LARGE, LARGE, dtype=torch.float64) / LARGE**0.5,
    }[kind]()
    lam32 = torch.linalg.eigvals(M.float())
    shift = lam32.gather(-1, lam32.abs().argmax(-1, keepdim=True)).squeeze(-1).to(torch.complex128)
    assert sr._refine(M, shift)[3].all(), "the refinement must be accepted on these matrices (else the test is vacuous)"
    sigma, grad = sr.spectral_radius(M)
    sigma_ref, grad_ref = sr.spectral_radius_eig(M)
    torch.testing.assert_close(sigma, sigma_ref, rtol=1e-11, atol=0)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-11, atol=1e-11 * grad_ref.abs().max().item())


@pytest.mark.parametrize("scale", [1e39, 1e300, 1e-165, 1e-300])
def test_float64_route_holds_at_any_scale(scale):
    """Past float32's range the float32 eigenvalues' copy overflowed (LAPACK ended the
    process); below ~1e-162 the residual test's squares underflowed to 0 <= 0 and accepted
    a wrong eigenpair (0.26 of the radius). M is scaled by a power of two first."""
    torch.manual_seed(1)
    M0 = torch.randn(2, LARGE, LARGE, dtype=torch.float64) / LARGE**0.5
    M = torch.stack([M0[0], M0[1] * scale])  # one ordinary member, one at the scale
    sigma, grad = sr.spectral_radius(M)
    sigma_ref, grad_ref = sr.spectral_radius_eig(M0)
    torch.testing.assert_close(sigma, sigma_ref * torch.tensor([1.0, scale], dtype=torch.float64),
                               rtol=1e-11, atol=0)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [8, LARGE])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_matrix_with_nan_or_inf_raises(n, dtype, bad):
    """A float64 M above FULL_EIG_MAX_N with one NaN ended the process in LAPACK's float32
    eigenvalues; below, torch's eig raised its own message."""
    M = torch.randn(2, n, n, dtype=dtype)
    M[1, 2, 3] = bad
    with pytest.raises(ValueError, match="M contains NaN or Inf"):
        F.spectral_radius(M)


def enrnn_initial_M(n: int) -> torch.Tensor:
    from fastunitary.nn import ENRNN

    torch.manual_seed(0)
    return ENRNN(2, 8, n).layers[0].M.detach()


@pytest.mark.parametrize(
    "kind", ["dense", "conjugate_pair", "diagonal", "batched", "enrnn_initial", "near_tie", "opposite_tie"]
)
def test_squaring_route_equals_full_eigendecomposition(kind):
    """Above FULL_EIG_MAX_N a float32 M takes the squaring route: the radius to float32
    rounding (the two-sided Rayleigh quotient is float64-accurate before the cast), the
    gradient to 5e-6 kappa of its largest entry, kappa = ||u|| ||w|| / |w u| the condition
    number of the dominant eigenvalue (the eigenvectors come from float32 powers)."""
    torch.manual_seed(2)
    M = {
        "dense": lambda: torch.randn(LARGE, LARGE) / LARGE**0.5,
        "conjugate_pair": lambda: with_dominant_pair(LARGE, radius=1.2, angle=0.3).float(),
        "diagonal": lambda: torch.diag(torch.linspace(-0.5, 2.0, LARGE)),
        "batched": lambda: torch.randn(3, LARGE, LARGE) / LARGE**0.5,
        "enrnn_initial": lambda: enrnn_initial_M(LARGE),
        # the two largest moduli 1e-5 apart: both lie in the subspace, Rayleigh-Ritz tells them apart
        "near_tie": lambda: rotated(torch.diag(torch.tensor([1.0, 0.99999], dtype=torch.float64)), LARGE).float(),
        "opposite_tie": lambda: rotated(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)), LARGE).float(),
    }[kind]()
    assert sr._dominant_by_powers(M.double())[1].all(), "the powers route must accept these (else the test is vacuous)"
    sigma, grad = sr.spectral_radius(M)
    sigma_ref, grad_ref = sr.spectral_radius_eig(M.double())
    torch.testing.assert_close(sigma.double(), sigma_ref, rtol=1e-7, atol=0)
    if kind != "opposite_tie":  # not differentiable there: either eigenvalue's derivative is returned
        lam, U = torch.linalg.eig(M.double())
        top = lam.abs().argmax(-1)
        u = U.gather(-1, top[..., None, None].expand(*U.shape[:-1], 1)).squeeze(-1)
        w = torch.linalg.inv(U).gather(-2, top[..., None, None].expand(*U.shape[:-2], 1, U.shape[-1])).squeeze(-2)
        kappa = (torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(w, dim=-1) / (w * u).sum(-1).abs()).max()
        assert kappa < 20  # the bound below stays meaningful
        torch.testing.assert_close(grad.double(), grad_ref, rtol=0, atol=5e-6 * kappa.item() * grad_ref.abs().max().item())


def test_squaring_route_keeps_the_normalized_radius_at_one():
    """W2 = M / sigma from the squaring route has spectral radius <= 1 + 1e-6 (and >= 1 - 1e-6)."""
    torch.manual_seed(3)
    M = torch.randn(4, 200, 200) * 0.2
    assert sr._dominant_by_powers(M.double())[1].all()
    W2, _, on = F.spectral_normalize(M)
    assert on.all()
    radius = torch.linalg.eigvals(W2.double()).abs().max(-1).values
    assert ((radius - 1).abs() <= 1e-6).all(), radius


@pytest.mark.parametrize("kind", ["orthogonal", "zero", "nilpotent", "defective"])
def test_squaring_route_refuses_and_falls_back(kind):
    """Where the top of the spectrum is a continuum of equal moduli (orthogonal M), a
    Jordan block, or nothing at all (nilpotent M), the squaring route's residual test
    refuses, and the exact routes answer: no error, the full eigendecomposition's radius."""
    torch.manual_seed(4)
    M = {
        "orthogonal": lambda: torch.linalg.qr(torch.randn(LARGE, LARGE)).Q,
        "zero": lambda: torch.zeros(LARGE, LARGE),
        "nilpotent": lambda: torch.triu(torch.randn(LARGE, LARGE), diagonal=1),
        "defective": lambda: rotated(torch.tensor([[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64), LARGE).float(),
    }[kind]()
    assert not sr._dominant_by_powers(M.double())[1].any()
    sigma, grad = sr.spectral_radius(M)
    assert torch.isfinite(grad).all()
    sigma_ref = sr.spectral_radius_eig(M.double())[0]
    tol = 1e-6 if kind == "orthogonal" else 1e-3  # a defective eigenvalue is only ~sqrt(eps)-accurate
    torch.testing.assert_close(sigma.double(), sigma_ref, rtol=tol, atol=tol)


def non_normal_near_tie(n: int, gap: float, kappa: float, seed: int) -> torch.Tensor:
    """Eigenvalues 1 (well conditioned), 1 - gap and 0.99 with nearly parallel eigenvectors
    (condition ~kappa), the rest in (-0.5, 0.5): float32 cannot tell 1 from 1 - gap."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    d = torch.rand(n, generator=g, dtype=torch.float64) - 0.5
    d[0], d[1], d[2] = 1.0, 1.0 - gap, 0.99
    U = Q.clone()
    U[:, 1] = (1 - 1 / kappa**2) ** 0.5 * Q[:, 2] + Q[:, 1] / kappa
    return U @ torch.diag(d) @ torch.linalg.inv(U)


@pytest.mark.parametrize("gap", [1e-5, 1e-4, 1e-3])
def test_non_normal_near_tie_is_never_underestimated(gap):
    """Where a non-normal eigenvalue sits just below the top, the radius is the top one
    (the powers route refuses what float32 cannot resolve) and the gradient stays within
    1e-3 of its largest entry."""
    for seed in range(3):
        M = non_normal_near_tie(100, gap, 100.0, seed).float()
        sigma, grad = sr.spectral_radius(M)
        sigma_ref, grad_ref = sr.spectral_radius_eig(M.double())
        assert sigma.double() >= sigma_ref * (1 - 1e-6)
        torch.testing.assert_close(grad.double(), grad_ref, rtol=0, atol=1e-3 * grad_ref.abs().max().item())


def test_block_cannot_be_dodged():
    """A symmetric M whose dominant eigenvector is orthogonal to a seed-0 block (the block
    the first version used for every M) still gets its radius: the block is drawn from M."""
    n = LARGE
    block = torch.randn(n, sr.SUBSPACE_DIM, generator=torch.Generator().manual_seed(0)).double()
    Qb = torch.linalg.qr(block).Q
    x = torch.randn(n, dtype=torch.float64)
    x -= Qb @ (Qb.T @ x)
    V = torch.linalg.qr(torch.cat([x[:, None], torch.randn(n, n - 1, dtype=torch.float64)], 1)).Q
    d = torch.rand(n, dtype=torch.float64) * 0.5
    d[0], d[1] = 1.0, 0.99
    M = (V @ torch.diag(d) @ V.T).float()
    torch.testing.assert_close(sr.spectral_radius(M)[0].double(), torch.tensor(1.0, dtype=torch.float64), rtol=1e-6, atol=0)


def test_batch_members_do_not_depend_on_each_other():
    """A refused member (orthogonal) takes the float64 route alone; the others keep the
    answer they get on their own (to float32 rounding: the GEMMs are batched)."""
    torch.manual_seed(5)
    easy = torch.randn(LARGE, LARGE) / LARGE**0.5
    hard = torch.linalg.qr(torch.randn(LARGE, LARGE)).Q
    sigma, grad = sr.spectral_radius(torch.stack((easy, hard)))
    sigma_easy, grad_easy = sr.spectral_radius(easy)
    torch.testing.assert_close(sigma[0], sigma_easy, rtol=1e-7, atol=0)  # rounding: batched GEMMs, block
    torch.testing.assert_close(grad[0], grad_easy, rtol=0, atol=1e-5 * grad_easy.abs().max().item())
    torch.testing.assert_close(sigma[1], sr.spectral_radius_eig(hard.double())[0].float())


def test_works_under_the_per_backend_precision_api():
    """torch >= 2.9's fp32_precision API and the legacy one refuse to be mixed: the route
    must use the one the process uses, and restore it."""
    previous = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        M = torch.randn(LARGE, LARGE) / LARGE**0.5
        torch.testing.assert_close(sr.spectral_radius(M)[0].double(), sr.spectral_radius_eig(M.double())[0], rtol=1e-6, atol=0)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous


def test_squaring_route_restores_the_float32_matmul_precision():
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        sr.spectral_radius(torch.randn(LARGE, LARGE))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)


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


@pytest.mark.slow
@pytest.mark.parametrize("n, dtype", [(6, torch.float32), (LARGE, torch.float32), (LARGE, torch.float64)])
def test_compiled_gradient_equals_eager_on_a_dominant_pair(n, dtype):
    """All three routes give the same gradient compiled as eager where the dominant
    eigenvalues are a conjugate pair (the conjugate in the closed form must survive)."""
    torch._dynamo.reset()
    M = with_dominant_pair(n, radius=1.3, angle=0.8, seed=3).to(dtype)
    G = torch.randn(n, n, dtype=dtype)

    def f(M):
        return (F.spectral_normalize(M)[0] * G).sum()

    grads = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        Mg = M.clone().requires_grad_()
        fn(Mg).backward()
        grads.append(Mg.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.spectral_radius(torch.zeros(3, 4)), ValueError, "square"),
        (lambda: F.spectral_radius(torch.zeros(2, 0, 0)), ValueError, "n >= 1"),
        (lambda: F.spectral_radius(torch.zeros(3, 3, dtype=torch.complex64)), TypeError, "real"),
        (lambda: F.spectral_normalize(torch.zeros(3, 3), rule="always"), ValueError, "rule"),
        (lambda: F.spectral_normalize(torch.zeros(3, 3), rule="sticky", active=torch.tensor(1)),
         TypeError, "bool"),
        (lambda: F.spectral_normalize(torch.zeros(2, 3, 3), rule="sticky",
                                      active=torch.zeros(3, dtype=torch.bool)), ValueError, r"\(2,\)"),
        # max1 has no switch: a given one was once silently ignored
        (lambda: F.spectral_normalize(torch.zeros(3, 3), active=torch.tensor(True)), ValueError,
         "rule='max1' takes none"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _repeated_below_the_top(generator):
    return torch.diag(torch.tensor([1.5, 0.3, 0.3, 0.3], dtype=torch.float64))


def _rank_one(generator):
    u, v = torch.randn(2, 4, dtype=torch.float64, generator=generator)
    return torch.outer(u, v)  # three zero eigenvalues


def _dominant_pair_batch(generator):
    return torch.randn(3, 4, 4, dtype=torch.float64, generator=generator)


@pytest.mark.parametrize("fn", [F.spectral_radius, lambda M: F.spectral_normalize(3 * M)[0]])
@pytest.mark.parametrize("loss", [lambda s: s.square().sum(), lambda s: s.sum()],
                         ids=["quadratic", "linear"])
@pytest.mark.parametrize("matrix", [lambda g: torch.randn(4, 4, dtype=torch.float64, generator=g),
                                    _repeated_below_the_top, _rank_one, _dominant_pair_batch],
                         ids=["gaussian", "repeated-below-the-top", "rank-one", "batch"])
def test_double_backward_keeps_the_second_order_term(fn, loss, matrix):
    """d sigma / d M depends on M: a double backward that held it constant returned a
    Hessian-vector product 2.4 away from finite differences, silently; also where the loss
    is linear in sigma (a gradient penalty), so that the incoming gradient is a constant.
    Eigenvalues repeated below the dominant one (a diagonal or low-rank M) once made it
    NaN (autograd through eigvals divides by every gap). Finite differences of the gradient
    (float64) on random matrices."""
    M = matrix(torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda M: loss(fn(M)), (M,))


def test_hessian_below_radius_one_is_that_of_the_map_alone():
    """Under ``max1`` with sigma < 1, W2 = M: the Hessian of a loss of W2 is that of M
    alone, exact and finite, even for ENRNN's identity-like M (every eigenvalue repeated,
    so sigma itself is not differentiable there; its incoming gradient is zero)."""
    x = torch.randn(4, dtype=torch.float64)
    M = (0.5 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    g, = torch.autograd.grad((F.spectral_normalize(M)[0] @ x).square().sum(), M, create_graph=True)
    v = torch.randn(4, 4, dtype=torch.float64)
    hv, = torch.autograd.grad((g * v).sum(), M)
    torch.testing.assert_close(hv, 2 * torch.outer(v @ x, x))  # d/dM of 2 (M x) x^T . v


def test_double_backward_at_a_repeated_dominant_eigenvalue_is_first_order():
    """Where the dominant eigenvalue is not simple (M = c I) sigma has no second derivative
    (nor, strictly, a first): the double backward keeps the first derivative the forward
    picked and the term through it, finite, instead of NaN."""
    M = (1.5 * torch.eye(3, dtype=torch.float64)).requires_grad_()
    (g_plain,) = torch.autograd.grad(F.spectral_radius(M).square(), M)
    (g,) = torch.autograd.grad(F.spectral_radius(M).square(), M, create_graph=True)
    torch.testing.assert_close(g.detach(), g_plain)
    (h,) = torch.autograd.grad(g.sum(), M)
    dsigma = g_plain / (2 * 1.5)
    torch.testing.assert_close(h, 2 * dsigma.sum() * dsigma)  # d(2 sigma dsigma) with dsigma fixed


def _orthogonal(n, dtype, generator):
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=generator))
    return Q.to(dtype)


def _tied_in_modulus(n, generator):
    Q = _orthogonal(n, torch.float64, generator)
    eigenvalues = torch.linspace(0.1, 1.0, n, dtype=torch.float64)
    eigenvalues[:2] = torch.tensor([2.0, -2.0])
    return Q @ torch.diag(eigenvalues) @ Q.mT


def _jordan_block_on_top(n, generator):
    J = torch.diag(torch.linspace(0.1, 0.5, n, dtype=torch.float64))
    J[:3, :3] = 2 * torch.eye(3, dtype=torch.float64) + torch.diag(torch.ones(2, dtype=torch.float64), 1)
    Q = _orthogonal(n, torch.float64, generator)
    return Q @ J @ Q.mT


@pytest.mark.parametrize("matrix", [
    lambda g: _orthogonal(80, torch.float32, g),  # every modulus 1; the powers route
    # 2 and -2 on top, the float64 route; with this Q eig's argmax and the route's
    # refinement pick different members
    lambda g: _tied_in_modulus(80, torch.Generator().manual_seed(3)),
    lambda g: _jordan_block_on_top(6, g),         # defective top: split ~eps^(1/3) apart
], ids=["orthogonal float32", "tie in modulus", "Jordan block"])
def test_double_backward_where_the_radius_is_not_differentiable(matrix):
    """Where the top modulus is shared or the top eigenvalue is defective, the forward's
    route picks one derivative: the create_graph path keeps that one (it once took
    another eigenvalue's, 0.2 to 0.6 away, or 1e11 off for the Jordan block) and its
    second derivative is finite."""
    from .conftest import assert_create_graph_keeps_the_gradient

    M = matrix(torch.Generator().manual_seed(5)).requires_grad_()
    loss = lambda: F.spectral_radius(M).square()  # noqa: E731
    assert_create_graph_keeps_the_gradient(loss, [M], rtol=1e-6, atol=1e-7)
    (g,) = torch.autograd.grad(loss(), M, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), M)
    assert torch.isfinite(h).all()


def test_double_backward_of_a_linear_loss_at_a_repeated_top_is_zero():
    """M = c I and a loss linear in sigma: the second derivative is the dropped term only,
    zero (it raised "element 0 of tensors does not require grad": nothing tied the
    first-order gradient to M)."""
    M = (1.5 * torch.eye(3, dtype=torch.float64)).requires_grad_()
    (g,) = torch.autograd.grad(F.spectral_radius(M), M, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), M)
    torch.testing.assert_close(h, torch.zeros_like(h))


def test_differentiating_the_backward_op_raises():
    """The backward op itself has no derivative (the create_graph path avoids it)."""
    M = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.ops.fastunitary.spectral_radius_backward(torch.ones((), dtype=torch.float64),
                                                       torch.randn(3, 3, dtype=torch.float64), M)
    with pytest.raises(RuntimeError, match="spectral_radius_backward"):
        g.sum().backward()


def test_opcheck_backward_op():
    grad_sigma, dsigma, M = torch.randn(3), torch.randn(3, 4, 4), torch.randn(3, 4, 4)
    torch.library.opcheck(torch.ops.fastunitary.spectral_radius_backward, (grad_sigma, dsigma, M))
