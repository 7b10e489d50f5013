"""Multi-class sets from ``classification/`` (KEEL CSVs and the MNIST test set)."""

from __future__ import annotations

import gzip
from functools import lru_cache

import numpy as np
import torch

from ._io import _key, data_file, read_numeric
from .dataset import Dataset, mask_split, stratified_fold_split

#: name -> (N, d, C) as documented in classification/README.md (vowel: d of the 10 features)
CLASSIFICATION_SETS: dict[str, tuple[int, int, int]] = {
    "letter": (20000, 16, 26),
    "satimage": (6435, 36, 6),
    "segment": (2310, 19, 7),
    "vowel": (990, 10, 11),
    "optdigits": (5620, 64, 10),
    "penbased": (10992, 16, 10),
    "texture": (5500, 40, 11),
    "movement_libras": (360, 90, 15),
    "banana": (5300, 2, 2),
    "mnist": (10000, 784, 10),
}


def classification_files(name: str) -> list[str]:
    if name == "mnist":
        return [
            "classification/mnist/t10k-images-idx3-ubyte.gz",
            "classification/mnist/t10k-labels-idx1-ubyte.gz",
        ]
    return [f"classification/{name}.csv.gz"]


def _labels(raw: np.ndarray) -> tuple[np.ndarray, int]:
    # remap sorted distinct values to 0..C-1 (the files already use 0..C-1; this guards other copies)
    classes, y = np.unique(raw, return_inverse=True)
    return y.astype(np.int64), len(classes)


def load_keel(name: str, split: int = 0, dtype: torch.dtype = torch.float64, raw: bool = False) -> Dataset:
    """Load a KEEL classification set.

    No split is given in the files, so the test set of split ``k`` is fold ``k`` of a fixed stratified
    10-fold partition (seed 0). ``vowel`` is the exception: its column ``x0`` is the standard
    speaker-disjoint 528/462 train/test flag, and ``X`` holds only the 10 features ``x3..x12``
    (speaker and sex go to ``extras``) unless ``raw=True``.

    :param split: fold index 0..9 (ignored for ``vowel``).
    :param raw: keep every column of the file as input.
    :return: :class:`Dataset` with ``X`` float ``N x d`` and ``y`` long labels ``0..C-1``.
    """
    table = read_numeric(data_file(f"classification/{name}.csv.gz"), skip_header=True)
    X, (y, C) = table[:, :-1], _labels(table[:, -1])
    extras: dict = {"num_classes": C, "split": split}
    if name == "vowel" and not raw:
        splits = mask_split(X[:, 0] == 1)
        extras.update(
            speaker=torch.tensor(X[:, 1], dtype=torch.long), sex=torch.tensor(X[:, 2], dtype=torch.long)
        )
        X = X[:, 3:]
        how = "standard speaker-disjoint 528/462 train/test split (column x0)"
    else:
        splits = stratified_fold_split(y, split, num_folds=10, seed=0)
        how = f"test = fold {split} of a stratified 10-fold partition (seed 0)"
    desc = f"KEEL classification set {name!r} ({C} classes, features unscaled); {how}."
    return Dataset(name, torch.tensor(X, dtype=dtype), torch.tensor(y), splits, extras, desc)


@lru_cache(maxsize=2)
def _read_idx(path: str, mtime: float) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        buf = fh.read()
    magic = int.from_bytes(buf[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    shape = tuple(int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    return arr


def load_mnist(split: int = 0, dtype: torch.dtype = torch.float64) -> Dataset:
    """Load the MNIST test set (10,000 images).

    ``X`` is ``10000 x 784`` in ``[0, 1]`` (pixels / 255, row-major 28 x 28), ``y`` long labels.
    Train/test: fold ``split`` of a stratified 10-fold partition (seed 0) of these 10,000 images.
    """
    images = _read_idx(*_key(data_file("classification/mnist/t10k-images-idx3-ubyte.gz")))
    labels = _read_idx(*_key(data_file("classification/mnist/t10k-labels-idx1-ubyte.gz")))
    X = torch.tensor(images.reshape(len(images), -1), dtype=dtype) / 255.0
    y = torch.tensor(labels.astype(np.int64))
    desc = (
        "MNIST test set (LeCun et al. 1998), 10,000 images scaled to [0, 1]; "
        f"test = fold {split} of a stratified 10-fold partition (seed 0)."
    )
    splits = stratified_fold_split(labels, split, num_folds=10, seed=0)
    return Dataset("mnist", X, y, splits, {"num_classes": 10, "image_shape": (28, 28), "split": split}, desc)
