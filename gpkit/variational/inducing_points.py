"""Initial inducing locations: a random subset of the distinct training inputs, or k-means centres."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["init_inducing_points"]


def init_inducing_points(train_X: Tensor, num_inducing: int, method: str = "random", seed: int = 0) -> Tensor:
    """Initial inducing locations: a random subset of ``train_X`` or k-means centres.

    :param train_X: shape ``(n, d)``.
    :param num_inducing: ``M <= n``.
    :param method: ``"random"`` (a random subset of the distinct training inputs) or ``"kmeans"`` (scikit-learn mini-batch k-means).
    :param seed: random seed.
    :return: shape ``(M, d)``, same dtype and device as ``train_X``.
    """
    if method == "random":
        distinct = torch.unique(train_X.detach(), dim=0)  # repeated rows (e.g. KEGG) would give singular K_ZZ
        if distinct.size(0) < num_inducing:
            raise ValueError(f"num_inducing={num_inducing} exceeds the {distinct.size(0)} distinct training inputs")
        g = torch.Generator().manual_seed(seed)
        return distinct[torch.randperm(distinct.size(0), generator=g)[:num_inducing].to(train_X.device)].clone()
    if method == "kmeans":
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(num_inducing, random_state=seed, n_init=1, batch_size=max(1024, 3 * num_inducing))
        centres = km.fit(train_X.detach().cpu().numpy()).cluster_centers_
        return torch.as_tensor(centres, dtype=train_X.dtype, device=train_X.device)
    raise ValueError(f"inducing_init must be 'random' or 'kmeans', got {method!r}")
