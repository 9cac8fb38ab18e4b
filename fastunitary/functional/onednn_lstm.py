"""``onednn_lstm``: one LSTM layer on PyTorch's own CPU kernels (oneDNN), as a registered op.

On the CPU ``torch.nn.LSTM`` runs oneDNN's fused LSTM (``aten::mkldnn_rnn_layer`` and its
backward), about 2x the speed of the library's ``lstm_recurrence`` loop. Eager code reaches
it through ``torch.lstm``, but Dynamo refuses RNN ops, and calling the aten op directly in
a compiled graph fails in Inductor (its workspace output has a size no meta function
knows). This pair of custom ops, ``fastunitary::onednn_lstm`` and
``fastunitary::onednn_lstm_backward``, wraps the two aten ops so that a compiled model
keeps them, with zero graph breaks, ``fullgraph`` or not.

The workspace oneDNN's backward reads is not passed between the two: its size is known
only once oneDNN has run, and an output of data-dependent size makes Dynamo break the
graph unless ``fullgraph=True``. The forward runs in inference mode (no workspace), and
the backward runs oneDNN's training forward again to rebuild it: forward+backward costs
one more oneDNN forward than ``torch.nn.LSTM`` (measured in the README), and only the
inputs are saved for the backward.

Used by the MomentumLSTM family under ``torch.compile``, where its buffer factorizes (a
momentum or Nesterov buffer is an LSTM on the scanned input,
``MomentumBuffer.linear_input``), on the CPU in float32 (:func:`onednn_lstm_supported`);
eager runs call ``torch.lstm``, which needs no second forward. It is not a backend of
``lstm_recurrence``: oneDNN takes the input and ``W_ih``, not a precomputed gate term.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from ._dispatch import differentiable, recomputed_gradients

#: oneDNN's code for an LSTM cell (ideep::rnn_kind::LSTM; as torch's own decomposition)
_LSTM_MODE = 2


#: the argument names of the two aten ops as this module calls them (positionally); they
#: are not a public API, so another PyTorch whose schemas differ gets the library's own op
_FORWARD_ARGS = ("input", "weight0", "weight1", "weight2", "weight3", "hx_", "cx_", "reverse",
                 "batch_sizes", "mode", "hidden_size", "num_layers", "has_biases",
                 "bidirectional", "batch_first", "train")
_BACKWARD_ARGS = ("input", "weight1", "weight2", "weight3", "weight4", "hx_", "cx_tmp",
                  "output", "hy_", "cy_", "grad_output", "grad_hy", "grad_cy", "reverse",
                  "mode", "hidden_size", "num_layers", "has_biases", "train", "bidirectional",
                  "batch_sizes", "batch_first", "workspace")


def _aten_ops_as_expected() -> bool:
    try:
        ops = (torch.ops.aten.mkldnn_rnn_layer.default,
               torch.ops.aten.mkldnn_rnn_layer_backward.default)
    except (AttributeError, RuntimeError):
        return False
    names = [tuple(a.name for a in op._schema.arguments) for op in ops]
    return names == [_FORWARD_ARGS, _BACKWARD_ARGS]


#: PyTorch was built with oneDNN and has its LSTM layer ops in the form used here (read
#: once: Dynamo will not trace ``torch.backends.mkldnn.is_available``)
BUILT_WITH_ONEDNN_LSTM = torch.backends.mkldnn.is_available() and _aten_ops_as_expected()


@torch.compiler.assume_constant_result
def _onednn_enabled() -> bool:
    """``torch.backends.mkldnn.enabled``, which Dynamo cannot trace: a compiled graph takes
    the value it had when it was compiled (no guard: recompile after switching it)."""
    return torch._C._get_mkldnn_enabled()


def onednn_lstm_supported(*tensors: torch.Tensor) -> bool:
    """Whether :func:`onednn_lstm` can run on these tensors: all on the CPU in float32,
    with PyTorch built with oneDNN and it enabled (``torch.backends.mkldnn.enabled``)."""
    return (
        BUILT_WITH_ONEDNN_LSTM and _onednn_enabled()
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    )


def _run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, train: bool):
    """``aten::mkldnn_rnn_layer`` for one unidirectional layer: ``(y, h_n, c_n, workspace)``
    (``workspace`` ``None`` unless ``train``)."""
    # oneDNN writes the workspace only where grad mode is on (an op's body runs with it off)
    with torch.set_grad_enabled(train):
        return torch.ops.aten.mkldnn_rnn_layer.default(
            x.contiguous(), w_ih, w_hh, b_ih, b_hh, h0.contiguous(), c0.contiguous(),
            False, [], _LSTM_MODE, w_hh.shape[1], 1, True, False, False, train)


@torch.library.custom_op("fastunitary::onednn_lstm", mutates_args=())
def _onednn_lstm_op(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
    b_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, h_n, c_n, _ = _run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, train=False)
    return y, h_n, c_n


@_onednn_lstm_op.register_fake
def _(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
    T, B, _ = x.shape
    return x.new_empty((T, B, w_hh.shape[1])), h0.new_empty(h0.shape), c0.new_empty(c0.shape)


def _contiguous_grads(tensors) -> tuple[torch.Tensor, ...]:
    """The backward's gradients as the fake promises them: contiguous, whatever the
    layout of the input they belong to (a transposed ``batch_first`` view, say)."""
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in tensors)


@torch.library.custom_op("fastunitary::onednn_lstm_backward", mutates_args=())
def _onednn_lstm_backward_op(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
    b_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, grad_y: Optional[torch.Tensor],
    grad_h_n: Optional[torch.Tensor], grad_c_n: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor]:
    """The gradients of x, w_ih, w_hh, b_ih, b_hh, h0 and c0; oneDNN's training forward
    first, for its workspace."""
    inputs = (x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    grads = [None if g is None else g.contiguous() for g in (grad_y, grad_h_n, grad_c_n)]
    if all(g is None for g in grads):  # oneDNN returns no gradient at all then
        return tuple(g.zero_() for g in _contiguous_grads(inputs))
    y, h_n, c_n, workspace = _run_forward(*inputs, train=True)
    if workspace is None:
        raise RuntimeError("oneDNN's LSTM forward returned no workspace for its backward; "
                           "this PyTorch's mkldnn_rnn_layer differs from the one fastunitary "
                           "was written for (disable it: torch.backends.mkldnn.enabled = False)")
    out = torch.ops.aten.mkldnn_rnn_layer_backward.default(
        x.contiguous(), w_ih, w_hh, b_ih, b_hh, h0.contiguous(), c0.contiguous(), y, h_n, c_n,
        *grads, False, _LSTM_MODE, w_hh.shape[1], 1, True, True, False, [], False, workspace)
    # contiguous copies: the layouts the fake promises, and no two outputs aliased (the
    # bias gradients come back as one tensor twice)
    return tuple(dst.copy_(g) for dst, g in zip(_contiguous_grads(inputs), out))


@_onednn_lstm_backward_op.register_fake
def _(x, w_ih, w_hh, b_ih, b_hh, h0, c0, grad_y, grad_h_n, grad_c_n):
    return _contiguous_grads((x, w_ih, w_hh, b_ih, b_hh, h0, c0))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_y, grad_h_n, grad_c_n):
    if torch.is_grad_enabled():  # create_graph: the gradient will be differentiated again
        return recomputed_gradients(_recomputed, ctx.saved_tensors, ctx.needs_input_grad,
                                    (grad_y, grad_h_n, grad_c_n))
    return _onednn_lstm_backward_op(*ctx.saved_tensors, grad_y, grad_h_n, grad_c_n)


def _recomputed(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
    """The op by differentiable tensor ops: its route in forward mode, and what its
    backward differentiates under ``create_graph``."""
    h, c = reference.lstm_autograd(x @ w_ih.mT + b_ih + b_hh, w_hh, h0[0], c0[0])
    return h, h[-1:], c[-1:]


_onednn_lstm = differentiable(_onednn_lstm_op, _backward, _setup_context,
                              _recomputed)


def onednn_lstm(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: Optional[torch.Tensor],
    b_hh: Optional[torch.Tensor], h0: Optional[torch.Tensor] = None,
    c0: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One unidirectional LSTM layer, ``torch.nn.LSTM``'s equations and gate order, on
    oneDNN (CPU, float32: check :func:`onednn_lstm_supported` first).

    Args:
        x: ``(T, B, m)``.  w_ih: ``(4n, m)``.  w_hh: ``(4n, n)``.
        b_ih, b_hh: ``(4n,)`` or ``None`` (zeros).  h0, c0: ``(B, n)`` or ``None`` (zeros).
    Returns:
        ``(h (T, B, n), h_T (B, n), c_T (B, n))``; differentiable (first order) with
        respect to every tensor argument.
    """
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (T, B, m) with T, B >= 1, got {tuple(x.shape)}")
    B, G = x.shape[1], w_ih.shape[0]
    n = G // 4
    zeros = lambda *shape: x.new_zeros(shape)  # noqa: E731
    b_ih = zeros(G) if b_ih is None else b_ih
    b_hh = zeros(G) if b_hh is None else b_hh
    h0 = zeros(1, B, n) if h0 is None else h0.unsqueeze(0)
    c0 = zeros(1, B, n) if c0 is None else c0.unsqueeze(0)
    y, h_n, c_n = _onednn_lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    return y, h_n[0], c_n[0]
