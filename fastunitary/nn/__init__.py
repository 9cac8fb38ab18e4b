"""Recurrent modules with the calling convention of ``torch.nn.LSTM``."""

from .scornn import ScoRNN, ScoRNNCell
from .scurnn import ScuRNN, ScuRNNCell

__all__ = ["ScoRNN", "ScoRNNCell", "ScuRNN", "ScuRNNCell"]
