"""fastunitary/functional/_dispatch.py: the registered ops under ``torch.func`` transforms.

``differentiable`` runs each op inside an ``autograd.Function`` while a transform is
active (``torch.library``'s own wrapper cannot: pytorch/pytorch#168393). Checked here:
every op's ``torch.func.grad`` equals ``torch.autograd.grad`` in float64, per-sample
gradients (``vmap`` of ``grad``) of every module family equal one backward per sample, the
sequence ops' batching rules run the samples as one batch (per-sample weight gradients
included) and agree with a loop over samples, and second derivatives by every composition
of transforms equal eager double backward.
"""

import importlib
import warnings

import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

import fastunitary.functional as F
from fastunitary import nn as fnn
from fastunitary import reference

DT = torch.float64
#: where the Triton route runs: CUDA where present (ci/gpu.sh), else the interpreter on CPU
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _randn(*shape, dtype=DT):
    return torch.randn(*shape, dtype=dtype)


def _skew(n, dtype=DT):
    X = _randn(n, n, dtype=dtype)
    return (X - X.mT.conj()) * 0.3


def _sum_of_outputs(out):
    """A scalar that reads every output element through fixed random weights (so that no
    gradient is a plain sum that a wrong broadcast could still match)."""
    outs = out if isinstance(out, tuple) else (out,)
    total = 0.0
    for k, o in enumerate(o for o in outs if o is not None):
        real = torch.view_as_real(o) if o.is_complex() else o
        weight = torch.linspace(-1.0, 2.0, real.numel(), dtype=real.dtype,
                                device=real.device).reshape(real.shape)
        total = total + (real * weight.roll(k)).sum()
    return total


#: name -> (function of tensors, inputs)
CASES = {
    "cayley real": (lambda A: F.cayley(A), lambda: (_skew(5),)),
    "cayley complex": (lambda A, th: F.cayley(A, torch.exp(1j * th)),
                       lambda: (_skew(4, torch.complex128), _randn(4))),
    "recurrence modrelu": (lambda u, W, b, h0: F.recurrence(u, W, b, h0, activation="modrelu"),
                           lambda: (_randn(6, 3, 4), _randn(4, 4) * 0.4, _randn(4), _randn(3, 4))),
    "recurrence leaky tanh": (lambda u, W: F.recurrence(u, W, activation="tanh", leak=0.5),
                              lambda: (_randn(6, 3, 4), _randn(4, 4) * 0.4)),
    "momentum_scan": (lambda u, mu, v0: F.momentum_scan(u, mu, 0.5, v0),
                      lambda: (_randn(6, 3, 4), torch.rand(4, dtype=DT), _randn(3, 4))),
    "lstm_recurrence": (lambda g, W, h0, c0: F.lstm_recurrence(g, W, h0, c0),
                        lambda: (_randn(6, 3, 16), _randn(16, 4) * 0.4, _randn(3, 4), _randn(3, 4))),
    "lstm_recurrence projected": (
        lambda g, W, h0, c0, Wr: F.lstm_recurrence(g, W, h0, c0, W_hr=Wr),
        lambda: (_randn(6, 3, 16), _randn(16, 2) * 0.4, _randn(3, 2), _randn(3, 4), _randn(2, 4))),
    "sbo_recurrence gd": (  # nn.SBORNN's default; its ms output is an empty placeholder
        lambda u, W: F.sbo_recurrence(u, W, method="gd", steps=2)[0],  # ms is None
        lambda: (_randn(6, 3, 4), _randn(4, 4) * 0.4)),
    "sbo_recurrence nesterov": (
        lambda u, W, mu: F.sbo_recurrence(u, W, method="nesterov", mu=mu, steps=2),
        lambda: (_randn(6, 3, 4), _randn(4, 4) * 0.4, torch.tensor(0.5, dtype=DT))),
    "spectral_radius": (lambda M: F.spectral_radius(M), lambda: (_randn(5, 5),)),
}


