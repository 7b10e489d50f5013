"""Small real data sets bundled with scikit-learn (always available, no data folder needed)."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset, fold_split, stratified_fold_split

#: registry name -> (sklearn loader name, task, (n, d))
SKLEARN_SETS = {
    "digits": ("load_digits", "classification", (1797, 64)),
    "iris": ("load_iris", "classification", (150, 4)),
    "breast-cancer": ("load_breast_cancer", "classification", (569, 30)),
    "sklearn-wine": ("load_wine", "classification", (178, 13)),
    "diabetes": ("load_diabetes", "regression", (442, 10)),
}


def load_sklearn(name: str, split: int = 0, dtype: torch.dtype = torch.float64) -> Dataset:
    """A scikit-learn toy set.

    Classification sets: ``y`` long labels, test = fold ``split`` of a stratified 10-fold partition
    (seed 0). ``diabetes`` (regression, inputs already scaled by scikit-learn, raw target): test =
    fold ``split`` of a random 10-fold partition (seed 0).
    """
    import sklearn.datasets

    loader, task, _ = SKLEARN_SETS[name]
    bunch = getattr(sklearn.datasets, loader)()
    X = torch.tensor(np.asarray(bunch.data, dtype=np.float64), dtype=dtype)
    if task == "classification":
        y = torch.tensor(np.asarray(bunch.target, dtype=np.int64))
        splits = stratified_fold_split(bunch.target, split, 10, seed=0)
        extras = {"num_classes": int(y.max()) + 1, "target_names": list(bunch.target_names)}
        how = f"test = fold {split} of a stratified 10-fold partition (seed 0)"
    else:
        y = torch.tensor(np.asarray(bunch.target, dtype=np.float64), dtype=dtype)
        splits = fold_split(len(y), split, num_folds=10, seed=0)
        extras = {}
        how = f"test = fold {split} of a random 10-fold partition (seed 0)"
    extras.update(feature_names=list(getattr(bunch, "feature_names", [])), split=split)
    desc = f"scikit-learn's bundled {loader[5:]} data ({task}); {how}."
    return Dataset(name, X, y, splits, extras, desc)
