"""fastunitary: unitary, orthogonal, eigenvalue-normalized and momentum RNNs for PyTorch.

    import fastunitary as fu
    rnn = fu.nn.ScuRNN(input_size=10, hidden_size=64)
    output, h_n = rnn(x)                 # like torch.nn.LSTM, x: (T, B, 10)

Subpackages: :mod:`fastunitary.nn` (modules), :mod:`fastunitary.functional` (ops with
``backend="auto" | "reference" | "triton"``), :mod:`fastunitary.reference` (pure PyTorch),
:mod:`fastunitary.kernels` (Triton), :mod:`fastunitary.tasks` (data sets).
"""

from . import functional, nn, reference
from ._backend import BackendUnavailableError
from .functional import as_complex

__version__ = "0.1.0"

__all__ = ["BackendUnavailableError", "as_complex", "functional", "nn", "reference", "__version__"]
