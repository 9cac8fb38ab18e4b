"""ENRNN: an orthogonal long-term block and an eigenvalue-normalized short-term block.

The state ``h = [h1; h2]`` has a long-term part ``h1`` (``unitary_size`` units) driven by a
scoRNN block and a short-term part ``h2`` (``short_size`` units) driven by a matrix whose
spectral radius is kept at most 1, so that what enters ``h2`` fades (METHODS.md section 4):

    W = [[W1, C ],      W1 = cayley(A1, D1)            (orthogonal, D1 = diag(±1) fixed)
         [0,  W2]]      W2 = M / sigma(M) once normalization is on, else M
    h_t = modReLU(W h_{t-1} + U x_t + b)                (real modReLU on all units)

``C`` lets the short-term state feed the long-term state (``coupled=True``), never the
reverse. ``W`` is built once per forward call (one Cayley map, one spectral radius of
``M``) and fed to the same ``recurrence`` op as scoRNN: the fused kernel on CUDA.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from ..functional.cayley import cayley_planes
from ..functional.spectral_radius import RULES, spectral_normalize
from . import _base, _skew
from .init import cayley_skew_init, glorot_uniform_, scaling_signs


def default_num_negative(unitary_size: int) -> int:
    """The -1 entries of ``D1`` by default: ``0.3 n1`` rounded half up, which gives the
    official setups' 52 of 172 and 29 of 96 (``3 n1 // 10`` gave 51 and 28)."""
    return (3 * unitary_size + 5) // 10


