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


class _FirstOrderOnly(torch.autograd.Function):
    """Passes tensors through (as views) as one node whose backward raises. Attached to an
    op's gradients and to what they were computed from, it makes every level that
    differentiates them again raise, however that level was entered (``grad`` of ``grad``,
    ``jacrev`` of ``jacrev``, the function ``vjp`` returns, eager autograd around a
    transform): the backward ops have no derivative, so any answer there would be wrong."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*tensors):
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError(_FIRST_ORDER_ONLY)

    @staticmethod
    def jvp(ctx, *tangents):  # forward over reverse: jvp of grad, jacfwd of jacrev
        raise NotImplementedError(_FIRST_ORDER_ONLY)


_FIRST_ORDER_ONLY = (
    "under torch.func transforms fastunitary ops have first derivatives only: a derivative "
    "of their gradient (grad of grad, jacrev of jacrev, jacfwd of jacrev, jvp of grad) is "
    "not supported; eager torch.autograd takes second derivatives (create_graph=True)")


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
    # Fresh aliases of the inputs, differentiated instead of the inputs themselves: those may
    # be one tensor twice (h0 is c0) or depend on each other (h0 from u), and autograd would
    # then return total derivatives, which the outer graph adds to the shared path again.
    inputs = [t.view_as(t) if w else t for t, w in zip(inputs, wanted)]
    first = next(t for t in inputs if isinstance(t, torch.Tensor))
    with torch.enable_grad(), autocast_off(first):  # the ops' own precision, as fused
        outputs = forward(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        # an output the inputs do not reach (gd's empty ms) contributes nothing
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs)
                 if g is not None and o.requires_grad]
        grads = iter(torch.autograd.grad([o for o, _ in pairs],
                                         [t for t, w in zip(inputs, wanted) if w],
                                         [g for _, g in pairs], create_graph=True,
                                         allow_unused=True))
    return tuple(next(grads) if w else None for w in wanted)


def _carries_a_tangent(args) -> bool:
    """Whether any argument is a dual tensor of ``torch.autograd.forward_ad`` (read only
    inside a ``dual_level``: outside one, no tensor has a tangent)."""
    if torch.autograd.forward_ad._current_level < 0:
        return False
    return any(isinstance(a, torch.Tensor) and fwAD.unpack_dual(a).tangent is not None
               for a in args)


def _forward_mode_active(args) -> bool:
    """Whether an op call may be asked for a ``jvp``: under ``torch.func.jvp`` (or
    ``jacfwd``), or with an argument that carries a ``forward_ad`` tangent (looked for
    outside transforms only: ``unpack_dual`` has no batching rule, and ``torch.func.jvp``
    is an interpreter of its own)."""
    if torch._C._are_functorch_transforms_active():
        return _under_functorch_jvp()
    return _carries_a_tangent(args)


def _under_functorch_jvp() -> bool:
    """Whether a ``torch.func.jvp`` (or ``jacfwd``) level is active (transforms are)."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == torch._C._functorch.TransformType.Jvp
               for i in retrieve_all_functorch_interpreters())


def tangents_by_recomputation(recompute):
    """An op's forward-mode derivative from a differentiable recomputation of it.

    Args:
        recompute: ``recompute(*args)`` with the op's arguments returns its outputs (a
            tensor, or a tuple with ``None`` for an output that has no derivative) by
            differentiable tensor ops: the reference loop.
    Returns:
        ``forward_derivative(args, outputs, tangents)`` for :func:`differentiable`: the
        outputs' tangents (``J t``) given one tangent per argument (``None``: none).

    Under a ``torch.func`` transform (``jvp``, ``jacfwd``) the recomputation runs under
    ``torch.func.jvp``. Outside one (dual tensors of ``torch.autograd.forward_ad``, where a
    nested forward level is not allowed) it runs reverse mode twice, the double-vjp trick:
    ``J t = d/dg <J^T g, t>``, ``J^T g`` being linear in ``g``. Either costs a few times
    the reference loop's forward: forward mode is correct here, not fast.
    """

    def forward_derivative(args, outputs, tangents):
        positions = [i for i, t in enumerate(tangents) if t is not None]
        primals = [args[i] for i in positions]
        directions = [tangents[i] for i in positions]

        def run(*xs):
            full = list(args)
            for i, x in zip(positions, xs):
                full[i] = x
            out = recompute(*full)
            return out if isinstance(out, tuple) else (out,)

        first = next(a for a in args if isinstance(a, torch.Tensor))
        with autocast_off(first):
            if torch._C._are_functorch_transforms_active() and _under_functorch_jvp():
                absent = set()

                def tensors(*xs):  # jvp takes tensor outputs only: an empty one for None
                    outs = run(*xs)
                    absent.update(k for k, o in enumerate(outs) if o is None)
                    return tuple(first.new_empty(0) if o is None else o for o in outs)

                # contiguous: jvp cannot make a dual of an expanded (stride-0) tensor
                _, found = torch.func.jvp(tensors, tuple(p.contiguous() for p in primals),
                                          tuple(t.contiguous() for t in directions))
                found = {k: t for k, t in enumerate(found) if k not in absent}
            else:
                found = _tangents_by_double_vjp(run, primals, directions)
        result = tuple(found.get(k) for k in range(len(outputs)))
        return result if isinstance(outputs, tuple) else result[0]

    return forward_derivative


