"""How a stacked module's input sequence was laid out, so its output comes back the same way.

Inputs come time-major ``(T, B, m)``, batch-first ``(B, T, m)``, unbatched ``(T, m)``, or as
a ``torch.nn.utils.rnn.PackedSequence`` of sequences of different lengths. Every module
runs the time-major padded form in one call, and :class:`SequenceLayout` turns the result
back: the output in the input's layout, and each sequence's final state.

A packed batch costs no more than its padded form: the recurrence is causal, so the steps
after a sequence's end (its padding) change nothing before it. Its output is repacked
from the valid steps only, and its final state is read at its own last step (gathered
from the per-step states, not recomputed). Gradients flow through both.
"""

from __future__ import annotations

import functools

import torch
from torch.nn.utils.rnn import PackedSequence


class PackedIndex:
    """Where each element of a ``PackedSequence`` sits in its padded ``(T, B)`` form, in
    the batch's original order (as ``torch.nn.LSTM`` takes ``hx`` and returns ``h_n``).

    Built once per call from ``batch_sizes`` and ``sorted_indices``: element ``k`` of
    ``data`` is step ``time[k]`` of sequence ``batch[k]``. The indices are computed on the
    data's device; ``batch_sizes`` (always on the CPU) goes there in one copy that does not
    wait for the device, and no size is read back, so a CUDA stream is never stalled.
    """

    def __init__(self, packed: PackedSequence):
        data, batch_sizes = packed.data, packed.batch_sizes
        self.batch_sizes = batch_sizes
        self.sorted_indices, self.unsorted_indices = packed.sorted_indices, packed.unsorted_indices
        self.T, self.B, N = len(batch_sizes), int(batch_sizes[0]), data.shape[0]
        # under torch.compile B is read from data (an unbacked size): say it is a row count,
        # or the ops' own size checks (B >= 1) cannot be decided and Dynamo gives up
        torch._check(self.B >= 1)
        device = data.device
        if device.type == "cuda" and not torch.compiler.is_compiling():
            sizes = batch_sizes.pin_memory().to(device, non_blocking=True)
        else:
            sizes = batch_sizes.to(device)
        starts = torch.cumsum(sizes, 0) - sizes
        self.steps = torch.arange(self.T, device=device)
        self.rows = torch.arange(self.B, device=device)
        self.time = torch.repeat_interleave(self.steps, sizes, output_size=N)
        rank = torch.arange(N, device=device) - starts[self.time]  # place in the sorted batch
        order = None if self.sorted_indices is None else self.sorted_indices.to(device)
        self.batch = rank if order is None else order[rank]
        # a sequence's length: the steps whose batch reaches past its place in the sorted batch
        lengths = (sizes.unsqueeze(0) > self.rows.unsqueeze(1)).sum(1)
        if order is not None:
            lengths = torch.empty_like(lengths).scatter_(0, order, lengths)
        self.last_step = lengths - 1
        self._reverse_steps = None  # built by the first reverse(): only bidirectional needs it

    def padded(self, data: torch.Tensor) -> torch.Tensor:
        """``(N, m) -> (T, B, m)``, zeros past each sequence's end."""
        x = data.new_zeros(self.T, self.B, data.shape[-1])
        return x.index_put((self.time, self.batch), data)

    def packed_data(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, d) -> (N, d)``: the valid steps, in the input's packed order."""
        return x[self.time, self.batch]

    def pack(self, x: torch.Tensor) -> PackedSequence:
        """``(T, B, d)`` -> a ``PackedSequence`` laid out as the input was."""
        return PackedSequence(self.packed_data(x), self.batch_sizes, self.sorted_indices,
                              self.unsorted_indices)

    def last(self, seq: torch.Tensor) -> torch.Tensor:
        """``(T, B, d) -> (B, d)``: each sequence's state at its own last step."""
        return seq[self.last_step, self.rows]

    def reverse(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, d)``: each sequence's valid steps in reverse order, its padding left
        after them (so :meth:`last` and :meth:`pack` apply to the result unchanged)."""
        if self._reverse_steps is None:  # (T, B): the step that lands at t, for every call
            t = self.steps.unsqueeze(1)
            back = self.last_step.unsqueeze(0) - t
            self._reverse_steps = torch.where(back >= 0, back, t)
        return x.gather(0, self._reverse_steps.unsqueeze(-1).expand_as(x))


class SequenceLayout:
    """The layout of a module's input; :meth:`output` and :meth:`last` undo it.

    Attributes: ``unbatched``, ``batch_first``, ``packed`` (a :class:`PackedIndex`, or
    ``None`` for a tensor input).
    """

    def __init__(self, unbatched: bool, batch_first: bool, packed: PackedIndex | None = None):
        self.unbatched, self.batch_first, self.packed = unbatched, batch_first, packed

    def output(self, x: torch.Tensor):
        """``(T, B, d)`` -> the input's layout (a ``PackedSequence`` for a packed input)."""
        if self.packed is not None:
            return self.packed.pack(x)
        if self.unbatched:
            return x.squeeze(1)
        return x.transpose(0, 1) if self.batch_first else x

    def last(self, seq: torch.Tensor) -> torch.Tensor:
        """``(T, B, d) -> (B, d)``: the final state of each sequence (step ``T - 1``, or a
        packed sequence's own last step)."""
        return seq[-1] if self.packed is None else self.packed.last(seq)

    def reverse(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, d)`` in reverse time, for the backward direction of a bidirectional
        module: each packed sequence within its own length (its own inverse)."""
        return x.flip(0) if self.packed is None else self.packed.reverse(x)

    def states(self, h_n: torch.Tensor) -> torch.Tensor:
        """Final states ``(num_layers, B, d)`` as returned: ``(num_layers, d)`` unbatched."""
        return h_n.squeeze(1) if self.unbatched else h_n


def accepts_empty_batch(batched_dims: int):
    """Decorate a module's ``forward(self, input, hx=None, **options)`` to accept a batch of zero
    sequences, as ``torch.nn.LSTM`` does: outputs with zero rows, connected to the graph.

    An empty batch happens in production (the last shard of a data loader split over
    workers), and the ops underneath need at least one row: their kernels read row 0. So
    the call runs on one row of zeros (input and every state tensor in ``hx``) and returns
    that row's results cut to zero rows; the gradients they send back are zero. The cost
    is one sequence's forward.

    ``batched_dims``: the dimensions of a batched input, 3 for a sequence module ``(T, B,
    m)`` (``(B, T, m)`` with ``self.batch_first``, states ``(L, B, d)``), 2 for a cell
    ``(B, m)`` (states ``(B, d)``). Anything else about the input (its width, an unbatched
    or packed input) is the wrapped ``forward``'s to check, on the input as given.
    """
    state_batch_dim = batched_dims - 2

    def decorate(forward):
        @functools.wraps(forward)
        def wrapper(self, input, hx=None, **options):
            if not isinstance(input, torch.Tensor) or input.dim() != batched_dims:
                return forward(self, input, hx, **options)
            dim = 0 if batched_dims == 2 or self.batch_first else 1
            others = [s for i, s in enumerate(input.shape[:-1]) if i != dim]  # T (a sequence)
            if input.shape[dim] != 0 or input.shape[-1] != self.input_size or 0 in others:
                return forward(self, input, hx, **options)  # not an empty batch, or a bad one
            padded_hx = _states_with_zero_row(hx, state_batch_dim)
            try:
                out = forward(self, _with_zero_row(input, dim), padded_hx, **options)
            except ValueError as e:  # its shapes are the padded ones: say what was given
                given = [tuple(t.shape) for t in _tensors(hx)]
                raise ValueError(f"{e} (an empty batch runs as one row of zeros; given: input "
                                 f"{tuple(input.shape)}, hx {given or None})") from None
            if batched_dims == 2:
                return _without_rows(out, 0)
            output, state = out
            return _without_rows(output, dim), _without_rows(state, 1)

        # One code object per decorated forward, as undecorated ones have: Dynamo counts
        # recompiles per code object (8 by default), and one shared wrapper spent that
        # budget on every module class together (a 9th configured module then failed to
        # compile under fullgraph=True).
        wrapper.__code__ = wrapper.__code__.replace(
            co_qualname=f"accepts_empty_batch({forward.__qualname__})")
        return wrapper

    return decorate


def _with_zero_row(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` with one row of zeros appended along ``dim`` (concatenated, so that ``t``
    stays in the graph and receives its own, empty, gradient)."""
    shape = list(t.shape)
    shape[dim] = 1
    return torch.cat([t, t.new_zeros(shape)], dim)


def _states_with_zero_row(hx, dim: int):
    """An empty batch's initial states (``None``, a tensor or a tuple of tensors) with one
    row of zeros each."""

    def pad(s):
        if not isinstance(s, torch.Tensor) or s.dim() <= dim or s.shape[dim] != 0:
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"the input is an empty batch (B = 0), so each initial state must "
                             f"have B = 0 rows (dimension {dim}) as well, got {shape}")
        return _with_zero_row(s, dim)

    return None if hx is None else _map_leaves(pad, hx)


def _tensors(hx) -> list[torch.Tensor]:
    """The tensors of ``hx`` (``None``, a tensor or nested tuples)."""
    found = []
    if hx is not None:
        _map_leaves(found.append, hx)
    return found


def _without_rows(out, dim: int):
    """Every tensor in ``out`` (a tensor or nested tuples) cut to zero rows along ``dim``."""
    return _map_leaves(lambda t: t.narrow(dim, 0, 0), out)


def _map_leaves(fn, tree):
    """``fn`` applied to each leaf of ``tree`` (nested tuples or lists), same nesting."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_leaves(fn, leaf) for leaf in tree)
    return fn(tree)
