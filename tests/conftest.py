import contextlib
import os
import sys
import types

import pytest
import torch

# Without a GPU, Triton kernels run on CPU tensors through Triton's interpreter. It must
# be chosen before any kernel is decorated (at import of fastunitary.kernels.*), so here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastunitary import _backend  # noqa: E402


def pytest_sessionstart(session):
    """A known Triton bug would fail every kernel test with a bare InterpreterError: stop
    with its name and its fix instead."""
    reason = _backend.interpreter_conflict()
    if _backend.triton_interpret() and reason:
        pytest.exit(f"the kernel tests run under Triton's interpreter, and {reason}", returncode=1)


#: Devices the device-parametrized tests run on: CUDA joins where present (ci/gpu.sh).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture
def dispatch_interprets(monkeypatch):
    """``TRITON_INTERPRET=1`` for a test that needs dispatch to accept CPU tensors for
    ``backend="triton"`` but runs no kernel (it checks a refusal, or a fake kernel). The
    known interpreter conflict is cleared too: on a GPU machine whose numpy breaks Triton
    3.6's interpreter, dispatch would otherwise refuse for that reason first."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(_backend, "_INTERPRETER_CONFLICT", None)


@pytest.fixture
def fake_kernel(monkeypatch):
    """Install ``fastunitary.kernels.<op>`` whose forward/backward record calls and run ``impl``.

    Tests the dispatch route (which implementation a backend name reaches) without a
    Triton kernel: the recorded calls prove the op went through ``kernels.<op>``.
    """

    def install(op, forward, backward):
        calls = []
        mod = types.ModuleType(f"fastunitary.kernels.{op}")
        mod.__spec__ = types.SimpleNamespace(name=mod.__name__)

        def fwd(*args):
            calls.append("forward")
            return forward(*args)

        def bwd(*args):
            calls.append("backward")
            return backward(*args)

        mod.forward, mod.backward = fwd, bwd
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        monkeypatch.setattr(_backend, "has_kernel", lambda name: name == op)
        monkeypatch.setattr(_backend, "triton_importable", lambda: True)
        return calls

    return install


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@contextlib.contextmanager
def mkldnn_disabled():
    """``torch.backends.mkldnn.enabled`` off while the block runs (that module's ``flags()``
    also sets oneDNN's TF32 switch, with a warning on machines without an Intel GPU)."""
    previous = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(previous)


def assert_create_graph_keeps_the_gradient(loss, leaves, *, autocast=False, rtol=1e-10,
                                           atol=1e-12):
    """The first derivatives of ``loss()`` in ``leaves`` are the same with
    ``create_graph=True`` (the ops' differentiable path, for a double backward) as without
    (the fused backward ops); ``autocast``: both taken under CPU bfloat16 autocast, which
    neither path may let into its arithmetic."""
    def gradients(create_graph):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return torch.autograd.grad(loss(), leaves, create_graph=create_graph)

    for fused, differentiable in zip(gradients(False), gradients(True)):
        torch.testing.assert_close(differentiable.detach(), fused, rtol=rtol, atol=atol)


def gradgradcheck_each(fn, inputs) -> bool:
    """``torch.autograd.gradgradcheck`` of ``fn`` in all ``inputs`` together (the cross
    terms), then in each input alone. gradgradcheck skips a gradient that does not require
    grad when another does, so a second derivative lost for one input passes the joint
    check; alone, it fails (its numerical derivative is not zero)."""
    assert torch.autograd.gradgradcheck(fn, inputs)
    for k, x in enumerate(inputs):
        others = [t.detach() for t in inputs]

        def alone(t, k=k, others=others):
            return fn(*others[:k], t, *others[k + 1:])

        assert torch.autograd.gradgradcheck(alone, (x,))
    return True
