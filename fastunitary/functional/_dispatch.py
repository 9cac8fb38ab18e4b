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


_DIFFERENTIATING = (torch._C._functorch.TransformType.Grad, torch._C._functorch.TransformType.Jvp)


def transformable(op, backward, setup_context):
    """``op`` (a custom op with ``register_autograd(backward, setup_context=...)``) as a
    callable that also works under ``torch.func`` transforms (``grad``, ``vjp``,
    ``jacrev``, ``vmap`` of those).

    The autograd wrapper that ``torch.library`` generates lacks the ``setup_context``
    staticmethod those transforms require (pytorch/pytorch#168393, #170834), so under a
    transform the op runs inside an ``autograd.Function`` carrying the same
    ``setup_context`` and ``backward``; everywhere else (eager autograd, ``torch.compile``,
    ``torch.export``) it is the registered op itself, one node in a graph. Its vmap rule is
    generated from the forward and the backward, which run the registered ops once per
    sample (functorch's fallback for ops without a batching rule). Forward-mode AD
    (``jvp``, ``jacfwd``) and double backward stay unsupported, as for the op.
    """

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
            # functorch runs every backward with create_graph; the backward ops have no
            # derivative, so a second transform that differentiates (grad of grad) must
            # fail here rather than get a gradient that silently misses the op's part
            stack = torch._C._functorch.get_interpreter_stack() or []
            differentiating = [i for i in stack if i.key() in _DIFFERENTIATING]
            if len(differentiating) > 1:
                raise NotImplementedError(
                    "fastunitary ops have first derivatives only: torch.func.grad (or vjp, "
                    "jacrev) of a function that already takes their gradient is not supported")
            with torch.no_grad():  # first order: nothing of the backward is differentiated
                return op_backward(ctx, *grads)

    def call(*args):
        if torch._C._are_functorch_transforms_active():
            return Function.apply(*args)
        return op(*args)

    return call
