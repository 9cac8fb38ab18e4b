"""How a registered op reaches its implementation.

Each op ``X`` is a pair of ``torch.library`` custom ops, ``fastunitary::X`` and
``fastunitary::X_backward``, whose implementations receive the resolved backend name as
an explicit argument (the route DESIGN.md found to compile with ``fullgraph=True``, also
under ``TRITON_INTERPRET=1``). The reference implementation lives in
``fastunitary.reference``; the Triton one in the module ``fastunitary.kernels.X``, which
provides ``forward`` and ``backward`` with the same arguments as the two custom ops.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
import torch.autograd.forward_ad as fwAD
from torch._C import _functorch as ft


def kernel_module(op: str) -> ModuleType:
    """The Triton implementation of ``op`` (exists when ``resolve_backend`` chose it)."""
    return importlib.import_module(f"fastunitary.kernels.{op}")


def autocast_off(t: torch.Tensor):
    """Context in which an op implementation runs: autocast off on ``t``'s device.

    A custom op's body runs below the autocast dispatch key only for the op call itself;
    the torch functions it calls would otherwise be autocast again (a backward invoked
    inside an autocast region would compute its products in bfloat16). The ops manage
    their own precision, so autocast stays out of them.
    """
    return torch.autocast(device_type=t.device.type, enabled=False)


class _UnpackedContext:
    """An op's autograd ``ctx`` with its saved tensors unpacked once, for the checks of
    the mode a backward runs in and the op's own backward both to read. A saved-tensor
    hook may allow a single unpack: ``torch.utils.checkpoint(use_reentrant=False)``
    recomputes the forward on the first and raises on a second. Other attributes are
    the context's own."""

    def __init__(self, ctx):
        self._ctx = ctx
        self.saved_tensors = ctx.saved_tensors

    def __getattr__(self, name):
        return getattr(self._ctx, name)


