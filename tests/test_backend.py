"""fastunitary/_backend.py: backend names and their resolution."""

import pytest
import torch

from fastunitary import _backend
from fastunitary._backend import BackendUnavailableError, resolve_backend

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def test_reference_and_auto_on_cpu():
    assert resolve_backend("recurrence", "reference", CPU) == "reference"
    assert resolve_backend("recurrence", "auto", CPU) == "reference"


def test_unknown_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("recurrence", "Triton", CPU)


def test_triton_without_kernel_says_not_available_yet():
    with pytest.raises(BackendUnavailableError, match="not available yet for fastunitary op 'x'"):
        resolve_backend("x", "triton", CUDA)


def test_triton_with_kernel(monkeypatch):
    monkeypatch.setattr(_backend, "has_kernel", lambda op: True)
    monkeypatch.setattr(_backend, "triton_importable", lambda: True)
    assert resolve_backend("x", "auto", CUDA) == "triton"
    assert resolve_backend("x", "triton", CUDA) == "triton"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailableError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        resolve_backend("x", "triton", CPU)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("x", "triton", CPU) == "triton"
    assert resolve_backend("x", "auto", CPU) == "reference"  # auto never interprets
    monkeypatch.setattr(_backend, "triton_importable", lambda: False)
    with pytest.raises(BackendUnavailableError, match="needs the triton package"):
        resolve_backend("x", "triton", CUDA)
    assert resolve_backend("x", "auto", CUDA) == "reference"
