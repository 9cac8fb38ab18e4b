"""Recurrent modules with the calling convention of ``torch.nn.LSTM``."""

from .enrnn import ENRNN, ENRNNCell
from .scornn import ScoRNN, ScoRNNCell
from .scurnn import ScuRNN, ScuRNNCell

__all__ = ["ENRNN", "ENRNNCell", "ScoRNN", "ScoRNNCell", "ScuRNN", "ScuRNNCell"]