def _tangents_by_double_vjp(run, primals, directions) -> dict:
    """``{output index: J t}`` by reverse mode twice (see :func:`tangents_by_recomputation`).

    Where the primals or tangents are themselves differentiated (eager autograd over
    forward mode: a Hessian-vector product as the gradient of a tangent), the result keeps
    its graph to them: primals that require grad are differentiated through aliases, and
    both passes build their graphs."""
    outer = torch.is_grad_enabled() and any(t.requires_grad for t in (*primals, *directions))
    with torch.enable_grad():
        xs = [p.view_as(p) if outer and p.requires_grad else p.detach().requires_grad_()
              for p in primals]
        outs = [(k, o) for k, o in enumerate(run(*xs)) if o is not None and o.requires_grad]
        cotangents = [torch.zeros_like(o, requires_grad=True) for _, o in outs]
        vjps = torch.autograd.grad([o for _, o in outs], xs, cotangents, create_graph=True,
                                   allow_unused=True)
        # the vjp of the vjp map g -> J^T g along t is J t; as grad_outputs (not a pairing
        # summed here), so that a batch of tangents works (autograd.functional.jacobian's
        # forward mode vmaps them)
        pairs = [(v, t) for v, t in zip(vjps, directions) if v is not None and v.requires_grad]
        if not pairs:
            return {k: torch.zeros_like(o) for k, o in outs}
        found = torch.autograd.grad([v for v, _ in pairs], cotangents, [t for _, t in pairs],
                                    create_graph=outer, allow_unused=True)
    return {k: torch.zeros_like(o) if t is None else t
            for (k, o), t in zip(outs, found)}


#: in an op's ``jvp_layout``: the argument is a tensor, saved with ``save_for_forward``
_SAVED = object()


class _CtxView:
    """An autograd ``ctx`` as an op's ``setup_context`` and ``backward`` see it, with its own
    saved tensors, while the ``Function`` around it saves more: ``save_for_backward``
    records them here, ``saved_tensors`` returns them; everything else is the ``ctx``'s."""

    def __init__(self, ctx, saved: tuple) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_saved", saved)

    def save_for_backward(self, *tensors) -> None:
        object.__setattr__(self, "_saved", tensors)

    @property
    def saved_tensors(self) -> tuple:
        return self._saved

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def __setattr__(self, name, value) -> None:
        setattr(self._ctx, name, value)


def differentiable(op, backward, setup_context, forward_derivative):
    """Registers ``backward`` and ``setup_context`` as ``op``'s autograd formula (``op`` a
    ``torch.library`` custom op) and returns ``op`` as a callable that also works under
    ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``vmap``
    of those) and in forward mode (``torch.autograd.forward_ad``).

    The autograd wrapper that ``torch.library`` generates lacks the ``setup_context``
    staticmethod those transforms require (pytorch/pytorch#168393, #170834), and has no
    forward-mode formula, so under a transform, or when an argument carries a forward-mode
    tangent, the op runs inside an ``autograd.Function`` carrying the same
    ``setup_context`` and ``backward`` and a ``jvp`` from ``forward_derivative``
    (``forward_derivative(args, outputs, tangents)``, one tangent or ``None`` per
    argument, returns the outputs' tangents; :func:`tangents_by_recomputation` builds one).
    Everywhere else (eager autograd, ``torch.compile``, ``torch.export``) it is the
    registered op itself, one node in a graph. Its vmap rule is generated from the forward,
    the backward and the jvp, so the batching rules registered for the two ops
    (:func:`register_folded_vmap`, :func:`register_stacked_vmap`) batch them. Under a
    transform, second derivatives raise; in eager autograd an op's backward under
    ``create_graph=True`` may take :func:`recomputed_gradients`, which a double backward
    differentiates.
    """

    op.register_autograd(backward, setup_context=setup_context)
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

        @staticmethod
        def backward(ctx, *grads):
            # functorch builds every backward's graph (create_graph); the backward ops have
            # no derivative, so the gradients are computed untracked and then tied to a
            # node that raises if anything differentiates them
            split = getattr(ctx, "op_saved_count", None)  # ForwardModeFunction saves more
            view = ctx if split is None else _CtxView(ctx, ctx.saved_tensors[:split])
            with torch.no_grad():
                out = op_backward(view, *grads)
            single = not isinstance(out, tuple)
            out = (out,) if single else out
            computed = [g for g in out if g is not None]
            sources = [t for t in (*grads, *ctx.saved_tensors) if t is not None]
            tied = iter(_FirstOrderOnly.apply(*computed, *sources)[:len(computed)])
            out = tuple(None if g is None else next(tied) for g in out)
            return out[0] if single else out

    class ForwardModeFunction(Function):
        """The same, also keeping what the ``jvp`` reads: the op's inputs and outputs.
        Used only in forward mode. Under ``vmap`` functorch records one set of batch
        dimensions for ``save_for_backward`` and ``save_for_forward`` together (the later
        call overwrites them), so both get the same tensors, the op's own first."""

        @staticmethod
        def setup_context(ctx, inputs, output):
            view = _CtxView(ctx, ())
            op_setup_context(view, inputs, output)
            outputs = output if isinstance(output, tuple) else (output,)
            ctx.jvp_layout = (tuple(_SAVED if isinstance(a, torch.Tensor) else a for a in inputs),
                              isinstance(output, tuple))
            ctx.op_saved_count = len(view.saved_tensors)
            saved = (*view.saved_tensors, *[a for a in inputs if isinstance(a, torch.Tensor)],
                     *outputs)
            ctx.save_for_backward(*saved)
            ctx.save_for_forward(*saved)

        @staticmethod
        def jvp(ctx, *tangents):
            constants, is_tuple = ctx.jvp_layout
            saved = iter(ctx.saved_tensors[ctx.op_saved_count:])
            args = tuple(next(saved) if c is _SAVED else c for c in constants)
            outputs = tuple(saved)
            return forward_derivative(args, outputs if is_tuple else outputs[0], tangents)

    def call(*args):
        if _forward_mode_active(args):
            return ForwardModeFunction.apply(*args)
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
