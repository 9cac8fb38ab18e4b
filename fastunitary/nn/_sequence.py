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

import torch
from torch.nn.utils.rnn import PackedSequence


class PackedIndex:
    """Where each element of a ``PackedSequence`` sits in its padded ``(T, B)`` form, in
    the batch's original order (as ``torch.nn.LSTM`` takes ``hx`` and returns ``h_n``).

    Built once per call from ``batch_sizes`` and ``sorted_indices``: element ``k`` of
    ``data`` is step ``time[k]`` of sequence ``batch[k]``.
    """

    def __init__(self, packed: PackedSequence):
        batch_sizes = packed.batch_sizes.to(torch.long)
        device = packed.data.device
        self.like = packed
        self.T, self.B = len(batch_sizes), int(batch_sizes[0]) if len(batch_sizes) else 0
        starts = torch.cumsum(batch_sizes, 0) - batch_sizes
        time = torch.repeat_interleave(torch.arange(self.T), batch_sizes)
        rank = torch.arange(len(time)) - starts[time]  # position in the length-sorted batch
        order = packed.sorted_indices
        self.time = time.to(device)
        self.batch = rank.to(device) if order is None else order[rank.to(order.device)].to(device)
        # a sequence's length: how many steps have a batch larger than its sorted position
        lengths_sorted = (batch_sizes.unsqueeze(0) > torch.arange(self.B).unsqueeze(1)).sum(1)
        lengths = lengths_sorted.to(device)
        if order is not None:
            lengths = torch.empty_like(lengths).scatter_(0, order.to(device), lengths)
        self.last_step = lengths - 1

    def padded(self, data: torch.Tensor) -> torch.Tensor:
        """``(N, m) -> (T, B, m)``, zeros past each sequence's end."""
        x = data.new_zeros(self.T, self.B, data.shape[-1])
        return x.index_put((self.time, self.batch), data)

    def pack(self, x: torch.Tensor) -> PackedSequence:
        """``(T, B, d)`` -> a ``PackedSequence`` laid out as the input was."""
        p = self.like
        return PackedSequence(x[self.time, self.batch], p.batch_sizes, p.sorted_indices,
                              p.unsorted_indices)

    def last(self, seq: torch.Tensor) -> torch.Tensor:
        """``(T, B, d) -> (B, d)``: each sequence's state at its own last step."""
        return seq[self.last_step, torch.arange(self.B, device=seq.device)]


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
