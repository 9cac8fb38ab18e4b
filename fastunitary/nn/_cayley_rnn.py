"""What scuRNN and scoRNN share: a cell whose W is a scaled Cayley transform.

Both models are ``h_t = modReLU(W h_{t-1} + U x_t + c)`` with ``W = cayley(A, D)``
(METHODS.md section 3); they differ only in the field (complex or real) and in ``D``
(learned phases or fixed signs), which the subclasses in ``scurnn.py`` and ``scornn.py``
provide. Everything else comes from :mod:`fastunitary.nn._base`.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from ..functional.cayley import cayley_planes
from ..functional.planes import real_embedding
from . import _base, _skew
from .init import cayley_skew_init


class CayleyCellBase(_base.RecurrentCell):
    """A layer with ``W = (I + A)^-1 (I - A) D``, ``A`` exactly skew(-Hermitian).

    Subclasses set ``is_complex`` and implement ``_create_scaling``, ``_reset_scaling``,
    ``_scaling_planes`` (the planes of the diagonal of ``D``) and ``_scaling_source``.

    Parameters, beyond those of :class:`~fastunitary.nn._base.RecurrentCell`:
        skew_re, skew_im: packed free entries of ``A`` (see :mod:`fastunitary.nn._skew`).
    """

    # Optimizer groups of the papers: A and D (scuRNN's phases) train with their own
    # learning rates, everything else with the usual one.
    param_group_of = {"skew_re": "A", "skew_im": "A", "theta": "D"}

    def _create_recurrent_parameters(self) -> None:
        n = self.hidden_size
        n_re, n_im = _skew.packed_sizes(n)
        self.skew_re = nn.Parameter(torch.zeros(n_re))
        self.skew_im = nn.Parameter(torch.zeros(n_im)) if self.is_complex else None
        self._create_scaling()

    def _reset_recurrent_parameters(self, generator: torch.Generator | None) -> None:
        """A block-diagonal (METHODS.md section 1), imaginary part zero; then D."""
        packed_re, _ = _skew.pack(cayley_skew_init(self.hidden_size, generator=generator))
        self.skew_re.copy_(packed_re)
        if self.skew_im is not None:
            self.skew_im.zero_()
        self._reset_scaling(generator)

    @abc.abstractmethod
    def _create_scaling(self) -> None:
        """Register the parameter or buffer that ``D`` is built from."""

    @abc.abstractmethod
    def _reset_scaling(self, generator: torch.Generator | None) -> None:
        """Initialize the parameter or buffer that ``D`` is built from."""

    @abc.abstractmethod
    def _scaling_planes(self) -> torch.Tensor:
        """The diagonal of ``D`` as planes: ``(1, n)`` real or ``(2, n)`` ``[Re, Im]``."""

    @abc.abstractmethod
    def _scaling_source(self) -> torch.Tensor:
        """The tensor ``D`` is built from (a key of the cached ``W``)."""

    # -- the recurrent matrix -----------------------------------------------------------
    def skew_matrix(self) -> torch.Tensor:
        """``A``: ``(n, n)``, complex for scuRNN, real for scoRNN; exactly skew."""
        Ap = self._skew_planes()
        return torch.complex(Ap[0], Ap[1]) if self.is_complex else Ap[0]

    def _skew_planes(self) -> torch.Tensor:
        return _skew.skew_planes(self.skew_re, self.skew_im, self.hidden_size)

    def _weight_planes(self) -> torch.Tensor:
        return cayley_planes(self._skew_planes(), self._scaling_planes(), self.backend)

    def recurrent_matrix(self, layer: int = 0) -> torch.Tensor:
        """``W = (I + A)^-1 (I - A) D`` now in use: ``(n, n)``, complex64 for scuRNN."""
        if layer != 0:
            raise ValueError(f"a cell has one layer; layer must be 0, got {layer}")
        Wp = self._weight_planes()
        return torch.complex(Wp[0], Wp[1]) if self.is_complex else Wp[0]

    def _compute_recurrent_weight(self) -> torch.Tensor:
        Wp = self._weight_planes()
        return real_embedding(Wp[0], Wp[1]) if self.is_complex else Wp[0]

    def _weight_sources(self) -> list[torch.Tensor]:
        sources = [p for p in (self.skew_re, self.skew_im) if p is not None]
        return sources + [self._scaling_source()]

    def param_groups(self, lr: float = 1e-3, lr_A: float = 1e-4, lr_D: float = 1e-4) -> list[dict]:
        """Optimizer parameter groups ``A``, ``D`` (scuRNN's phases) and ``other``.

        Each dict has ``name``, ``params`` and ``lr``; pass the list to one optimizer, or
        split it by name to give each group its own optimizer as the papers do.
        """
        return _base.param_groups(self, self.param_group_of, {"A": lr_A, "D": lr_D, "other": lr})


class CayleyRNNBase(_base.StackedRNN):
    """Multi-layer sequence module with the calling convention of ``torch.nn.LSTM``.

    Subclasses set ``cell_class``.
    """

    cell_class: type[CayleyCellBase]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        trainable_h0: bool = False,
        backend: str = "auto",
        check_finite: bool = False,
        **cell_kwargs,
    ):
        def make_cell(in_size: int) -> CayleyCellBase:
            return self.cell_class(in_size, hidden_size, bias, trainable_h0=trainable_h0,
                                   backend=backend, check_finite=check_finite, **cell_kwargs)

        super().__init__(input_size, num_layers, batch_first, dropout, make_cell, bidirectional)

    def param_groups(self, lr: float = 1e-3, lr_A: float = 1e-4, lr_D: float = 1e-4) -> list[dict]:
        """Optimizer parameter groups ``A``, ``D`` (scuRNN's phases) and ``other``.

        Each dict has ``name``, ``params`` and ``lr``; pass the list to one optimizer, or
        split it by name to give each group its own optimizer as the papers do.
        """
        return _base.param_groups(self, self.cell_class.param_group_of,
                                  {"A": lr_A, "D": lr_D, "other": lr})
