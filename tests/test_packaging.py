"""Installation layout: kernels/ installs as fastunitary.kernels; the core needs no `datasets`, and
no `triton` where it has no wheels."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_is_a_subpackage_and_no_top_level_kernels():
    import fastunitary.kernels

    assert Path(fastunitary.kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"
    code = "import importlib.util, sys; sys.path = [p for p in sys.path if p not in ('', '.')]; print(importlib.util.find_spec('kernels'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert out.stdout.strip() == "None"


def test_core_imports_without_datasets():
    code = (
        "import sys; sys.modules['datasets'] = None\n"
        "import fastunitary, fastunitary.nn, fastunitary.functional, fastunitary.tasks, "
        "fastunitary.train, fastunitary.cli\n"
        "assert 'datasets' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_installed_metadata():
    """torch range admits 2.11 (GPU machines) and 2.13 (CPU machines); MIT; Python >= 3.10."""
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in metadata.requires("fastunitary")]
    (torch_req,) = [r for r in reqs if r.name == "torch"]
    assert "2.11.0" in torch_req.specifier and "2.13.0" in torch_req.specifier
    assert {"triton", "einops", "datasets"} <= {r.name for r in reqs}
    dev = {r.name for r in reqs if r.marker and "dev" in str(r.marker)}
    assert {"pytest", "pytest-benchmark", "hypothesis"} <= dev
    meta = metadata.metadata("fastunitary")
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.10"


def test_library_runs_where_triton_is_not_installed():
    """macOS and Windows have no triton wheels (pyproject installs it on Linux only): every
    family trains on the reference backend there, compiles, and backend='triton' says why it
    cannot run. `sys.modules['triton'] = None` makes both `import triton` and
    `importlib.util.find_spec('triton')` behave as if it were not installed."""
    code = """
import sys; sys.modules['triton'] = None
import torch
import fastunitary
from fastunitary import nn as fnn
from fastunitary._backend import BackendUnavailableError
torch.manual_seed(0)
x = torch.randn(2, 7, 3)
for make in (lambda: fnn.ScuRNN(3, 4), lambda: fnn.ScoRNN(3, 4), lambda: fnn.ENRNN(3, 4, 2),
             lambda: fnn.MomentumLSTM(3, 4), lambda: fnn.AdamLSTM(3, 4),
             lambda: fnn.MomentumRNN(3, 4), lambda: fnn.SBORNN(3, 4)):
    m = make()
    y, _ = m(x)
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in m.parameters()), m
m = fnn.ScoRNN(3, 4)
torch.testing.assert_close(torch.compile(m, fullgraph=True)(x)[0], m(x)[0])
try:
    fnn.ScuRNN(3, 4, backend='triton')(x)
except BackendUnavailableError as e:
    assert 'needs the triton package' in str(e), e
else:
    raise AssertionError('backend=triton ran without triton')
assert [k for k in sys.modules if k.split('.')[0] == 'triton' and sys.modules[k] is not None] == []
"""
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, cwd="/")
