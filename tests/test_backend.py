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


@pytest.mark.parametrize("triton, numpy, broken", [
    ((3, 6), (2, 4), True), ((3, 6), (2, 3), False), ((3, 7), (2, 4), False),
    ((3, 9), (3, 0), False), (None, (2, 4), False),
])
def test_interpreter_conflict_of_triton_before_3_7_and_numpy_2_4(monkeypatch, triton, numpy, broken):
    """triton-lang/triton#9171: torch 2.11 pins triton 3.6, whose interpreter fails on NumPy
    2.4; the conflict is named (and how to resolve it) instead of an InterpreterError."""
    monkeypatch.setattr(_backend, "_release", {"triton": triton, "numpy": numpy}.get)
    reason = _backend.interpreter_conflict()
    assert (reason is not None) == broken
    if broken:
        assert "numpy<2.4" in reason and "triton-lang/triton#9171" in reason


def test_triton_on_cpu_names_the_interpreter_conflict(monkeypatch):
    monkeypatch.setattr(_backend, "has_kernel", lambda op: True)
    monkeypatch.setattr(_backend, "triton_importable", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(_backend, "_INTERPRETER_CONFLICT", "Triton 3.6's interpreter fails")
    with pytest.raises(BackendUnavailableError, match="needs Triton's interpreter: Triton 3.6"):
        resolve_backend("x", "triton", CPU)
    assert resolve_backend("x", "triton", CUDA) == "triton"  # compiled kernels are unaffected
    assert resolve_backend("x", "auto", CPU) == "reference"


def test_release_reads_installed_versions():
    assert _backend._release("torch")[:1] == (2,)
    assert _backend._release("no-such-distribution-here") is None
