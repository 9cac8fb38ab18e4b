"""fastunitary.tasks.fashion_mnist: the IDX reader, the data folder lookup, the task."""

import gzip

import numpy as np
import pytest
import torch

from fastunitary.tasks import fashion_mnist as fm
from fastunitary.tasks.splits import load_task
from fastunitary.train import TrainConfig, train


def write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(fm.IDX_TYPES[code]).tobytes()
    # closed before returning: Python 3.12's GzipFile buffers its writes, and an unclosed
    # one left the file empty (seen on the GPU machine's Python 3.12)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(data)


@pytest.fixture
def fake_root(tmp_path):
    """A folder with small IDX files, the training pair gzipped, the test pair raw."""
    rng = np.random.default_rng(0)
    for split, n, gz in (("train", 12, ".gz"), ("test", 5, "")):
        images, labels = fm.FILES[split]
        write_idx(tmp_path / (images + gz), rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / (labels + gz), rng.integers(0, 10, n))
    return tmp_path


@pytest.mark.parametrize("code", sorted(fm.IDX_TYPES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, code, gz):
    a = np.arange(24).reshape(2, 3, 4) - 5 * (code != 0x08)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, a, code)
    out = fm.read_idx(path)
    assert out.shape == (2, 3, 4) and np.array_equal(out, a.astype(fm.IDX_TYPES[code]))


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="not an IDX file"):
        fm.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.arange(4))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        fm.read_idx(tmp_path / "short")
    # a header cut inside its sizes used to fail in numpy, naming no file
    (tmp_path / "cut").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="cut: the header names 3 dimensions"):
        fm.read_idx(tmp_path / "cut")


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_read_idx_names_a_damaged_gzip_file(tmp_path, damage):
    """A cut download used to end in an EOFError traceback from gzip, naming no file."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, (50, 28, 28)))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2] if damage == "truncated" else b"plain text " * 9)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: not a readable gzip"):
        fm.read_idx(path)


def test_arrays_from_a_given_folder(fake_root, monkeypatch):
    x, y = fm.fashion_mnist_arrays("train", root=fake_root)
    images = fm.read_idx(fake_root / (fm.FILES["train"][0] + ".gz"))
    assert x.shape == (12, 784, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[3, :, 0], images[3].reshape(-1) / 255.0, rtol=1e-6)
    xp, _ = fm.fashion_mnist_arrays("train", root=fake_root, permuted=True, seed=2)
    np.testing.assert_array_equal(xp[:, :, 0], x[:, np.random.RandomState(2).permutation(784), 0])
    monkeypatch.setenv("FASTUNITARY_FASHION_MNIST", str(fake_root))
    assert fm.fashion_mnist_arrays("test")[0].shape == (5, 784, 1)
    pytest.importorskip("datasets")  # the splits need it (dev extra; not on the GPU image)
    splits = load_task("fashion_mnist")
    assert splits["train"].num_rows == 12 and splits["test"][0]["x"].shape == (784, 1)


def test_missing_data_names_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTUNITARY_FASHION_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fm.fashion_mnist_arrays("train", root=tmp_path)
    monkeypatch.setattr(fm, "_debian_folder", lambda: None)
    with pytest.raises(FileNotFoundError, match="no data folder found"):
        fm.fashion_mnist_arrays("test")
    with pytest.raises(ValueError, match="split must be"):
        fm.fashion_mnist_arrays("valid", root=tmp_path)


def test_training_on_fashion_mnist(fake_root, monkeypatch):
    monkeypatch.setenv("FASTUNITARY_FASHION_MNIST", str(fake_root))
    m = train(TrainConfig(task="permuted_fashion_mnist", model="scornn", hidden=6, batch=4,
                          steps=2, eval_every=2, eval_size=3), progress=False)
    assert m["steps"] == 2 and 0 <= m["final_eval_accuracy"] <= 1
    assert m["baseline_loss"] == pytest.approx(np.log(10))
    assert m["tokens_per_second"] > 0 and torch.isfinite(torch.tensor(m["final_eval_loss"]))