@pytest.mark.parametrize("name", CASES)
def test_func_grad_equals_autograd(name):
    fn, make = CASES[name]
    inputs = make()
    loss = lambda *xs: _sum_of_outputs(fn(*xs))  # noqa: E731
    got = grad(loss, argnums=tuple(range(len(inputs))))(*inputs)
    leaves = [x.clone().requires_grad_() for x in inputs]
    want = torch.autograd.grad(loss(*leaves), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_func_jacrev_of_an_op():
    """jacrev (vjp under vmap over the output basis) equals the autograd Jacobian."""
    u, W = _randn(4, 2, 3), _randn(3, 3) * 0.4
    fn = lambda W: F.recurrence(u, W, activation="tanh")  # noqa: E731
    got = jacrev(fn)(W)
    want = torch.autograd.functional.jacobian(fn, W)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_func_grad_on_the_triton_backend():
    """The kernel route under a transform (compiled on CUDA, else Triton's interpreter on
    CPU tensors), float32."""
    u = torch.randn(5, 3, 8, device=KERNEL_DEVICE)
    W = torch.randn(8, 8, device=KERNEL_DEVICE) * 0.3
    loss = lambda W, backend: _sum_of_outputs(  # noqa: E731
        F.recurrence(u, W, activation="tanh", backend=backend))
    torch.testing.assert_close(grad(loss)(W, "triton"), grad(loss)(W, "reference"),
                               rtol=1e-4, atol=1e-5)


def _gradient_readout(fn, inputs):
    """``G(xs)``: the gradient of the scalar ``_sum_of_outputs(fn(*xs))`` in all inputs, read
    through fixed weights: its own gradient is a Hessian-vector product, which every way of
    differentiating twice below must give."""
    loss = lambda *xs: _sum_of_outputs(fn(*xs))  # noqa: E731
    every = tuple(range(len(inputs)))
    return lambda *xs: _sum_of_outputs(grad(loss, argnums=every)(*xs))


def _eager_second_derivative(fn, inputs):
    """The same Hessian-vector product by eager double backward (``create_graph``), which
    ``test_double_backward.py`` checks against ``gradgradcheck``'s finite differences."""
    leaves = [x.clone().requires_grad_() for x in inputs]
    grads = torch.autograd.grad(_sum_of_outputs(fn(*leaves)), leaves, create_graph=True)
    return torch.autograd.grad(_sum_of_outputs(grads), leaves, allow_unused=True,
                               materialize_grads=True)


def _second_derivative(how, fn, inputs):
    """The Hessian-vector product of :func:`_gradient_readout`, taken ``how``."""
    every = tuple(range(len(inputs)))
    readout = _gradient_readout(fn, inputs)
    loss = lambda *xs: _sum_of_outputs(fn(*xs))  # noqa: E731
    if how == "grad(grad)":
        return grad(readout, argnums=every)(*inputs)
    if how == "eager autograd over func.grad":
        leaves = [x.clone().requires_grad_() for x in inputs]
        return torch.autograd.grad(readout(*leaves), leaves, allow_unused=True,
                                   materialize_grads=True)
    if how == "grad of the function vjp returns":
        def through_vjp(*xs):
            out, vjp_fn = torch.func.vjp(loss, *xs)
            return _sum_of_outputs(vjp_fn(torch.ones_like(out)))
        return grad(through_vjp, argnums=every)(*inputs)
    if how == "vmap(grad(grad))":  # per-sample second derivatives, two samples
        batched = [torch.stack([x, x]) for x in inputs]
        both = vmap(grad(readout, argnums=every))(*batched)
        for g in both:
            torch.testing.assert_close(g[0], g[1], rtol=1e-10, atol=1e-12)
        return tuple(g[0] for g in both)
    if how == "grad(vmap(grad))":  # a penalty on per-sample gradients, differentiated
        def mean_over_two(*xs):
            per_sample = vmap(grad(loss, argnums=every))(*(torch.stack([x, x]) for x in xs))
            return _sum_of_outputs(tuple(g.sum(0) / 2 for g in per_sample))
        return grad(mean_over_two, argnums=every)(*inputs)
    if how == "create_graph over vmap":
        leaves = [x.clone().requires_grad_() for x in inputs]
        out = vmap(lambda *xs: loss(*xs))(*(torch.stack([x, x]) for x in leaves)).sum() / 2
        grads = torch.autograd.grad(out, leaves, create_graph=True)
        return torch.autograd.grad(_sum_of_outputs(grads), leaves, allow_unused=True,
                                   materialize_grads=True)
    raise AssertionError(how)


SECOND_DERIVATIVES = ["grad(grad)", "eager autograd over func.grad",
                      "grad of the function vjp returns", "vmap(grad(grad))",
                      "grad(vmap(grad))", "create_graph over vmap"]


@pytest.mark.parametrize("how", SECOND_DERIVATIVES)
@pytest.mark.parametrize("name", CASES)
def test_second_derivatives_under_transforms(name, how):
    """Reverse over reverse under ``torch.func``, however it is entered, equals eager double
    backward (float64): the backward at the inner level sees that an outer level (or eager
    autograd) tracks its inputs and takes the op's differentiable ``create_graph`` path."""
    fn, make = CASES[name]
    inputs = make()
    got = _second_derivative(how, fn, inputs)
    want = _eager_second_derivative(fn, inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["recurrence modrelu", "cayley real", "spectral_radius",
                                  "lstm_recurrence projected", "sbo_recurrence nesterov"])
def test_jacrev_of_jacrev_is_the_hessian(name):
    """``jacrev(jacrev)`` (reverse over reverse under ``vmap``) in the first input equals
    ``torch.autograd.functional.hessian`` (eager double backward). (``jacrev`` refuses
    complex inputs itself.)"""
    fn, make = CASES[name]
    x, *rest = make()
    loss = lambda x: _sum_of_outputs(fn(x, *rest))  # noqa: E731
    torch.testing.assert_close(jacrev(jacrev(loss))(x),
                               torch.autograd.functional.hessian(loss, x),
                               rtol=1e-8, atol=1e-10)


def test_grad_in_the_cotangent_of_a_vjp_taken_earlier():
    """The function ``vjp`` returned runs the backward of a level that has ended; a new
    ``grad`` level (functorch reuses its number) differentiates in the cotangent. The
    gradient is linear in it: ``d/dv |J^T v|^2 = 2 J J^T v``."""
    u, W = _randn(5, 2, 4), _randn(4, 4) * 0.4
    out, vjp_fn = torch.func.vjp(lambda W: F.recurrence(u, W, activation="tanh"), W)
    v = torch.randn_like(out)
    got = grad(lambda v: vjp_fn(v)[0].square().sum())(v)
    J = torch.autograd.functional.jacobian(
        lambda W: F.recurrence(u, W, activation="tanh"), W).reshape(out.numel(), -1)
    torch.testing.assert_close(got.reshape(-1), 2 * J @ (J.mT @ v.reshape(-1)),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("how", ["torch.func.jvp of the vjp function",
                                 "forward_ad cotangent into the vjp function",
                                 "forward_ad cotangent into autograd.grad"])
@pytest.mark.parametrize("name", CASES)
def test_forward_mode_through_a_backward(name, how):
    """A tangent of a vector-Jacobian product in its cotangent, ``J^T t`` (it is linear):
    the backward ops have no forward derivative, so where the cotangent carries a tangent
    the op's backward takes its create_graph path (the tangent came back zero, or None)."""
    import torch.autograd.forward_ad as fwAD

    fn, make = CASES[name]
    inputs = make()
    flat = lambda *xs: tuple(_flat(fn(*xs)))  # noqa: E731
    outs, vjp_fn = torch.func.vjp(flat, *inputs)
    cotangent = tuple(torch.randn_like(o) for o in outs)
    tangent = tuple(torch.randn_like(o) for o in outs)
    want = vjp_fn(tangent)
    if how == "torch.func.jvp of the vjp function":
        _, got = jvp(lambda *c: vjp_fn(c), cotangent, tangent)
    else:
        leaves = [x.clone().requires_grad_() for x in inputs]
        outs = flat(*leaves)
        with fwAD.dual_level():
            duals = tuple(fwAD.make_dual(c, t) for c, t in zip(cotangent, tangent))
            if how == "forward_ad cotangent into the vjp function":
                grads = vjp_fn(duals)
            else:
                grads = torch.autograd.grad(outs, leaves, duals)
            got = tuple(fwAD.unpack_dual(g).tangent for g in grads)
    for g, w in zip(got, want, strict=True):
        assert g is not None
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_autograd_grad_with_create_graph_inside_a_transform_raises():
    """``torch.autograd.grad(create_graph=True)`` inside a function under ``torch.func.grad``
    runs the op's backward at the transform's own level, like the transform's first-order
    call, which the backward cannot tell apart: the result must raise when that level
    differentiates it (it once lacked the op's term, silently); ``grad`` of ``grad``, the
    way to write it, is tested above."""
    u, W = _randn(4, 2, 3), _randn(3, 3) * 0.4
    direction = torch.randn_like(W)

    def penalty(W):
        (gW,) = torch.autograd.grad(F.recurrence(u, W, activation="modrelu").sum(), W,
                                    create_graph=True)
        return (gW * direction).sum()

    with pytest.raises(NotImplementedError, match="cannot be differentiated again"):
        grad(penalty)(W)


def test_first_derivatives_under_transforms_keep_the_backward_ops(monkeypatch):
    """Per-sample gradients (``vmap(grad)``) of detached parameters, and ``grad`` of a
    function whose parameters are fixed in a second level, run the fused backward ops: the
    differentiable recomputation is taken only where something differentiates again."""
    recurrence_module = importlib.import_module("fastunitary.functional.recurrence")

    def refuse(*args, **kwargs):
        raise AssertionError("the create_graph path ran for a first derivative")

    u, W = _randn(3, 5, 2, 4), _randn(4, 4) * 0.4
    loss = lambda W, u: F.recurrence(u, W, activation="modrelu").square().sum()  # noqa: E731
    want = vmap(grad(loss), in_dims=(None, 0))(W, u)
    monkeypatch.setattr(recurrence_module, "recomputed_gradients", refuse)
    torch.testing.assert_close(vmap(grad(loss), in_dims=(None, 0))(W, u), want)
    scale = torch.ones(4, 4, dtype=DT)  # an outer level that does not track W or u
    grad(lambda s: (grad(loss)(W, u[0]) * s).sum())(scale)
    with pytest.raises(AssertionError, match="create_graph path ran"):  # W tracked below
        vmap(grad(loss), in_dims=(None, 0))(W.clone().requires_grad_(), u)


def _enrnn_below_radius_one():
    """Every eigenvalue of M repeated (sigma not differentiable) but below 1, where ``max1``
    leaves M as it is: the Hessian is finite and exact (it was NaN, 0 x inf)."""
    model = fnn.ENRNN(3, 3, 2, normalization="max1")
    with torch.no_grad():
        model.layers[0].M.copy_(0.5 * torch.eye(2))
    return model


PENALIZED = {
    "ScuRNN": lambda: fnn.ScuRNN(3, 3, num_layers=2),
    "ScoRNN": lambda: fnn.ScoRNN(3, 4, bidirectional=True),
    "ENRNN": lambda: fnn.ENRNN(3, 3, 2),
    "ENRNN max1, M = I / 2": lambda: _enrnn_below_radius_one(),
    "MomentumRNN": lambda: fnn.MomentumRNN(3, 4, mu=0.6, step=0.6),
    "MomentumLSTM": lambda: fnn.MomentumLSTM(3, 4),
    "AdamLSTM": lambda: fnn.AdamLSTM(3, 4),
    "RMSPropLSTM": lambda: fnn.RMSPropLSTM(3, 4),
    "NesterovLSTM": lambda: fnn.NesterovLSTM(3, 4, proj_size=2),
    "SBORNN": lambda: fnn.SBORNN(3, 4, method="heavy_ball", steps=2),
}


@pytest.mark.parametrize("name", PENALIZED)
def test_an_input_gradient_penalty_trains_every_module(name):
    """A double backward through a whole module (WGAN-GP's penalty ``||d out / d x||^2``):
    its gradient in the parameters, along a random direction, equals the central finite
    difference of the penalty (float64): every op's gradient is differentiable under
    ``create_graph`` (the Cayley map's and the spectral radius's too, though a penalty in
    ``x`` needs only their first derivatives)."""
    torch.manual_seed(0)
    model = PENALIZED[name]().to(DT).eval()
    x = _randn(5, 2, 3)
    params = [p for p in model.parameters() if p.requires_grad]
    directions = [torch.randn_like(p) for p in params]

    def penalty():
        xr = x.clone().requires_grad_()
        out = model(xr)[0]
        (gx,) = torch.autograd.grad(out.square().sum(), xr, create_graph=True)
        return gx.square().sum()

    grads = torch.autograd.grad(penalty(), params)
    analytic = sum((g * v).sum() for g, v in zip(grads, directions))
    eps = 1e-6
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            for p, v in zip(params, directions):
                p.add_(v, alpha=sign * eps)
            with torch.enable_grad():
                values.append(penalty().item())
            for p, v in zip(params, directions):
                p.sub_(v, alpha=sign * eps)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic.item() - numeric) <= 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("name", PENALIZED)
def test_a_hessian_vector_product_in_the_parameters(name):
    """A double backward in the parameters (every op's second derivative, the Cayley map's
    and ENRNN's spectral radius included): ``<H v, w>`` equals the central finite difference
    of ``<grad L, w>`` along ``v`` (float64)."""
    torch.manual_seed(1)
    model = PENALIZED[name]().to(DT).eval()
    x = _randn(5, 2, 3)
    params = [p for p in model.parameters() if p.requires_grad]
    v, w = [torch.randn_like(p) for p in params], [torch.randn_like(p) for p in params]

    def loss():
        return model(x)[0].tanh().square().sum()

    grads = torch.autograd.grad(loss(), params, create_graph=True)
    Hv = torch.autograd.grad(sum((g * d).sum() for g, d in zip(grads, v)), params)
    analytic = sum((h * d).sum() for h, d in zip(Hv, w)).item()
    eps, values = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(d, alpha=sign * eps)
        grads = torch.autograd.grad(loss(), params)
        values.append(sum((g * d).sum() for g, d in zip(grads, w)).item())
        with torch.no_grad():
            for p, d in zip(params, v):
                p.sub_(d, alpha=sign * eps)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


FUNCTIONAL_CASES = {
    # name -> (outputs as a function of one input, that input)
    "recurrence": (lambda W: F.recurrence(_FIXED_U, W, activation="tanh"), lambda: _randn(3, 3) * 0.5),
    "cayley": (lambda A: F.cayley(A), lambda: _skew(3)),
    "spectral_normalize": (lambda M: F.spectral_normalize(2 * M)[0] @ _FIXED_U[0].mT,
                           lambda: _randn(3, 3)),
}
_FIXED_U = torch.randn(5, 2, 3, dtype=DT, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", FUNCTIONAL_CASES)
def test_autograd_functional_jvp_hvp_vhp_and_hessian(name):
    """``torch.autograd.functional``'s ``jvp``, ``hvp``, ``vhp`` and ``hessian`` are built on
    double backward (the double-vjp trick), so they work eagerly where ``torch.func.jvp``
    (true forward mode) raises; against central finite differences (float64), for a
    sequence op and for both of W's ops."""
    from torch.autograd.functional import hessian, hvp, jvp as autograd_jvp, vhp

    outputs, make = FUNCTIONAL_CASES[name]
    X = make()
    v = _randn(*X.shape)
    loss = lambda X: outputs(X).square().sum()  # noqa: E731
    gradient = lambda X: torch.autograd.grad(loss(X.requires_grad_()), X)[0]  # noqa: E731
    eps = 1e-6
    _, Jv = autograd_jvp(outputs, X, v)
    torch.testing.assert_close(Jv, (outputs(X + eps * v) - outputs(X - eps * v)) / (2 * eps),
                               rtol=1e-6, atol=1e-8)
    _, Hv = hvp(loss, X, v)
    torch.testing.assert_close(Hv, (gradient(X + eps * v) - gradient(X - eps * v)) / (2 * eps),
                               rtol=1e-6, atol=1e-7)
    _, vH = vhp(loss, X, v)
    torch.testing.assert_close(vH, Hv, rtol=1e-10, atol=1e-10)  # the Hessian is symmetric
    H = hessian(loss, X).reshape(X.numel(), X.numel())
    torch.testing.assert_close(H @ v.reshape(-1), Hv.reshape(-1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["recurrence", "cayley", "spectral_normalize"])
def test_forward_over_reverse_and_forward_over_forward(name):
    """Under a forward-mode level every op runs its differentiable recomputation, so
    ``jvp`` of ``grad`` (forward over reverse), ``torch.func.hessian`` (``jacfwd`` of
    ``jacrev``), ``jvp`` of ``jvp`` and ``jacfwd`` of ``jacfwd`` give the double-backward
    Hessian (``jvp`` of ``jvp`` once left out each op's own second derivative, silently)."""
    outputs, make = FUNCTIONAL_CASES[name]
    X = make()
    v, w = _randn(*X.shape), _randn(*X.shape)
    loss = lambda X: outputs(X).square().sum()  # noqa: E731
    H = torch.autograd.functional.hessian(loss, X)
    Hv = torch.autograd.functional.hvp(loss, X, v)[1]
    torch.testing.assert_close(jvp(grad(loss), (X,), (v,))[1], Hv, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(torch.func.hessian(loss)(X), H, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(jacfwd(jacfwd(loss))(X), H, rtol=1e-9, atol=1e-11)
    wHv = jvp(lambda X: jvp(loss, (X,), (v,))[1], (X,), (w,))[1]
    torch.testing.assert_close(wHv, (w * Hv).sum(), rtol=1e-9, atol=1e-11)


def test_forward_ad_tangents_through_other_transforms():
    """``forward_ad`` dual tensors meeting ``torch.func``'s reverse transforms: ``grad`` of
    a tangent, a dual tensor passed into ``grad`` (forward over reverse) and into
    ``vmap``; each once reached an op that had no forward derivative there."""
    import torch.autograd.forward_ad as fwAD

    u, W, v = _randn(3, 2, 3), _randn(3, 3) * 0.5, _randn(3, 3)
    loss = lambda W: F.recurrence(u, W, activation="tanh").square().sum()  # noqa: E731
    Hv = torch.autograd.functional.hvp(loss, W, v)[1]

    def tangent(W):
        with fwAD.dual_level():
            return fwAD.unpack_dual(loss(fwAD.make_dual(W, v))).tangent

    torch.testing.assert_close(grad(tangent)(W), Hv, rtol=1e-9, atol=1e-11)
    with fwAD.dual_level():
        through_grad = fwAD.unpack_dual(grad(loss)(fwAD.make_dual(W, v))).tangent
        through_vmap = fwAD.unpack_dual(vmap(loss)(fwAD.make_dual(torch.stack([W, 2 * W]),
                                                                  torch.stack([v, v])))).tangent
    torch.testing.assert_close(through_grad, Hv, rtol=1e-9, atol=1e-11)
    want = torch.stack([torch.autograd.functional.jvp(loss, X, v)[1] for X in (W, 2 * W)])
    torch.testing.assert_close(through_vmap, want, rtol=1e-9, atol=1e-11)


def test_a_first_order_backward_inside_a_dual_level():
    """A tangent and a training gradient in one pass: an ordinary backward to ``W`` while
    ``u`` carries a forward-mode tangent (it raised: the gradients were tied to a node
    with no forward derivative)."""
    import torch.autograd.forward_ad as fwAD

    u, W = _randn(4, 2, 3), (_randn(3, 3) * 0.4).requires_grad_()
    (want,) = torch.autograd.grad(F.recurrence(u, W, activation="tanh").square().sum(), W)
    with fwAD.dual_level():
        out = F.recurrence(fwAD.make_dual(u, torch.randn_like(u)), W, activation="tanh")
        (got,) = torch.autograd.grad(out.square().sum(), W)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _flat(out):
    return [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]


def _central_difference(fn, inputs, tangents, eps=1e-6):
    plus = _flat(fn(*[x + eps * t for x, t in zip(inputs, tangents)]))
    minus = _flat(fn(*[x - eps * t for x, t in zip(inputs, tangents)]))
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("how", ["torch.func.jvp", "forward_ad dual tensors"])
def test_forward_mode_equals_finite_differences(name, how):
    """Forward mode through every op (its reference loop, differentiated forward by
    PyTorch): ``torch.func.jvp`` and dual tensors of ``torch.autograd.forward_ad`` (these
    once went through with the tangent dropped, silently), against central differences,
    float64, along a random direction in every input at once."""
    import torch.autograd.forward_ad as fwAD

    fn, make = CASES[name]
    inputs = make()
    tangents = [torch.randn_like(x) for x in inputs]
    if how == "torch.func.jvp":
        _, got = jvp(fn, tuple(inputs), tuple(tangents))
        got = _flat(got)
    else:
        with fwAD.dual_level():
            out = fn(*[fwAD.make_dual(x, t) for x, t in zip(inputs, tangents)])
            got = [fwAD.unpack_dual(o).tangent for o in _flat(out)]
    want = _central_difference(fn, inputs, tangents)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8)


# jacfwd refuses complex inputs itself ("Expected all inputs to be real")
@pytest.mark.parametrize("name", [name for name in CASES if "complex" not in name])
def test_jacfwd_equals_jacrev(name):
    """``jacfwd`` (``vmap`` of forward mode through the reference loop) and ``jacrev``
    (``vmap`` of the closed-form backward) build the same Jacobian, in each input."""
    fn, make = CASES[name]
    inputs = make()
    argnums = tuple(range(len(inputs)))
    by_forward = jacfwd(lambda *xs: tuple(_flat(fn(*xs))), argnums=argnums)(*inputs)
    by_reverse = jacrev(lambda *xs: tuple(_flat(fn(*xs))), argnums=argnums)(*inputs)
    torch.testing.assert_close(by_forward, by_reverse, rtol=1e-9, atol=1e-11)


def test_forward_mode_jacobian_of_autograd_functional():
    """``torch.autograd.functional.jacobian(strategy="forward-mode")`` runs on dual tensors:
    it once returned an all-zero Jacobian; now the reverse-mode one."""
    from torch.autograd.functional import jacobian

    u, W = _randn(4, 2, 3), _randn(3, 3)
    fn = lambda W: F.recurrence(u, W, activation="tanh")  # noqa: E731
    forward = jacobian(fn, W, strategy="forward-mode", vectorize=True)
    torch.testing.assert_close(forward, jacobian(fn, W), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["recurrence", "cayley", "spectral_normalize"])
def test_reverse_over_forward_second_derivatives(name):
    """``grad`` of a ``jvp`` and ``jacrev`` of ``jacfwd`` (reverse over forward), and eager
    autograd of a ``forward_ad`` tangent: a Hessian-vector product and the Hessian, equal
    to the double-backward ones."""
    import torch.autograd.forward_ad as fwAD

    outputs, make = FUNCTIONAL_CASES[name]
    X = make()
    v = _randn(*X.shape)
    loss = lambda X: outputs(X).square().sum()  # noqa: E731
    want = torch.autograd.functional.hvp(loss, X, v)[1]
    Hv = grad(lambda X: jvp(loss, (X,), (v,))[1])(X)
    torch.testing.assert_close(Hv, want, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(jacrev(jacfwd(loss))(X), torch.autograd.functional.hessian(loss, X),
                               rtol=1e-9, atol=1e-11)
    # eager: the gradient of a forward_ad tangent (it once kept only the primal's graph)
    Xr = X.clone().requires_grad_()
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(loss(fwAD.make_dual(Xr, v))).tangent
    torch.testing.assert_close(torch.autograd.grad(tangent, Xr)[0], want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["repeated below the top", "repeated top"])
def test_spectral_radius_forward_mode_where_eigenvalues_repeat(kind):
    """The radius's forward mode where eigenvalues repeat: below the top (a diagonal M),
    second derivatives exact by reverse over forward; at the top (M = c I, not
    differentiable), the first derivative the forward picked and no NaN."""
    M = torch.diag(torch.tensor([1.5, 0.3, 0.3], dtype=DT)) if kind == "repeated below the top" \
        else 1.5 * torch.eye(3, dtype=DT)
    v = _randn(3, 3)
    Mr = M.clone().requires_grad_()
    (dsigma,) = torch.autograd.grad(F.spectral_radius(Mr), Mr)
    torch.testing.assert_close(jvp(F.spectral_radius, (M,), (v,))[1], (dsigma * v).sum())
    loss = lambda M: F.spectral_radius(M).square()  # noqa: E731
    Hv = grad(lambda M: jvp(loss, (M,), (v,))[1])(M)
    if kind == "repeated below the top":
        torch.testing.assert_close(Hv, torch.autograd.functional.hvp(loss, M, v)[1],
                                   rtol=1e-9, atol=1e-11)
    else:  # d(2 sigma <dsigma, v>) with dsigma held, as the double backward does there
        torch.testing.assert_close(Hv, 2 * (dsigma * v).sum() * dsigma)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_radius_forward_mode_at_a_tie_takes_the_ops_derivative(dtype):
    """An orthogonal M (every modulus 1) above 64 x 64, where the op's routes pick the
    dominant eigenvector: the tangent is ``<d sigma / d M, V>`` with the op's gradient, as
    reverse mode has it (it once took the full eigendecomposition's own pick: 1.23 vs
    0.44)."""
    Q, _ = torch.linalg.qr(torch.randn(80, 80, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    M, V = Q.to(dtype), torch.randn(80, 80, dtype=dtype)
    Mr = M.clone().requires_grad_()
    (dsigma,) = torch.autograd.grad(F.spectral_radius(Mr), Mr)
    torch.testing.assert_close(jvp(F.spectral_radius, (M,), (V,))[1], (dsigma * V).sum())


@pytest.mark.parametrize("op", ["recurrence", "spectral_radius"])
def test_jvp_of_vmap_and_vmap_of_jvp(op):
    """Forward mode outside and inside ``vmap`` (batched primals): per sample, the
    double-backward ``jvp`` (the radius's once failed there: a host sync under vmap)."""
    u = _randn(4, 2, 3)
    loss = (lambda W: F.recurrence(u, W, activation="tanh").square().sum()) if op == "recurrence" \
        else (lambda M: F.spectral_radius(M).square())
    Ws, Vs = _randn(2, 3, 3) * 0.5, _randn(2, 3, 3)
    want = torch.stack([torch.autograd.functional.jvp(loss, W, V)[1] for W, V in zip(Ws, Vs)])
    torch.testing.assert_close(jvp(vmap(loss), (Ws,), (Vs,))[1], want, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(vmap(lambda W, V: jvp(loss, (W,), (V,))[1])(Ws, Vs), want,
                               rtol=1e-9, atol=1e-11)


def test_outside_transforms_the_registered_op_runs():
    """Eager autograd records the registered op's own node (what compiled graphs hold)."""
    W = torch.randn(3, 3, requires_grad=True)
    h = F.recurrence(torch.randn(4, 2, 3), W, activation="tanh")
    assert h.grad_fn.name() == "GeneratedBackwardFor_fastunitary_recurrence_defaultBackward"


MODULES = {
    "ScuRNN": lambda: fnn.ScuRNN(3, 6),
    "ScoRNN": lambda: fnn.ScoRNN(3, 6),
    "ENRNN": lambda: fnn.ENRNN(3, 4, 2),
    "MomentumLSTM": lambda: fnn.MomentumLSTM(3, 5, mu=0.6, step=0.6),
    "AdamLSTM": lambda: fnn.AdamLSTM(3, 5),
    "NesterovLSTM proj_size": lambda: fnn.NesterovLSTM(3, 5, proj_size=2),
    "MomentumRNN": lambda: fnn.MomentumRNN(3, 5),
    "SBORNN": lambda: fnn.SBORNN(3, 5, method="heavy_ball", steps=2),
}


@pytest.mark.parametrize("name", MODULES)
def test_per_sample_gradients_of_every_module(name):
    """``vmap(grad(...))`` over a batch (the per-sample gradients of DP-SGD and influence
    functions) equals one ordinary backward per sample."""
    torch.manual_seed(0)
    model = MODULES[name]().double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x = _randn(4, 5, 3)  # (samples, T, input): each sample is a batch of one

    # buffers are inputs, not captured: ENRNN's sticky rule writes one in training
    def loss(p, b, xs):
        out = functional_call(model, (p, b), (xs.unsqueeze(1),))[0]
        return _sum_of_outputs(out)

    with warnings.catch_warnings():
        # functorch's fallback warns "There is a performance drop because we have not yet
        # implemented the batching rule": every op a module runs must have one
        warnings.filterwarnings("error", message=".*batching rule.*")
        per_sample = vmap(grad(loss), in_dims=(None, None, 0))(params, buffers, x)
    for i in range(x.shape[0]):
        model.zero_grad()
        out = model(x[i].unsqueeze(1))[0]
        _sum_of_outputs(out).backward()
        for k, p in model.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad, rtol=1e-9, atol=1e-11,
                                       msg=lambda m: f"{name}, sample {i}, {k}: {m}")


@pytest.mark.parametrize("name", MODULES)
def test_second_derivatives_of_every_module_under_transforms(name):
    """Reverse over reverse through a whole module under ``torch.func`` (float64): a
    Hessian-vector product in the parameters (``grad`` of ``grad``, as MAML's meta-gradient
    takes it) equals eager double backward, and per-sample gradient-norm penalties
    (``vmap`` of ``grad`` of a norm of ``grad``) equal a loop over samples."""
    torch.manual_seed(0)
    model = MODULES[name]().double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    directions = {k: torch.randn_like(v) for k, v in params.items()}
    x = _randn(3, 4, 3)  # (samples, T, input)

    def loss(p, xs):  # ENRNN's sticky rule writes a buffer: a fresh copy per call
        b = {k: v.clone() for k, v in buffers.items()}
        return functional_call(model, (p, b), (xs.unsqueeze(1),))[0].tanh().square().sum()

    def along(g):
        return sum((g[k] * directions[k]).sum() for k in g)

    hvp = grad(lambda p: along(grad(loss)(p, x[0])))(params)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(loss(leaves, x[0]), list(leaves.values()), create_graph=True)
    want = torch.autograd.grad(along(dict(zip(leaves, grads))), list(leaves.values()))
    for (k, got), w in zip(hvp.items(), want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-8, atol=1e-10, msg=lambda m: f"{k}: {m}")

    def penalty(p, xs):
        return sum(g.square().sum() for g in grad(loss)(p, xs).values())

    per_sample = vmap(grad(penalty), in_dims=(None, 0))(params, x)
    for i in range(x.shape[0]):
        for k, w in grad(penalty)(params, x[i]).items():
            torch.testing.assert_close(per_sample[k][i], w, rtol=1e-8, atol=1e-10,
                                       msg=lambda m: f"sample {i}, {k}: {m}")


@pytest.mark.parametrize("name", MODULES)
def test_forward_mode_through_every_module(name):
    """``jacfwd`` in all parameters equals ``jacrev`` (buffers an input, as for per-sample
    gradients: ENRNN's sticky rule writes one), and a forward-mode directional derivative
    with dual parameters equals the central difference (float64), also after an inference
    call cached W (it once returned the cached W, tangent dropped) and for MomentumLSTM,
    whose eager route, PyTorch's oneDNN LSTM, has no forward derivative."""
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    model = MODULES[name]().double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x = _randn(4, 2, 3)

    def out(p, b):
        return functional_call(model, (p, b), (x,))[0]

    by_forward = jacfwd(out)(params, buffers)
    by_reverse = jacrev(out)(params, buffers)
    for k in params:
        torch.testing.assert_close(by_forward[k], by_reverse[k], rtol=1e-9, atol=1e-11,
                                   msg=lambda m: f"{name}, {k}: {m}")
    tangents = {k: torch.randn_like(v) for k, v in params.items()}
    with torch.no_grad():  # an inference call caches W, keyed by storage and version,
        out(params, buffers)  # which a dual parameter shares with its primal
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(v, tangents[k]) for k, v in params.items()}
        got = fwAD.unpack_dual(out(duals, buffers)).tangent
    eps = 1e-6
    shifted = [out({k: v + sign * eps * tangents[k] for k, v in params.items()}, buffers)
               for sign in (1, -1)]
    torch.testing.assert_close(got, (shifted[0] - shifted[1]) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_forward_mode_through_momentum_lstm_in_float32():
    """In float32 on the CPU, MomentumLSTM's eager route is PyTorch's oneDNN LSTM, which
    has no forward derivative ("Trying to use forward AD with mkldnn_rnn_layer"): dual
    parameters take the library's op instead, with the tangent ``torch.func.jvp`` gives."""
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    model = fnn.MomentumLSTM(3, 5, mu=0.6, step=0.6).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    tangents = {k: torch.randn_like(v) for k, v in params.items()}
    x = torch.randn(4, 2, 3)
    out = lambda p: functional_call(model, p, (x,))[0]  # noqa: E731
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(v, tangents[k]) for k, v in params.items()}
        got = fwAD.unpack_dual(out(duals)).tangent
    torch.testing.assert_close(got, jvp(out, (params,), (tangents,))[1], rtol=1e-5, atol=1e-6)


def test_func_grad_under_torch_compile():
    """A compiled function that takes torch.func.grad of a module gives eager's gradients."""
    model = fnn.ScoRNN(3, 8)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(5, 2, 3)

    def loss(p, x):
        return _sum_of_outputs(functional_call(model, p, (x,))[0])

    want = grad(loss)(params, x)
    got = torch.compile(lambda p, x: grad(loss)(p, x))(params, x)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


# -- vmap batching rules ---------------------------------------------------------------------

#: name -> (function, inputs, number of leading inputs vmapped in every case: the sequence
#: inputs of a sequence op, (T, B, .) or (B, .); the rest are weights, shared by the
#: samples unless a test vmaps them too; the matrix ops' inputs are all vmapped)
VMAP_CASES = {
    "recurrence modrelu complex": (
        lambda u, h0, W, b: F.recurrence(u, W, b, h0, activation="modrelu"),
        lambda: (_randn(5, 2, 3, dtype=torch.complex128), _randn(2, 3, dtype=torch.complex128),
                 _randn(3, 3, dtype=torch.complex128) * 0.4, _randn(3) * 0.3), 2),
    "recurrence modrelu default bias": (
        lambda u, W: F.recurrence(u, W, activation="modrelu"),
        lambda: (_randn(5, 2, 4), _randn(4, 4) * 0.4), 1),
    "recurrence modrelu real leaky": (
        lambda u, W, b: F.recurrence(u, W, b, activation="modrelu", leak=0.6),
        lambda: (_randn(5, 2, 4), _randn(4, 4) * 0.4, _randn(4) * 0.3), 1),
    "recurrence tanh": (lambda u, h0, W: F.recurrence(u, W, None, h0, activation="tanh"),
                        lambda: (_randn(5, 2, 4), _randn(2, 4), _randn(4, 4) * 0.4), 2),
    "lstm_recurrence": (lambda g, h0, c0, W: F.lstm_recurrence(g, W, h0, c0),
                        lambda: (_randn(5, 2, 12), _randn(2, 3), _randn(2, 3),
                                 _randn(12, 3) * 0.4), 3),
    "lstm_recurrence projected": (
        lambda g, c0, W, Wr: F.lstm_recurrence(g, W, None, c0, W_hr=Wr),
        lambda: (_randn(5, 2, 12), _randn(2, 3), _randn(12, 2) * 0.4, _randn(2, 3)), 2),
    "momentum_scan": (lambda u, v0, mu: F.momentum_scan(u, mu, 0.5, v0),
                      lambda: (_randn(5, 2, 4), _randn(2, 4), torch.rand(4, dtype=DT)), 2),
    "sbo_recurrence gd": (lambda u, W: F.sbo_recurrence(u, W, method="gd", steps=2),
                          lambda: (_randn(5, 2, 4), _randn(4, 4) * 0.4), 1),
    "sbo_recurrence heavy_ball": (
        lambda u, h0, m0, W, mu: F.sbo_recurrence(u, W, h0, m0, method="heavy_ball", mu=mu,
                                                  steps=2),
        lambda: (_randn(5, 2, 4), _randn(2, 4), _randn(2, 4), _randn(4, 4) * 0.4,
                 torch.tensor(0.5, dtype=DT)), 3),
    "sbo_recurrence nesterov": (
        lambda u, W, mu: F.sbo_recurrence(u, W, method="nesterov", mu=mu),
        lambda: (_randn(5, 2, 4), _randn(4, 4) * 0.4, torch.tensor(0.5, dtype=DT)), 1),
    "cayley complex": (lambda A, th: F.cayley(A, torch.exp(1j * th)),
                       lambda: (_skew(4, torch.complex128), _randn(4)), 2),
    "spectral_radius": (lambda M: F.spectral_radius(M), lambda: (_randn(5, 5),), 1),
}
SEQUENCE_OPS = [name for name in VMAP_CASES if not name.startswith(("cayley", "spectral"))]

#: the implementations each sequence op's forward and backward call, by name prefix
IMPLEMENTATIONS = {"recurrence": ("recurrence_forward", "recurrence_backward"),
                   "lstm_recurrence": ("lstm_forward", "lstm_backward"),
                   "momentum_scan": ("linear_scan", "linear_scan_backward"),
                   "sbo_recurrence": ("sbo_forward", "sbo_backward")}

SAMPLES = 3


def _samples_of(inputs, vmapped_inputs, weights_too):
    """Each input stacked for ``SAMPLES`` samples (fresh values per sample), and the
    in_dims: the first ``vmapped_inputs`` vmapped, the rest unless ``weights_too``."""
    vmapped = [k < vmapped_inputs or weights_too for k in range(len(inputs))]
    stacked = tuple(torch.stack([x + 0.1 * k * torch.randn_like(x) for k in range(SAMPLES)])
                    if v else x for x, v in zip(inputs, vmapped))
    return stacked, tuple(0 if v else None for v in vmapped)


def _tensors(out):
    """An op's outputs as a tuple of tensors (sbo_recurrence's ``"gd"`` has no momentum:
    ``None``)."""
    return tuple(o for o in (out if isinstance(out, tuple) else (out,)) if o is not None)


def _per_sample(xs, dims, i):
    return [x if d is None else x[i] for x, d in zip(xs, dims)]


def _count_calls(monkeypatch, name):
    """The names of the implementations of op ``name`` called from now on, in order."""
    calls = []
    for fname in IMPLEMENTATIONS[name.split()[0]]:
        real = getattr(reference, fname)
        monkeypatch.setattr(reference, fname,
                            lambda *a, _real=real, _f=fname: calls.append(_f) or _real(*a))
    return calls


@pytest.mark.parametrize("weights_too", [False, True], ids=["shared weights", "vmapped weights"])
@pytest.mark.parametrize("name", VMAP_CASES)
def test_vmap_of_grad_of_an_op_equals_a_loop_over_samples(name, weights_too, monkeypatch):
    """Outputs and every input's gradient per sample (the weights' too) equal those of one
    call per sample; with shared weights, a sequence op's forward and backward run once."""
    torch.manual_seed(0)
    fn, make, vmapped_inputs = VMAP_CASES[name]
    xs, dims = _samples_of(make(), vmapped_inputs, weights_too)
    loss = lambda *a: _sum_of_outputs(fn(*a))  # noqa: E731
    argnums = tuple(range(len(xs)))
    counted = name in SEQUENCE_OPS and not weights_too
    calls = _count_calls(monkeypatch, name) if counted else []
    outputs = vmap(lambda *a: _tensors(fn(*a)), in_dims=dims)(*xs)
    grads = vmap(grad(loss, argnums=argnums), in_dims=dims)(*xs)
    if counted:  # the vmap, then the forward and backward of vmap(grad)
        forward, backward = IMPLEMENTATIONS[name.split()[0]]
        assert calls == [forward, forward, backward]
    for i in range(SAMPLES):
        leaves = [x.clone().requires_grad_() for x in _per_sample(xs, dims, i)]
        want_out = fn(*leaves)
        want = torch.autograd.grad(_sum_of_outputs(want_out), leaves)
        for got, w in zip(outputs, _tensors(want_out), strict=True):
            torch.testing.assert_close(got[i], w, rtol=1e-10, atol=1e-12)
        for k, w in enumerate(want):
            torch.testing.assert_close(grads[k][i], w, rtol=1e-9, atol=1e-11,
                                       msg=lambda m: f"sample {i}, input {k}: {m}")


@pytest.mark.parametrize("name", SEQUENCE_OPS)
def test_nested_vmap_of_per_sample_gradients(name):
    """vmap of vmap (samples of groups): each level folds its samples into the batch and
    the backward sums the weight gradients per sample of both levels."""
    torch.manual_seed(0)
    fn, make, vmapped_inputs = VMAP_CASES[name]
    xs, dims = _samples_of(make(), vmapped_inputs, weights_too=False)
    xs = tuple(torch.stack([x, x.flip(0)]) if d == 0 else x for x, d in zip(xs, dims))
    g = grad(lambda *a: _sum_of_outputs(fn(*a)), argnums=tuple(range(len(xs))))
    got = vmap(vmap(g, in_dims=dims), in_dims=dims)(*xs)
    for j in range(2):
        for i in range(SAMPLES):
            want = g(*[x if d is None else x[j][i] for x, d in zip(xs, dims)])
            for k, w in enumerate(want):
                torch.testing.assert_close(got[k][j][i], w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", SEQUENCE_OPS)
def test_one_sample_and_chunked_vmap(name):
    """A vmap of one sample (the backward's one-sample form has no samples axis), and
    ``chunk_size=2`` over 3 samples (chunks of 2 and of 1)."""
    torch.manual_seed(0)
    fn, make, vmapped_inputs = VMAP_CASES[name]
    xs, dims = _samples_of(make(), vmapped_inputs, weights_too=False)
    g = grad(lambda *a: _sum_of_outputs(fn(*a)), argnums=tuple(range(len(xs))))
    chunked = vmap(g, in_dims=dims, chunk_size=2)(*xs)
    single = vmap(g, in_dims=dims)(*[x[:1] if d == 0 else x for x, d in zip(xs, dims)])
    for i in range(SAMPLES):
        want = g(*_per_sample(xs, dims, i))
        for k, w in enumerate(want):
            torch.testing.assert_close(chunked[k][i], w, rtol=1e-9, atol=1e-11)
            if i == 0:
                torch.testing.assert_close(single[k][0], w, rtol=1e-9, atol=1e-11)


def test_an_outer_vmap_over_what_only_the_loss_reads():
    """The outer level vmaps the targets only: the op's inputs are batched at the inner
    level alone, its cotangents at both."""
    torch.manual_seed(0)
    u, W, b = _randn(2, 4, 1, 3), _randn(3, 3) * 0.4, _randn(3) * 0.3
    targets = _randn(3, 4, 1, 3)

    def loss(W, u, target):
        return (F.recurrence(u, W, b, activation="modrelu", leak=0.7) - target).pow(2).sum()

    got = vmap(vmap(grad(loss), in_dims=(None, 0, None)), in_dims=(None, None, 0))(W, u, targets)
    for j in range(3):
        for i in range(2):
            torch.testing.assert_close(got[j][i], grad(loss)(W, u[i], targets[j]),
                                       rtol=1e-9, atol=1e-11)


TRITON_CASES = {
    "recurrence": (lambda u, W, b, backend: F.recurrence(u, W, b, activation="modrelu",
                                                         backend=backend),
                   lambda: (torch.randn(4, 2, 6, dtype=torch.complex64),
                            torch.randn(6, 6, dtype=torch.complex64) * 0.3,
                            torch.randn(6) * 0.2)),
    "lstm_recurrence": (lambda g, W, backend: F.lstm_recurrence(g, W, backend=backend),
                        lambda: (torch.randn(4, 2, 32), torch.randn(32, 8) * 0.3)),
    "momentum_scan": (lambda u, mu, backend: F.momentum_scan(u, mu, 0.5, backend=backend),
                      lambda: (torch.randn(4, 2, 8), torch.rand(8))),
}


@pytest.mark.parametrize("name", TRITON_CASES)
def test_per_sample_gradients_on_the_triton_backend_equal_a_loop(name):
    """The kernels under the rules (compiled on CUDA, else Triton's interpreter), float32, with
    float32 matmuls allowed to run in bfloat16 (``"medium"``, which the kernels' backward
    overrides for its products): per-sample gradients equal one call per sample."""
    torch.manual_seed(0)
    fn, make = TRITON_CASES[name]
    inputs = [x.to(KERNEL_DEVICE) for x in make()]
    xs = (torch.stack([inputs[0], -inputs[0], 2 * inputs[0]]), *inputs[1:])
    dims = (0,) + (None,) * (len(inputs) - 1)
    argnums = tuple(range(len(inputs)))
    loss = lambda *a: _sum_of_outputs(fn(*a, "triton"))  # noqa: E731
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        got = vmap(grad(loss, argnums=argnums), in_dims=dims)(*xs)
        want = [grad(loss, argnums=argnums)(*_per_sample(xs, dims, i)) for i in range(3)]
    finally:
        torch.set_float32_matmul_precision(previous)
    for i in range(3):
        for k in argnums:
            torch.testing.assert_close(got[k][i], want[i][k], rtol=1e-5, atol=1e-6)


def test_per_sample_gradients_under_autocast_equal_a_loop():
    """The ops keep autocast out of their arithmetic, the per-sample sums included."""
    torch.manual_seed(0)
    u, W, b = torch.randn(3, 6, 1, 8), torch.randn(8, 8) * 0.3, torch.randn(8) * 0.2
    g, Wl = torch.randn(3, 6, 1, 16), torch.randn(16, 4) * 0.3

    def loss(W, b, Wl, u, g):
        h = F.recurrence(u, W, b, activation="modrelu")
        return _sum_of_outputs(h) + _sum_of_outputs(F.lstm_recurrence(g, Wl))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = vmap(grad(loss, argnums=(0, 1, 2)), in_dims=(None, None, None, 0, 0))(W, b, Wl, u, g)
        want = [grad(loss, argnums=(0, 1, 2))(W, b, Wl, u[i], g[i]) for i in range(3)]
    for i in range(3):
        for k in range(3):
            torch.testing.assert_close(got[k][i], want[i][k], rtol=1e-5, atol=1e-6)


def test_vmap_over_an_empty_dimension_raises():
    with pytest.raises(ValueError, match="empty dimension"):
        vmap(lambda u: F.recurrence(u, torch.eye(3), activation="tanh"))(torch.randn(0, 4, 1, 3))
