"""fastunitary/_checks.py: the shared argument checks, and their use by every module."""

import numpy as np
import pytest
import torch

from fastunitary import _checks
from fastunitary import nn as fnn


@pytest.mark.parametrize("value, want", [(True, True), (False, False), (1, True), (0, False),
                                         (np.int64(1), True)])
def test_check_flag_takes_bools_and_0_or_1(value, want):
    assert _checks.check_flag("bias", value) is want


@pytest.mark.parametrize("value", ["relu", "False", 2, -1, 1.0, None, torch.tensor(True)])
def test_check_flag_refuses_what_truthiness_would_misread(value):
    with pytest.raises(TypeError, match="bias must be a bool.*wrong position"):
        _checks.check_flag("bias", value)


# (constructor, arguments before the flags): every module family and cell
FAMILIES = {
    "ScoRNN": (fnn.ScoRNN, (3, 4, 1)),
    "ScuRNN": (fnn.ScuRNN, (3, 4, 1)),
    "ENRNN": (lambda *a, **k: fnn.ENRNN(3, 4, 2, *a, **k), (1,)),
    "MomentumRNN": (fnn.MomentumRNN, (3, 4, 1, "tanh")),
    "MomentumLSTM": (fnn.MomentumLSTM, (3, 4, 1)),
    "SBORNN": (fnn.SBORNN, (3, 4, 1, "relu")),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("flag", ["bias", "batch_first", "bidirectional"])
def test_every_module_refuses_a_non_bool_flag(family, flag):
    """``torch.nn.RNN``'s fourth positional argument is ``nonlinearity``,
    ``torch.nn.LSTM``'s is ``bias``: a string ported into the wrong place is refused rather
    than read as ``True``."""
    make, before = FAMILIES[family]
    with pytest.raises(TypeError, match=f"{flag} must be a bool"):
        make(*before, **{flag: "tanh"})
    make(*before, **{flag: 0})  # an int 0/1 is accepted, as torch.nn.LSTM does


@pytest.mark.parametrize("cell", [lambda m, b: fnn.ScoRNNCell(m, 4, b),
                                  lambda m, b: fnn.ScuRNNCell(m, 4, b),
                                  lambda m, b: fnn.ENRNNCell(m, 4, 2, b)],
                         ids=["ScoRNNCell", "ScuRNNCell", "ENRNNCell"])
def test_cells_refuse_a_non_bool_bias(cell):
    with pytest.raises(TypeError, match="bias must be a bool"):
        cell(3, "relu")
