"""fastunitary/_backend.py: backend names and their resolution."""

import importlib.metadata

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


def test_triton_with_kernel(monkeypatch, dispatch_interprets):
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
    ("3.6.0", "2.4.6", True), ("3.6.0+git1234", "2.4.0rc1", True), ("3.6.0", "2.3.5", False),
    ("3.7.0", "2.4.0", False), ("3.9.0", "3.0.0", False), ("3.6.0", "2.3rc1", False),
    (None, "2.4.0", False),
])
def test_interpreter_conflict_of_triton_before_3_7_and_numpy_2_4(monkeypatch, triton, numpy, broken):
    """triton-lang/triton#9171: torch 2.11 pins triton 3.6, whose interpreter fails on NumPy
    2.4; the conflict is named (and how to resolve it) instead of an InterpreterError. The
    versions are read from metadata, local and pre-release tags included."""
    versions = {"triton": triton, "numpy": numpy}

    def version(package):
        if versions.get(package) is None:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    monkeypatch.setattr(importlib.metadata, "version", version)
    reason = _backend.interpreter_conflict()
    assert (reason is not None) == broken
    if broken:
        assert "numpy<2.4" in reason and "triton-lang/triton#9171" in reason


def test_nightly_triton_distribution_is_read_too(monkeypatch):
    versions = {"pytorch-triton": "3.6.0+git5fe38ffd", "numpy": "2.4.1"}

    def version(package):
        if package not in versions:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert _backend._release("triton", "pytorch-triton") == (3, 6)
    assert _backend.interpreter_conflict() is not None


def test_triton_in_the_interpreter_names_the_conflict(monkeypatch):
    monkeypatch.setattr(_backend, "has_kernel", lambda op: True)
    monkeypatch.setattr(_backend, "triton_importable", lambda: True)
    monkeypatch.setattr(_backend, "_INTERPRETER_CONFLICT", "Triton 3.6's interpreter fails")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for device in (CPU, CUDA):  # the interpreter runs CUDA tensors' kernels too
        with pytest.raises(BackendUnavailableError, match="Triton's interpreter.*Triton 3.6"):
            resolve_backend("x", "triton", device)
    assert resolve_backend("x", "auto", CUDA) == "reference"  # auto: what can run
    monkeypatch.delenv("TRITON_INTERPRET")
    assert resolve_backend("x", "triton", CUDA) == "triton"  # compiled kernels are unaffected
    assert resolve_backend("x", "auto", CUDA) == "triton"


def test_release_reads_installed_versions():
    assert _backend._release("torch")[0] == 2
    assert _backend._release("no-such-distribution-here") is None
