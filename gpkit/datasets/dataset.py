"""The :class:`Dataset` record, split helpers and input/target scaling."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass
class Dataset:
    """A loaded data set.

    :param name: registry name (``gpkit.datasets.load(name)``).
    :param X: inputs ``n x d`` (events ``n x d`` for point patterns, vertices ``N x 3`` for meshes).
    :param y: targets ``n`` (float for regression, ``long`` labels ``0..C-1`` for classification,
        ``n x D`` for vector fields) or ``None``.
    :param splits: named index sets, e.g. ``{"train": LongTensor, "test": LongTensor}``.
    :param extras: everything else (windows/bounds, mesh faces, grids, marks, the split id, ...).
    :param description: source, preprocessing and quirks in a few sentences.
    """

    name: str
    X: Tensor
    y: Tensor | None = None
    splits: dict[str, Tensor] = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    description: str = ""

    def _part(self, t: Tensor | None, split: str) -> Tensor | None:
        if t is None:
            return None
        if split not in self.splits:
            raise KeyError(f"data set {self.name!r} has no {split!r} split (splits: {list(self.splits)})")
        return t[self.splits[split]]

    @property
    def train_X(self) -> Tensor:
        return self._part(self.X, "train")

    @property
    def train_y(self) -> Tensor | None:
        return self._part(self.y, "train")

    @property
    def test_X(self) -> Tensor:
        return self._part(self.X, "test")

    @property
    def test_y(self) -> Tensor | None:
        return self._part(self.y, "test")

    @property
    def num_classes(self) -> int | None:
        """Number of classes for integer labels, else ``None``."""
        if self.y is None or self.y.is_floating_point():
            return None
        return int(self.extras.get("num_classes", int(self.y.max()) + 1))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """A copy with ``X``, float ``y`` and tensor extras on ``device`` / in ``dtype`` (labels stay long)."""

        def move(t):
            if not isinstance(t, Tensor):
                return t
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)

        extras = {k: move(v) for k, v in self.extras.items()}
        splits = {k: v.to(device) for k, v in self.splits.items()}
        y = None if self.y is None else move(self.y)
        return Dataset(self.name, move(self.X), y, splits, extras, self.description)

    def __repr__(self) -> str:
        shape = lambda t: "x".join(str(s) for s in t.shape) if t is not None else "None"
        sp = ", ".join(f"{k}: {len(v)}" for k, v in self.splits.items())
        return f"Dataset(name={self.name!r}, X={shape(self.X)}, y={shape(self.y)}, splits={{{sp}}})"


def as_long(idx) -> Tensor:
    return torch.as_tensor(np.asarray(idx), dtype=torch.long)


def mask_split(test_mask: np.ndarray) -> dict[str, Tensor]:
    """Train/test indices from a boolean test mask."""
    test_mask = np.asarray(test_mask, dtype=bool)
    return {"train": as_long(np.flatnonzero(~test_mask)), "test": as_long(np.flatnonzero(test_mask))}


def random_split(n: int, test_fraction: float = 0.1, seed: int = 0) -> dict[str, Tensor]:
    """Seeded random train/test split of ``range(n)`` (sorted indices), used by the generators.

    :param test_fraction: share of test points (rounded to the nearest integer count, at least 1).
    :param seed: numpy seed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(test_fraction * n))
    return {"train": as_long(np.sort(perm[n_test:])), "test": as_long(np.sort(perm[:n_test]))}