class ENRNNCell(_base.RecurrentCell):
    """One ENRNN layer, stepped one input at a time (like ``torch.nn.RNNCell``).

    Args:
        input_size: features ``m`` of each input.
        unitary_size: ``n1``, units of the orthogonal long-term block.
        short_size: ``n2``, units of the eigenvalue-normalized short-term block.
        bias: learn the input bias ``b``.
        coupled: learn ``C``, the path from the short-term to the long-term state.
        num_negative: number of -1 entries of ``D1`` (placed last); default
            ``0.3 * unitary_size`` rounded (:func:`default_num_negative`), the ratio of
            the official setups (52 of 172 for copying, 29 of 96 for adding).
            ``load_state_dict`` sets it from the loaded ``D1``.
        normalization: ``"sticky"`` (official: switches on the first time
            ``sigma(M) > 1`` and stays on, a state kept in the buffer ``normalization_on``,
            saved in the ``state_dict``, and set only by forward calls in training mode;
            an eval forward whose ``sigma(M) > 1`` normalizes without setting it) or
            ``"max1"`` (``M / max(1, sigma(M))``).
        trainable_h0, backend, check_finite: as the other cells.

    Parameters: ``weight_ih`` ``(n1 + n2, m)`` (uniform in ±0.01), ``bias_ih`` (zero),
    ``skew_re`` (packed ``A1``), ``M`` ``(n2, n2)`` (``cayley(A2) D2`` with ``D2`` uniform in
    (-1, 1), one value per pair of units, so M starts inside the unit disc), ``C``
    ``(n1, n2)`` (Glorot-uniform; when coupled), ``modrelu_bias``, ``h0``.
    Buffers: ``D1`` ``(n1,)``, ``normalization_on`` (bool).
    """

    is_complex = False
    param_group_of = {"skew_re": "A"}

    def __init__(
        self,
        input_size: int,
        unitary_size: int,
        short_size: int,
        bias: bool = True,
        *,
        coupled: bool = True,
        num_negative: int | None = None,
        normalization: str = "sticky",
        **kwargs,
    ):
        _checks.check_positive_int("unitary_size", unitary_size)
        _checks.check_positive_int("short_size", short_size)
        if normalization not in RULES:
            raise ValueError(f"normalization must be one of {RULES}, got {normalization!r}")
        self.unitary_size, self.short_size = unitary_size, short_size
        self.coupled, self.normalization = bool(coupled), normalization
        self.num_negative = (default_num_negative(unitary_size) if num_negative is None
                             else num_negative)
        if not isinstance(self.num_negative, int) or not 0 <= self.num_negative <= unitary_size:
            raise ValueError(f"num_negative must be an int in [0, unitary_size={unitary_size}], "
                             f"got {num_negative!r}")
        super().__init__(input_size, unitary_size + short_size, bias, **kwargs)

    # -- parameters ---------------------------------------------------------------------
    def _create_recurrent_parameters(self) -> None:
        n1, n2 = self.unitary_size, self.short_size
        self.skew_re = nn.Parameter(torch.zeros(_skew.packed_sizes(n1)[0]))
        self.register_buffer("D1", torch.empty(n1))
        self.M = nn.Parameter(torch.empty(n2, n2))
        self.C = nn.Parameter(torch.empty(n1, n2)) if self.coupled else None
        self.register_buffer("normalization_on", torch.zeros((), dtype=torch.bool))

    def _reset_input_weights(self, generator: torch.Generator | None) -> None:
        self.weight_ih.uniform_(-0.01, 0.01, generator=generator)

    def _reset_recurrent_parameters(self, generator: torch.Generator | None) -> None:
        n1, n2 = self.unitary_size, self.short_size
        packed, _ = _skew.pack(cayley_skew_init(n1, generator=generator))
        self.skew_re.copy_(packed)
        self.D1.copy_(scaling_signs(n1, self.num_negative))
        scales = torch.rand((n2 + 1) // 2, generator=generator) * 2 - 1  # one per pair
        d2 = scales.repeat_interleave(2)[:n2]
        K2 = cayley_planes(cayley_skew_init(n2, generator=generator).unsqueeze(0), None,
                           "reference")[0]
        self.M.copy_(K2 * d2)
        if self.C is not None:
            glorot_uniform_(self.C, n2, n1, generator=generator)
        self.normalization_on.zero_()

    NEGATIVE_COUNTS = {"num_negative": "D1"}

    # -- the recurrent matrix -----------------------------------------------------------
    def long_term_matrix(self) -> torch.Tensor:
        """``W1 = cayley(A1, D1)``: ``(n1, n1)``, orthogonal."""
        A1 = _skew.skew_planes(self.skew_re, None, self.unitary_size)
        return cayley_planes(A1, self.D1.unsqueeze(0), self.backend)[0]

    def short_term_matrix(self, record: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W2, sigma(M))``: the normalized short-term block ``(n2, n2)`` and M's radius.

        Under the sticky rule ``W2`` is ``M / sigma(M)`` when ``normalization_on`` is set or
        ``sigma(M) > 1`` now. With ``record=True`` (the forward in training mode) a
        switch-on is written to ``normalization_on``, with tensor ops only (no host
        synchronization, no graph break when compiled); otherwise nothing changes.
        """
        active = self.normalization_on if self.normalization == "sticky" else None
        W2, sigma, on = spectral_normalize(self.M, rule=self.normalization, active=active)
        if record and self.normalization == "sticky":
            # detach, not a no_grad block: torch.export cannot load a program holding one
            self.normalization_on.copy_(on.detach())
        return W2, sigma

    def _block_matrix(self, record: bool) -> torch.Tensor:
        n1, n2 = self.unitary_size, self.short_size
        W1 = self.long_term_matrix()
        W2, _ = self.short_term_matrix(record)
        C = self.C if self.C is not None else W1.new_zeros(n1, n2)
        top = torch.cat([W1, C], dim=1)
        bottom = torch.cat([W2.new_zeros(n2, n1), W2], dim=1)
        return torch.cat([top, bottom], dim=0)

    def _compute_recurrent_weight(self) -> torch.Tensor:
        # The switch moves with training, as BatchNorm's running statistics do: an eval
        # forward (validation, inference, export) uses it and never sets it.
        return self._block_matrix(record=self.training)

    def _weight_config(self) -> tuple:
        return super()._weight_config() + (self.normalization,)

    def _weight_sources(self) -> list[torch.Tensor]:
        # normalization_on is a source too: a cached W exists only in eval mode, where
        # no forward writes it; someone may set or load it.
        sources = [self.skew_re, self.D1, self.M, self.normalization_on]
        return sources + ([self.C] if self.C is not None else [])

    def recurrent_matrix(self, layer: int = 0) -> torch.Tensor:
        """The full block ``W = [[W1, C], [0, W2]]`` now in use: ``(n1 + n2, n1 + n2)``.
        Inspection only: it never sets ``normalization_on``."""
        if layer != 0:
            raise ValueError(f"a cell has one layer; layer must be 0, got {layer}")
        return self._block_matrix(record=False)

    def param_groups(self, lr: float = 1e-3, lr_A: float = 1e-5) -> list[dict]:
        """Optimizer groups ``A`` (the long-term block's A1) and ``other`` (M, U, b, C, ...).

        The defaults are the official copying setup's RMSProp rates (A1: 1e-5, rest: 1e-3).
        """
        return _base.param_groups(self, self.param_group_of, {"A": lr_A, "other": lr})

    def extra_repr(self) -> str:
        s = f"{self.input_size}, unitary_size={self.unitary_size}, short_size={self.short_size}"
        s += f", num_negative={self.num_negative}, normalization={self.normalization!r}"
        if not self.coupled:
            s += ", coupled=False"
        return s + self._options_repr()


class ENRNN(_base.StackedRNN):
    """Multi-layer ENRNN with the calling convention of ``torch.nn.LSTM``.

    Example::

        rnn = ENRNN(input_size=2, unitary_size=96, short_size=64, batch_first=True)
        output, h_n = rnn(x)            # x: (B, T, 2) -> output (B, T, 160), h_n (1, B, 160)

    Args:
        input_size: features of each input.
        unitary_size, short_size: ``n1`` and ``n2``; outputs have width ``n1 + n2``
            (``[h1, h2]``).
        num_layers, bias, batch_first, dropout, bidirectional: as ``torch.nn.LSTM``.
        coupled, num_negative, normalization, trainable_h0, backend, check_finite: see
            :class:`ENRNNCell`.
    """

    def __init__(
        self,
        input_size: int,
        unitary_size: int,
        short_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **cell_kwargs,
    ):
        def make_cell(in_size: int) -> ENRNNCell:
            return ENRNNCell(in_size, unitary_size, short_size, bias, **cell_kwargs)

        super().__init__(input_size, num_layers, batch_first, dropout, make_cell, bidirectional)
        self.unitary_size, self.short_size = unitary_size, short_size

    def param_groups(self, lr: float = 1e-3, lr_A: float = 1e-5) -> list[dict]:
        """Optimizer groups ``A`` (every layer's A1) and ``other``; see :meth:`ENRNNCell.param_groups`."""
        return _base.param_groups(self, ENRNNCell.param_group_of, {"A": lr_A, "other": lr})

    def _sizes_repr(self) -> str:
        return f"{self.input_size}, {self.unitary_size}, {self.short_size}"

    def extra_repr(self) -> str:
        """The constructor's arguments that differ from their defaults (as it takes them)."""
        s, cell = super().extra_repr(), self.layers[0]
        if cell.num_negative != default_num_negative(self.unitary_size):
            s += f", num_negative={cell.num_negative}"
        if cell.normalization != "sticky":
            s += f", normalization={cell.normalization!r}"
        if not cell.coupled:
            s += ", coupled=False"
        return s
