"""fastunitary.functional.modrelu and the closed-form pieces in fastunitary.reference.modrelu."""

import math

import pytest
import torch

import fastunitary.functional as F
from fastunitary.reference.modrelu import (
    MODRELU_EPS,
    modrelu_backward_coefficients,
    modrelu_of_planes,
    modrelu_planes_,
)


def test_real_is_sign_relu():
    z = torch.randn(50, 8, dtype=torch.float64)
    b = torch.rand(8, dtype=torch.float64) - 0.5
    expected = torch.sign(z) * torch.relu(z.abs() + b)
    torch.testing.assert_close(F.modrelu(z, b), expected, rtol=0, atol=0)  # no eps: exact


def test_complex_matches_definition():
    z = torch.randn(50, 8, dtype=torch.complex128)
    b = torch.rand(8, dtype=torch.float64) - 0.5
    r = z.abs()
    expected = torch.where(r + b > 0, (r + b) * z / r, torch.zeros_like(z))
    torch.testing.assert_close(F.modrelu(z, b), expected, rtol=1e-6, atol=1e-7)  # eps = 1e-12 inside r


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_zero_bias_is_exact_identity(dtype):
    z = torch.randn(100, 16, dtype=dtype)
    assert torch.equal(F.modrelu(z, torch.zeros(16)), z)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.float64, torch.complex128])
@pytest.mark.parametrize("b", [0.01, -0.01, 0.0])
def test_gradient_finite_at_zero(dtype, b):
    """At z = 0 the complex gradient is relu(r + b) / r * g with r = sqrt(eps): finite
    (1e4 g at b = 0.01), the map's own gain across the direction of z. The real gradient
    is g where |z| + b >= 0 (phi^2 = 1), else 0: never the smoothed jump's 1e4."""
    z = torch.zeros(4, 3, dtype=dtype, requires_grad=True)
    h = F.modrelu(z, torch.full((3,), b))
    loss = (h.real + h.imag).sum() if dtype.is_complex else h.sum()  # nonzero upstream gradient
    (g,) = torch.autograd.grad(loss, z)
    r = math.sqrt(MODRELU_EPS)
    s = max(r + b, 0.0) / r
    expected = torch.full_like(g, complex(s, s) if dtype.is_complex else float(b >= 0))
    torch.testing.assert_close(g, expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_real_gradient_is_one_where_active_even_within_eps_of_zero(dtype):
    """METHODS.md section 2 for a real state: (r + b) / r - (b / r) phi^2 with phi = +-1,
    i.e. 1 where r + b > 0. Differentiating the smoothed z / r once gave 1 + b eps / r^3
    there: 1e4 at z = 0 and b = 0.01, and spikes for any |z| below ~1e-5."""
    z = torch.tensor([0.0, 1e-9, -1e-7, 3e-7, -2e-6, 0.5, -0.004, 0.002], dtype=dtype)
    b = torch.tensor([0.01, 0.01, 0.01, 0.02, 0.5, 0.1, -0.01, -0.001], dtype=dtype)
    z.requires_grad_()
    (g,) = torch.autograd.grad(F.modrelu(z, b).sum(), z)
    expected = torch.tensor([1, 1, 1, 1, 1, 1, 0, 1], dtype=dtype)
    torch.testing.assert_close(g, expected, rtol=0, atol=0)
    P, _, _ = modrelu_backward_coefficients(z.detach(), b, False)
    torch.testing.assert_close(P, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_real_mask_is_exact_for_tiny_z(dtype):
    """Active where |z| + b >= 0, with no eps: a mask from sqrt(z^2 + 1e-12) once took
    |z| < 1e-6 with a slightly negative b as active and flipped its sign ([-3e-7, 3e-7,
    -1e-7, 1e-7] for the first row below), and in float16, where the eps underflows, gave
    z = 0, b = 0 the gradient 0. Every form: autograd, in place, out of place, backward
    coefficients."""
    z = torch.tensor([1e-7, -1e-7, 3e-7, 5e-7, 0.0, 0.0, 0.0, 4e-7], dtype=dtype)
    b = torch.tensor([-4e-7, -4e-7, -4e-7, -4e-7, 0.0, 1e-7, -1e-7, -4e-7], dtype=dtype)
    expected = torch.sign(z) * torch.relu(z.abs() + b)  # the last: |z| + b = 0, active
    active = (z.abs() + b >= 0).to(dtype)
    assert z[0] != 0  # float16 holds these as subnormals (steps of 6e-8)
    z.requires_grad_()
    h = F.modrelu(z, b)
    (g,) = torch.autograd.grad(h.sum(), z)
    assert torch.equal(h.detach(), expected.detach()) and torch.equal(g, active)
    assert torch.equal(modrelu_planes_(z.detach().clone(), b, False), expected.detach())
    assert torch.equal(modrelu_of_planes([z.detach()], b)[0], expected.detach())
    P, _, Phi = modrelu_backward_coefficients(z.detach(), b, False)
    assert torch.equal(P, active) and torch.equal(Phi, active * torch.sign(z.detach()))


def test_real_minus_infinite_bias_gives_zero_in_every_form():
    """sign(z) relu(|z| - inf) = 0: the autograd and in-place forms agree (the in-place one
    once multiplied z - inf by a 0 mask: NaN)."""
    z = torch.tensor([0.5, -2.0, 0.0])
    b = torch.tensor([-float("inf")] * 3)
    assert torch.equal(F.modrelu(z, b), torch.zeros(3))
    assert torch.equal(modrelu_planes_(z.clone(), b, False), torch.zeros(3))
    P, _, _ = modrelu_backward_coefficients(z, b, False)
    assert torch.equal(P, torch.zeros(3))


def test_nan_stays_nan_in_the_real_forward_and_backward():
    z = torch.tensor([float("nan"), 1.0], requires_grad=True)
    b = torch.tensor([0.01, -0.01])
    h = F.modrelu(z, b)
    assert h[0].isnan() and h[1] == 0.99
    P, _, Phi = modrelu_backward_coefficients(z.detach(), b, False)
    assert P[0].isnan() and P[1] == 1
    # the bias coefficient too: it was 0 there, so a NaN z gave the bias a finite gradient
    assert Phi[0].isnan() and Phi[1] == 1


def test_nan_bias_gives_nan_bias_coefficients_for_a_complex_state():
    z = torch.tensor([0.3, -0.2, 0.4, 0.1], dtype=torch.float64)  # planes of 2 units
    b = torch.tensor([float("nan"), 0.01], dtype=torch.float64)
    _, _, Phi = modrelu_backward_coefficients(z, b, True)
    assert torch.equal(Phi.isnan(), torch.tensor([True, False, True, False]))


@pytest.mark.parametrize("is_complex", [False, True])
def test_backward_coefficients_match_autograd(is_complex):
    """P g (+ Q swap(g)) is the modReLU backward; sum(Phi g) the bias gradient."""
    n, B = 6, 40
    zc = torch.randn(B, n, dtype=torch.complex128 if is_complex else torch.float64) * 0.5
    b = (torch.rand(n, dtype=torch.float64) - 0.5).requires_grad_()
    zc.requires_grad_()
    g = torch.randn(B, 2 * n if is_complex else n, dtype=torch.float64)
    h = F.modrelu(zc, b)
    hp = torch.cat([h.real, h.imag], -1) if is_complex else h
    gz, gb = torch.autograd.grad((hp * g).sum(), (zc, b))
    zp = torch.cat([zc.real, zc.imag], -1).detach() if is_complex else zc.detach()
    P, Q, Phi = modrelu_backward_coefficients(zp, b.detach(), is_complex)
    ours = P * g
    if is_complex:
        ours = ours + Q * torch.cat([g[:, n:], g[:, :n]], -1)
        gz = torch.cat([gz.real, gz.imag], -1)
    torch.testing.assert_close(ours, gz)
    ours_b = (Phi * g).sum(0)
    if is_complex:
        ours_b = ours_b[:n] + ours_b[n:]
    torch.testing.assert_close(ours_b, gb)


@pytest.mark.parametrize("is_complex", [False, True])
def test_inplace_planes_matches_functional(is_complex):
    n = 5
    z = torch.randn(7, n, dtype=torch.complex64 if is_complex else torch.float32)
    b = torch.rand(n) - 0.5
    zp = torch.cat([z.real, z.imag], -1) if is_complex else z.clone()
    out = modrelu_planes_(zp, b, is_complex)
    h = F.modrelu(z, b)
    torch.testing.assert_close(out, torch.cat([h.real, h.imag], -1) if is_complex else h)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.complex64])