class _FirstOrderOnly(torch.autograd.Function):
    """Passes tensors through (as views) as one node whose backward raises. Tied to an op's
    gradients computed by its backward ops at a live functorch level, it makes that level
    raise if it differentiates them again: ``torch.autograd.grad(..., create_graph=True)``
    called inside the transformed function, which the op's backward cannot tell apart from
    the transform's own first-order call (any answer there would lack the op's term)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*tensors):
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError(
            "a gradient through a fastunitary op that torch.autograd.grad(create_graph=True) "
            "took inside a torch.func transform cannot be differentiated again by that same "
            "transform; take the inner derivative with torch.func.grad (grad of grad) or "
            "torch.func.vjp instead, or run both in eager autograd")


def recomputed_gradients(forward, inputs, needs, grad_outputs) -> tuple:
    """The gradients of ``forward(*inputs)`` as differentiable tensor ops: autograd through
    a step-by-step recomputation (a reference loop written out of place). The path of an
    op's backward under ``create_graph=True``, whose result a double backward (an
    input-gradient penalty, a Hessian-vector product) differentiates again; the backward
    ops themselves have no derivative.

    Args:
        forward: the differentiable loop; returns a tensor or a tuple of them.
        inputs: its arguments (tensors or ``None``), in the op's order.
        needs: ``ctx.needs_input_grad`` for them.
        grad_outputs: one cotangent per output, ``None`` for an output not differentiated.
    Returns:
        One gradient per input, ``None`` where the input is absent or not needed.
    """
    wanted = [isinstance(t, torch.Tensor) and need for t, need in zip(inputs, needs)]
    # the backward of a level that has ended (the function vjp returned, called later) gets
    # its saved tensors still wrapped for that level; vjp cannot wrap them again
    inputs = [ft.unwrap_if_dead(t) if isinstance(t, torch.Tensor) else t for t in inputs]
    grad_outputs = [None if g is None else ft.unwrap_if_dead(g) for g in grad_outputs]

    def of_the_wanted(*chosen):  # the loop as a function of the inputs differentiated
        given = iter(chosen)
        outputs = forward(*(next(given) if w else t for t, w in zip(inputs, wanted)))
        return outputs if isinstance(outputs, tuple) else (outputs,)

    # torch.func.vjp rather than torch.autograd.grad: it also runs where the backward is
    # itself vmapped (an autograd.Function's backward under vmap, whose batched tensors
    # autograd.grad cannot differentiate), and it differentiates fresh wrappers of the
    # inputs, which may be one tensor twice (h0 is c0) or depend on each other (h0 from u):
    # each gets its partial derivative, not a total one that the outer graph would add to
    # the shared path again
    first = next(t for t in inputs if isinstance(t, torch.Tensor))
    with torch.enable_grad(), autocast_off(first):  # the ops' own precision, as fused
        outputs, vjp_of_the_loop = torch.func.vjp(
            of_the_wanted, *(t for t, w in zip(inputs, wanted) if w))
        cotangents = tuple(None if o is None else torch.zeros_like(o) if g is None else g
                           for o, g in zip(outputs, grad_outputs))
        grads = iter(vjp_of_the_loop(cotangents))  # create_graph: grad mode is on
    return tuple(next(grads) if w else None for w in wanted)


def _grad_level(t: torch.Tensor) -> int:
    """The functorch level of ``t``'s outermost gradient-tracking wrapper (``torch.func.grad``,
    ``vjp``, ``jacrev``), past any ``vmap`` wrappers; 0 where there is none (eager)."""
    while ft.is_functorch_wrapped_tensor(t):
        if ft.is_gradtrackingtensor(t):
            return ft.maybe_get_level(t)
        t = ft.get_unwrapped(t)
    return 0


def _level_marker(output) -> tuple[int, torch.Tensor | None]:
    """``(level, marker)`` for an op node made under transforms: the functorch level of the
    graph the node is in (an output is made at that level; 0: eager, under ``vmap`` alone),
    and an empty tensor wrapped at that level, which :func:`_differentiated_again` asks
    whether the level has ended (functorch reuses level numbers: the function ``vjp``
    returns runs the backward of an ended level, maybe under a new one of the same
    number)."""
    outputs = output if isinstance(output, tuple) else (output,)
    level = _grad_level(next(o for o in outputs if o is not None))
    if not level:
        return 0, None
    with torch._C._DisableFuncTorch():  # a plain tensor, for the one wrapper at ``level``
        empty = torch.empty(0)
    return level, ft._wrap_for_grad(empty, level)


def _differentiated_again(level: int, marker, tensors) -> bool:
    """Whether the gradients that a backward at functorch ``level`` (0: eager; ``marker``
    from :func:`_level_marker`) computes from ``tensors`` (its saved tensors and incoming
    gradients) can be differentiated again: some of them are tracked by another live level
    (``grad`` of ``grad``, ``jacrev`` of ``jacrev``, the function ``vjp`` returned, called
    under ``grad``) or by eager autograd beneath the transforms. Where none is, the
    gradients are constants to every other level, and the backward ops (which have no
    derivative) give them exactly.

    Eager autograd (level 0) reads its own mode: ``create_graph`` turns grad mode on."""
    if not torch.is_grad_enabled():
        return False
    if level == 0:
        return True
    own = None if ft.is_dead_tensor_wrapper(marker) else level
    for t in tensors:
        while isinstance(t, torch.Tensor) and ft.is_functorch_wrapped_tensor(t):
            if (ft.is_gradtrackingtensor(t) and not ft.is_dead_tensor_wrapper(t)
                    and ft.maybe_get_level(t) != own and t.requires_grad):
                return True
            t = ft.get_unwrapped(t)
        if isinstance(t, torch.Tensor) and t.requires_grad:  # eager, beneath the transforms
            return True
    return False


def _carries_a_tangent(args) -> bool:
    """Whether any argument is a dual tensor of ``torch.autograd.forward_ad`` (read only
    inside a ``dual_level``: outside one, no tensor has a tangent)."""
    if torch.autograd.forward_ad._current_level < 0:
        return False
    return any(isinstance(a, torch.Tensor) and fwAD.unpack_dual(a).tangent is not None
               for a in args)


def _forward_mode_active(args) -> bool:
    """Whether an op call is in forward mode: under ``torch.func.jvp`` (or ``jacfwd``), or
    with an argument that carries a ``forward_ad`` tangent. Under another transform (a
    dual tensor passed into ``vmap`` or ``grad``) any open ``dual_level`` counts, as
    ``unpack_dual`` has no batching rule to look at the arguments with."""
    if torch._C._are_functorch_transforms_active():
        return torch.autograd.forward_ad._current_level >= 0 or _under_functorch_jvp()
    return _carries_a_tangent(args)


def _under_functorch_jvp() -> bool:
    """Whether a ``torch.func.jvp`` (or ``jacfwd``) level is active (transforms are)."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == torch._C._functorch.TransformType.Jvp
               for i in retrieve_all_functorch_interpreters())