def fold_split(n: int, fold: int, num_folds: int = 10, seed: int = 0) -> dict[str, Tensor]:
    """Train/test split where the test set is fold ``fold`` of a fixed random ``num_folds``-fold cut of ``range(n)``.

    The folds (sorted indices) are disjoint over ``fold = 0..num_folds-1`` and cover every row once; the
    partition depends only on ``n``, ``num_folds`` and ``seed``.
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"split must be in 0..{num_folds - 1}, got {fold}")
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(n)] = np.arange(n) % num_folds
    return mask_split(fold_of == fold)


def stratified_fold_split(
    labels: np.ndarray, fold: int, num_folds: int = 10, seed: int = 0
) -> dict[str, Tensor]:
    """Train/test split where the test set is fold ``fold`` of a seeded stratified ``num_folds``-fold cut.

    The folds are disjoint over ``fold = 0..num_folds-1`` and cover every row once.
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"split must be in 0..{num_folds - 1}, got {fold}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        # consecutive class blocks continue the round-robin so folds stay balanced in size
        fold_of[rng.permutation(idx)] = (np.arange(len(idx)) + offset) % num_folds
        offset += len(idx)
    return mask_split(fold_of == fold)


def _check_2d(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be n x d, got shape {tuple(t.shape)}")


def standardize(
    train_X: Tensor, train_y: Tensor, test_X: Tensor | None = None, test_y: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, tuple[Tensor, Tensor]]:
    """Standardise inputs and targets with the training statistics.

    Columns of X with zero training spread are centred but not scaled (no NaN).

    :param train_X: ``n x d``; :param train_y: ``n`` (or ``n x 1``).
    :param test_X: ``m x d`` or ``None``; :param test_y: ``m`` or ``None``.
    :return: ``(train_X, train_y, test_X, test_y, (y_mean, y_std))`` standardised; predictions
        ``p`` on the standardised scale map back as ``p * y_std + y_mean``.
    """
    _check_2d("train_X", train_X)
    if train_y.shape[0] != train_X.shape[0]:
        raise ValueError(f"train_y has {train_y.shape[0]} rows but train_X has {train_X.shape[0]}")
    if test_X is not None:
        _check_2d("test_X", test_X)
        if test_X.shape[1] != train_X.shape[1]:
            raise ValueError(f"test_X has {test_X.shape[1]} columns but train_X has {train_X.shape[1]}")
    x_mean, x_std = train_X.mean(0), train_X.std(0)
    x_std = torch.where(x_std > 0, x_std, torch.ones_like(x_std))
    y_mean, y_std = train_y.mean(), train_y.std()
    if not y_std > 0:
        y_std = torch.ones_like(y_std)
    sx = lambda t: None if t is None else (t - x_mean) / x_std
    sy = lambda t: None if t is None else (t - y_mean) / y_std
    return sx(train_X), sy(train_y), sx(test_X), sy(test_y), (y_mean, y_std)


def min_max(train_X: Tensor, test_X: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Scale inputs to ``[0, 1]`` per column with the training minimum and maximum.

    Constant columns map to 0. Test points may fall outside ``[0, 1]``.

    :return: ``(train_X, test_X)`` scaled.
    """
    _check_2d("train_X", train_X)
    lo, hi = train_X.min(0).values, train_X.max(0).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    scale = lambda t: None if t is None else (t - lo) / span
    return scale(train_X), scale(test_X)


def scaled_split(
    ds: Dataset, inputs: str = "standardize"
) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
    """Train/test tensors of a regression :class:`Dataset`, scaled with training statistics.

    :param inputs: ``"standardize"`` (zero mean, unit variance) or ``"min_max"`` (``[0, 1]`` on
        the training split); targets are always standardised.
    :return: ``(train_X, train_y, test_X, test_y, (y_mean, y_std))``.
    """
    if inputs not in ("standardize", "min_max"):
        raise ValueError(f"inputs must be 'standardize' or 'min_max', got {inputs!r}")
    if ds.y is None or not ds.y.is_floating_point():
        raise ValueError(f"scaled_split needs float regression targets; {ds.name!r} has none")
    train_X, train_y, test_X, test_y, stats = standardize(ds.train_X, ds.train_y, ds.test_X, ds.test_y)
    if inputs == "min_max":
        train_X, test_X = min_max(ds.train_X, ds.test_X)
    return train_X, train_y, test_X, test_y, stats
