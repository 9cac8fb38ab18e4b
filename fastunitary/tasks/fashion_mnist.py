"""Sequential and permuted Fashion-MNIST (T = 784, METHODS.md section 8), read offline.

The IDX files come from Debian's ``dataset-fashion-mnist`` package (``apt-get install
dataset-fashion-mnist``; its data folder is found with ``dpkg -L``), or from a folder the
user gives (``root=``, or the environment variable ``FASTUNITARY_FASHION_MNIST``) holding
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). Nothing is downloaded. The files are
parsed here (:func:`read_idx`), with no third-party reader.

Sequences are the 28 x 28 images read row by row, one pixel (scaled to [0, 1]) per step;
the permuted variant applies ``RandomState(seed).permutation(784)`` to every image.
Splits: the official 60 000 train and 10 000 test images.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import zlib
from pathlib import Path

import numpy as np

from .digits import permutation

LENGTH = 784
N_CLASSES = 10
PACKAGE = "dataset-fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
#: IDX type codes (the third byte of the magic number) -> numpy big-endian dtypes
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzip-compressed when its name ends in ``.gz``) as a numpy array.

    Format: two zero bytes, a type code, the number of dimensions ``k``, ``k`` big-endian
    uint32 sizes, then the data in C order.
    """
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a cut or damaged download
        raise ValueError(f"{path}: not a readable gzip file ({type(e).__name__}: {e}); "
                         f"fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (magic {raw[:4].hex()})")
    k = raw[3]
    if len(raw) < 4 + 4 * k:
        raise ValueError(f"{path}: the header names {k} dimensions, the file ends after "
                         f"{len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=k, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - 4 - 4 * k != need:
        raise ValueError(f"{path}: header says shape {shape} ({need} bytes of data), "
                         f"file holds {len(raw) - 4 - 4 * k}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * k).reshape(shape).astype(dtype.newbyteorder("="))


def _debian_folder() -> Path | None:
    try:
        listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True,
                                 check=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing:
        if Path(line).name.startswith(FILES["train"][0]):
            return Path(line).parent
    return None


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def data_folder(root: str | Path | None = None) -> Path:
    """Where the IDX files are: ``root``, ``$FASTUNITARY_FASHION_MNIST``, or the Debian
    package's folder; a ``FileNotFoundError`` saying what to install otherwise."""
    given = root if root is not None else os.environ.get("FASTUNITARY_FASHION_MNIST")
    folder = Path(given) if given else _debian_folder()
    missing = [] if folder is None else [
        s for pair in FILES.values() for s in pair if _find(folder, s) is None]
    if folder is None or missing:
        where = f"{folder} lacks {', '.join(missing)}" if folder else "no data folder found"
        raise FileNotFoundError(
            f"Fashion-MNIST: {where}. Install Debian's package (apt-get install {PACKAGE}) "
            "or set FASTUNITARY_FASHION_MNIST (or, from Python, pass root=) to a folder "
            "holding the four IDX "
            "files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte, optionally .gz)")
    return folder


def fashion_mnist_arrays(split: str, *, permuted: bool = False, seed: int = 0,
                         root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``x`` ``(n, 784, 1)`` float32 in [0, 1] and ``y`` ``(n,)`` int64 for ``"train"`` (60 000)
    or ``"test"`` (10 000)."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = data_folder(root)
    images = read_idx(_find(folder, FILES[split][0]))
    labels = read_idx(_find(folder, FILES[split][1]))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"Fashion-MNIST {split}: images {images.shape} and labels "
                         f"{labels.shape} are not (n, 28, 28) and (n,)")
    x = (images.reshape(-1, LENGTH) / 255.0).astype(np.float32)
    if permuted:
        x = x[:, permutation(seed, LENGTH)]
    return x[..., None], labels.astype(np.int64)
