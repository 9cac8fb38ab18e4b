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
        raise NotImplementedError(
            "fastunitary ops have first derivatives only: a derivative of their gradient "
            "(grad of grad, jacrev of jacrev, a double backward) is not supported")


def differentiable(op, backward, setup_context):
    """Registers ``backward`` and ``setup_context`` as ``op``'s autograd formula (``op`` a
    ``torch.library`` custom op) and returns ``op`` as a callable that also works under
    ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``, ``vmap`` of those).

    The autograd wrapper that ``torch.library`` generates lacks the ``setup_context``
    staticmethod those transforms require (pytorch/pytorch#168393, #170834), so under a
    transform the op runs inside an ``autograd.Function`` carrying the same
    ``setup_context`` and ``backward``; everywhere else (eager autograd, ``torch.compile``,
    ``torch.export``) it is the registered op itself, one node in a graph. Its vmap rule is
    generated from the forward and the backward, so a batching rule registered for the
    two ops (:func:`fold_samples`) is what batches them. Forward-mode AD
    (``jvp``, ``jacfwd``) and second derivatives raise, as for the op.
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
            with torch.no_grad():
                out = op_backward(ctx, *grads)
            single = not isinstance(out, tuple)
            out = (out,) if single else out
            computed = [g for g in out if g is not None]
            sources = [t for t in (*grads, *ctx.saved_tensors) if t is not None]
            tied = iter(_FirstOrderOnly.apply(*computed, *sources)[:len(computed)])
            out = tuple(None if g is None else next(tied) for g in out)
            return out[0] if single else out

    def call(*args):
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
#   vmapped one becomes one more (:func:`stack_samples`);
# - the sequence ops run a batch ``B`` with one set of weights: when the weights are shared
#   by all samples (per-sample gradients: ``vmap(grad(loss), in_dims=(None, 0))``) the
#   samples merge into that axis (:func:`fold_samples`), and the weight gradients, which
#   the op sums over its batch, are formed per sample from what it returns. With vmapped
#   weights (an ensemble) they loop over the samples (:func:`loop_over_samples`), as
#   functorch's fallback would.


def stack_samples(t: torch.Tensor | None, in_dim: int | None, axis: int, samples: int):
    """``t`` with the vmapped dimension at ``axis`` (a tensor that is not vmapped expanded
    there, as a view). ``None`` stays ``None``."""
    if t is None:
        return None
    if in_dim is None:
        return t.unsqueeze(axis).expand(*t.shape[:axis], samples, *t.shape[axis:])
    return t.movedim(in_dim, axis)


def fold_samples(t: torch.Tensor | None, in_dim: int | None, axis: int, samples: int):
    """``t`` with the vmapped dimension merged into its batch ``axis``, sample-major: the
    op's layout with batch ``samples * B`` (a view where the strides allow). ``None``
    stays ``None``."""
    t = stack_samples(t, in_dim, axis, samples)
    return None if t is None else t.flatten(axis, axis + 1)


def unfold_samples(t: torch.Tensor, axis: int, samples: int) -> torch.Tensor:
    """The inverse of :func:`fold_samples`: batch axis ``samples * B`` split into
    ``(samples, B)``, so the vmapped dimension is ``axis``."""
    return t.unflatten(axis, (samples, -1))


def loop_over_samples(op, info, in_dims, *args):
    """``op`` run once per sample and its outputs stacked (vmapped dimension 0): the batching
    rule for arguments a single call cannot take, as functorch's own fallback does it."""
    results = []
    for i in range(info.batch_size):
        sample = [a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]
        results.append(op(*sample))
    if not isinstance(results[0], tuple):
        return torch.stack(results), 0
    return tuple(torch.stack(outs) for outs in zip(*results)), (0,) * len(results[0])