def differentiable(op, backward, setup_context, forward_mode):
    """Registers ``backward`` and ``setup_context`` as ``op``'s autograd formula (``op`` a
    ``torch.library`` custom op) and returns ``op`` as a callable that also works under
    ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``vmap``
    and compositions) and in forward mode (``torch.autograd.forward_ad``).

    Three routes:

    - everywhere else (eager autograd, ``torch.compile``, ``torch.export``): the registered
      op itself, one node in a graph;
    - under ``torch.func`` transforms without forward mode: the op inside an
      ``autograd.Function`` with the same ``setup_context`` and ``backward`` (the wrapper
      ``torch.library`` generates lacks the ``setup_context`` staticmethod the transforms
      require, pytorch/pytorch#168393, #170834). Its vmap rule is generated from the two,
      so the batching rules registered for the two ops (:func:`register_folded_vmap`,
      :func:`register_stacked_vmap`) batch them. Its backward runs the backward ops, or,
      where another level (``grad`` of ``grad``) or eager autograd beneath the transforms
      tracks what it reads, the op's ``create_graph`` path, which that level differentiates;
    - in forward mode (a ``torch.func.jvp``/``jacfwd`` level, or an argument carrying a
      ``forward_ad`` tangent): ``forward_mode(*args)``, the op's outputs by differentiable
      tensor ops (its reference loop; ``None`` for an output kept for the backward only),
      which PyTorch differentiates in every mode and to every order itself: ``jvp`` of
      ``jvp``, ``grad`` of ``jvp``, ``jacfwd`` of ``jacrev`` (``torch.func.hessian``), and a
      backward inside a ``dual_level``. Correct, not fast: no fused forward-mode kernel.

    An op's backward under ``create_graph=True`` (eager) or under a level that will be
    differentiated again may take :func:`recomputed_gradients`, which a double backward
    differentiates.
    """

    def backward_in_any_mode(ctx, *grads):
        ctx = _UnpackedContext(ctx)
        # a cotangent carrying a forward-mode tangent (a dual tensor passed to
        # autograd.grad): the backward ops have no forward derivative, the create_graph
        # path (plain tensor ops) has
        if _forward_mode_active((*ctx.saved_tensors, *grads)):
            with torch.enable_grad():
                return backward(ctx, *grads)
        return backward(ctx, *grads)

    op.register_autograd(backward_in_any_mode, setup_context=setup_context)
    op_setup_context, op_backward = setup_context, backward

    # defined in the class body: autograd.Function checks for them when the class is made
    class Function(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(*args):
            return op(*args)

        @staticmethod
        def setup_context(ctx, inputs, output):
            op_setup_context(ctx, inputs, output)
            ctx.fastunitary_level = _level_marker(output)

        @staticmethod
        def backward(ctx, *grads):
            # functorch builds every backward's graph (create_graph), but only a level below
            # this one, or eager autograd beneath, can differentiate the result, and forward
            # mode can carry a tangent of it (jvp of the function vjp returned): then the
            # op's create_graph path (differentiable recomputation), else its backward ops
            ctx = _UnpackedContext(ctx)
            level, marker = ctx.fastunitary_level
            read = (*ctx.saved_tensors, *grads)
            if _forward_mode_active(read) or _differentiated_again(level, marker, read):
                with torch.enable_grad():  # the create_graph path
                    return op_backward(ctx, *grads)
            with torch.no_grad():
                out = op_backward(ctx, *grads)
            if not level or ft.is_dead_tensor_wrapper(marker):
                return out
            # this level may still differentiate them (autograd.grad with create_graph
            # inside the transformed function): tied to a node that raises if it does
            single = not isinstance(out, tuple)
            out = (out,) if single else out
            computed = [g for g in out if g is not None]
            sources = [t for t in read if t is not None]
            tied = iter(_FirstOrderOnly.apply(*computed, *sources)[:len(computed)])
            out = tuple(None if g is None else next(tied) for g in out)
            return out[0] if single else out

    def call(*args):
        if _forward_mode_active(args):
            first = next(a for a in args if isinstance(a, torch.Tensor))
            with autocast_off(first):  # the ops' own precision, as fused
                return forward_mode(*args)
        if torch._C._are_functorch_transforms_active():
            return Function.apply(*args)
        return op(*args)

    return call


# -- vmap ----------------------------------------------------------------------------------
# An op's batching rule (``torch.library.register_vmap``) receives its arguments with one
# more dimension, the vmapped one, at ``in_dims[k]`` (``None``: not vmapped), and runs the
# op once on all samples where the op's layout allows:
#
# - the matrix ops (``cayley``, ``spectral_radius``) take any leading batch dimensions: the
#   vmapped one becomes one more (:func:`register_stacked_vmap`);
# - the sequence ops run a batch ``B`` with one set of weights: when the weights are shared
#   by all samples (per-sample gradients: ``vmap(grad(loss), in_dims=(None, 0))``) the
#   samples merge into that axis, sample-major, and the backward op, told how many samples
#   its batch holds (its ``samples`` argument), sums its weight gradients per sample
#   (:func:`register_folded_vmap`). With vmapped weights (an ensemble) they loop over the
#   samples, as functorch's fallback would.
#
# Everything runs inside the ops: a rule only moves dimensions. (A rule's own arithmetic
# would run outside the ops' autocast and float32-precision guards.)

#: Where an argument or output of a sequence op keeps its batch, for register_folded_vmap:
TIME_MAJOR = "time-major"  # (T, B, ...): batch axis 1
BATCH_MAJOR = "batch-major"  # (B, ...): batch axis 0
SHARED = "shared"  # a weight: one for all samples (vmapped: the op runs once per sample)
PER_SAMPLE = "per-sample"  # an output with one leading entry per sample: a weight gradient
PLACEHOLDER = "placeholder"  # an empty tensor standing for a missing one, same for all samples


def samples_at(t: torch.Tensor | None, in_dim: int | None, axis: int, samples: int):
    """``t`` with the vmapped dimension moved to ``axis`` (a tensor that is not vmapped is
    expanded there, as a view). ``None`` stays ``None``."""
    if t is None:
        return None
    if in_dim is None:
        return t.unsqueeze(axis).expand(*t.shape[:axis], samples, *t.shape[axis:])
    return t.movedim(in_dim, axis)


def _check_samples(op, samples: int) -> None:
    if samples == 0:  # no sample to run, nor to take the outputs' shapes from
        raise ValueError(f"vmap over an empty dimension is not supported by {op}")


def loop_over_samples(op, info, in_dims, *args):
    """``op`` run once per sample and its outputs stacked (vmapped dimension 0): the batching
    rule for arguments a single call cannot take, as functorch's own fallback does it."""
    _check_samples(op, info.batch_size)
    results = []
    for i in range(info.batch_size):
        sample = [a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]
        results.append(op(*sample))
    if not isinstance(results[0], tuple):
        return torch.stack(results), 0
    return tuple(torch.stack(outs) for outs in zip(*results)), (0,) * len(results[0])


def register_stacked_vmap(op, batch_axis: int) -> None:
    """The batching rule of an op batched over leading dimensions from ``batch_axis`` on
    (every tensor argument and output): the vmapped dimension becomes one more there."""

    def rule(info, in_dims, *args):
        _check_samples(op, info.batch_size)
        out = op(*(samples_at(a, d, batch_axis, info.batch_size)
                   if isinstance(a, torch.Tensor) else a for a, d in zip(args, in_dims)))
        outs = out if isinstance(out, tuple) else (out,)
        # an empty output is a placeholder (a gradient not asked for), the same for all
        dims = tuple(batch_axis if o.numel() else None for o in outs)
        return out, dims if isinstance(out, tuple) else dims[0]

    op.register_vmap(rule)


def register_folded_vmap(op, inputs, outputs, samples_arg: int | None = None) -> None:
    """The batching rule of a sequence op: vmapped samples folded into the batch.

    Args:
        op: the custom op.
        inputs: the kind of each argument (:data:`TIME_MAJOR`, :data:`BATCH_MAJOR`,
            :data:`SHARED`, :data:`PLACEHOLDER`; ``None`` for a non-tensor), or a function
            of the arguments giving them (where a placeholder depends on an option).
        outputs: the kind of each output (:data:`TIME_MAJOR`, :data:`BATCH_MAJOR`,
            :data:`PER_SAMPLE`, :data:`PLACEHOLDER`), or a function of the arguments.
        samples_arg: the position of the op's ``samples`` argument (a backward op: the
            number of samples its batch holds, for the per-sample weight gradients). Under
            nested ``vmap`` each level multiplies it by its own count, so the op sums per
            sample of all levels, and each level splits off its factor.
    """

    def rule(info, in_dims, *args):
        S = info.batch_size
        _check_samples(op, S)
        kinds = inputs(*args) if callable(inputs) else inputs
        if any(k == SHARED and d is not None for k, d in zip(kinds, in_dims)):
            return loop_over_samples(op, info, in_dims, *args)
        folded = list(args)
        for i, (a, d, kind) in enumerate(zip(args, in_dims, kinds)):
            if kind in (TIME_MAJOR, BATCH_MAJOR) and a is not None:
                axis = 1 if kind == TIME_MAJOR else 0
                folded[i] = samples_at(a, d, axis, S).flatten(axis, axis + 1)
            elif kind == PLACEHOLDER and a is not None:
                folded[i] = a.new_empty(0)  # whatever came in, vmapped or not
        inner = 1
        if samples_arg is not None:
            inner = args[samples_arg]
            folded[samples_arg] = S * inner
        out = op(*folded)
        outs = out if isinstance(out, tuple) else (out,)
        results, dims = [], []
        for o, kind in zip(outs, outputs(*args) if callable(outputs) else outputs, strict=True):
            if kind in (TIME_MAJOR, BATCH_MAJOR):
                axis = 1 if kind == TIME_MAJOR else 0
                results.append(o.unflatten(axis, (S, -1)))
                dims.append(axis)
            elif kind == PER_SAMPLE:
                if S * inner == 1:  # the op's one-sample form has no samples axis
                    o = o.unsqueeze(0)
                results.append(o.unflatten(0, (S, inner)) if inner > 1 else o)
                dims.append(0)
            else:
                results.append(o)
                dims.append(None)
        if isinstance(out, tuple):
            return tuple(results), tuple(dims)
        return results[0], dims[0]

    op.register_vmap(rule)
