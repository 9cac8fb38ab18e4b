"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["output"].shape == (32, 1000, 128)
    assert namespace["h_complex"].shape == (2, 32, 64)


def test_readme_momentum_example_runs():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if "MomentumLSTM(" in b]
    assert blocks, "README has no MomentumLSTM example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["output"].shape == (8, 784, 128)
    assert namespace["c_n"].shape == (1, 8, 128)
    assert namespace["out_orth"].shape == (8, 784, 128)


def test_readme_splits_example_runs():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if "load_task(" in b]
    assert blocks, "README has no datasets-splits example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["batch"]["x"].shape == (32, 1020)
    assert namespace["digits"]["test"][0]["x"].shape == (64, 1)
