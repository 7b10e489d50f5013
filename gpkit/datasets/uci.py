"""UCI / DELVE regression sets from ``uci/`` (treforevans/uci_datasets and yaringal's UCI folders)."""

from __future__ import annotations

import numpy as np
import torch

from ._io import data_file, read_numeric
from .dataset import Dataset, fold_split, mask_split

#: name -> (N, d) as documented in uci/README.md; the last three have no split file.
UCI_SETS: dict[str, tuple[int, int]] = {
    "bike": (17379, 17),
    "concrete": (1030, 8),
    "elevators": (16599, 18),
    "energy": (768, 8),
    "keggdirected": (48827, 20),
    "keggundirected": (63608, 27),
    "kin40k": (40000, 8),
    "parkinsons": (5875, 20),
    "pol": (15000, 26),
    "protein": (45730, 9),
    "pumadyn32nm": (8192, 32),
    "wine": (1599, 11),
    "yacht": (308, 6),
    "kin8nm": (8192, 8),
    "naval-propulsion-plant": (11934, 16),
    "power-plant": (9568, 4),
}
NO_MASK = ("kin8nm", "naval-propulsion-plant", "power-plant")

_NOTES = {
    "bike": "target log(count)",
    "yacht": "target log(residuary resistance)",
    "protein": "target log(1 + RMSD)",
    "wine": "red wine; the file's target is alcohol (use target='quality' for the quality score)",
    "keggdirected": "32,486 duplicate rows",
    "keggundirected": "45,033 duplicate rows; input column 9 is constant",
    "naval-propulsion-plant": "target: compressor decay coefficient; input columns 8 and 11 are constant",
}


def uci_files(name: str) -> list[str]:
    files = [f"uci/{name}/data.csv.gz"]
    if name not in NO_MASK:
        files.append(f"uci/{name}/test_mask.csv.gz")
    return files


def load_uci(name: str, split: int = 0, dtype: torch.dtype = torch.float64, target: str = "last") -> Dataset:
    """Load a UCI regression set with train/test split ``split``.

    Sets with a ``test_mask.csv.gz`` use its column ``split`` (0..9; 10-fold CV, each row is a test
    point in exactly one split). ``kin8nm``, ``naval-propulsion-plant`` and ``power-plant`` have no
    split file: their test set is fold ``split`` of a random 10-fold partition (seed 0) instead.

    The treforevans sets are already **mean-centred but not scaled** (some targets log-transformed);
    the three others are raw UCI values. Standardise with :func:`gpkit.datasets.standardize` on the
    training split.

    :param name: folder name in ``uci/``.
    :param split: the test fold, 0..9.
    :param target: ``"last"`` (the file's last column) or, for ``wine`` only, ``"quality"`` (column 10).
    :return: :class:`Dataset` with ``X`` ``N x d``, ``y`` ``N``, splits ``train``/``test``.
    """
    if not isinstance(split, int) or isinstance(split, bool):
        raise TypeError(f"split must be an int, got {type(split).__name__}")
    data = read_numeric(data_file(f"uci/{name}/data.csv.gz"))
    if target == "last":
        X, y = data[:, :-1], data[:, -1]
    elif target == "quality" and name == "wine":
        X, y = np.delete(data, 10, axis=1), data[:, 10]
    else:
        raise ValueError(f"target must be 'last' (or 'quality' for wine), got {target!r} for {name!r}")
    if name in NO_MASK:
        splits = fold_split(len(y), split, num_folds=10, seed=0)
        how = f"test = fold {split} of a random 10-fold partition (seed 0; no split file)"
    else:
        mask = read_numeric(data_file(f"uci/{name}/test_mask.csv.gz"), dtype=np.int8)
        if not 0 <= split < mask.shape[1]:
            raise ValueError(f"split must be in 0..{mask.shape[1] - 1} for {name!r}, got {split}")
        splits = mask_split(mask[:, split].astype(bool))
        how = f"fixed split {split} of 10 (test_mask column {split})"
    centred = "raw UCI values" if name in NO_MASK else "columns mean-centred, not scaled"
    note = _NOTES.get(name, "")
    desc = f"UCI regression set {name!r}: {centred}; {how}." + (f" Note: {note}." if note else "")
    return Dataset(
        name=name,
        X=torch.tensor(X, dtype=dtype),
        y=torch.tensor(y, dtype=dtype),
        splits=splits,
        extras={"split": split, "centred": name not in NO_MASK},
        description=desc,
    )
