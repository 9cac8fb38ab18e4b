"""Recurrent modules with the calling convention of ``torch.nn.LSTM``."""

from .enrnn import ENRNN, ENRNNCell
from .momentum_lstm import AdamLSTM, MomentumLSTM, NesterovLSTM, RMSPropLSTM
from .momentum_rnn import MomentumRNN
from .sbornn import SBORNN
from .scornn import ScoRNN, ScoRNNCell
from .scurnn import ScuRNN, ScuRNNCell

__all__ = [
    "AdamLSTM",
    "ENRNN",
    "ENRNNCell",
    "MomentumLSTM",
    "MomentumRNN",
    "NesterovLSTM",
    "RMSPropLSTM",
    "SBORNN",
    "ScoRNN",
    "ScoRNNCell",
    "ScuRNN",
    "ScuRNNCell",
]