def test_result_has_the_dtype_of_z_whatever_the_bias(dtype):
    """A float64 bias used to promote the result (float64, complex128)."""
    z = torch.randn(2, 4, dtype=dtype)
    bias = torch.full((4,), -0.1, dtype=torch.float64, requires_grad=True)
    h = F.modrelu(z, bias)
    assert h.dtype == dtype
    h.abs().sum().backward()
    assert bias.grad.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck(dtype):
    # keep |z| + b away from the kink at 0, where modReLU is not differentiable
    z = torch.randn(5, 4, dtype=dtype)
    z = z / z.abs() * (0.5 + torch.rand(5, 4, dtype=torch.float64))
    b = torch.full((4,), 0.1, dtype=torch.float64)
    assert torch.autograd.gradcheck(F.modrelu, (z.requires_grad_(), b.requires_grad_()))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: F.modrelu(torch.zeros(3, 4), torch.zeros(3)), ValueError, r"bias must have shape \(4,\)"),
        (lambda: F.modrelu(torch.zeros(3, 4), torch.zeros(4, dtype=torch.complex64)), TypeError, "bias must be a real"),
        (lambda: F.modrelu(torch.zeros(3, 4, dtype=torch.int32), torch.zeros(4)), TypeError, "z must be a floating"),
        (lambda: F.modrelu(torch.tensor(1.0), torch.zeros(1)), ValueError, "0-d"),
        (lambda: F.modrelu(torch.zeros(3, 4), torch.zeros(4, device="meta")), ValueError, "bias is on meta"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("is_complex", [False, True])
def test_out_of_place_planes_equal_the_in_place_form(is_complex):
    """``modrelu_of_planes`` (export's loop body: the planes as separate tensors) equals
    ``modrelu_planes_`` on the concatenated planes, and leaves its inputs alone."""
    n = 6
    z = torch.randn(4, 2 * n if is_complex else n, dtype=torch.float64)
    b = torch.rand(n, dtype=torch.float64) - 0.5
    planes = list(z.split(n, dim=-1))
    got = torch.cat(modrelu_of_planes(planes, b), dim=-1)
    assert torch.equal(torch.cat(planes, dim=-1), z)
    torch.testing.assert_close(got, modrelu_planes_(z.clone(), b, is_complex), rtol=1e-14, atol=0)
