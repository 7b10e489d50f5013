"""``gpkit demo`` entry for RVGP: a tangent vector field on a sphere from a few noisy vectors."""

from __future__ import annotations

import time
from pathlib import Path

import torch

__all__ = ["demo"]


def demo(out_dir: Path, quick: bool = False) -> list[dict]:
    """RVGP vs a per-coordinate Euclidean RBF GP on a smooth synthetic field on the unit sphere.

    :param out_dir: folder for ``rvgp.png``.
    :param quick: fewer nodes.
    :return: rows for the test alignment (mean cosine) and the predictions' normal component.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gpkit
    from gpkit.baselines import EuclideanVectorGP
    from gpkit.datasets import sphere_vector_field
    from gpkit.models import RVGP

    n, n_train = (400, 80) if quick else (1000, 150)
    ds = sphere_vector_field(n, noise=0.05, seed=0)
    X, y, f = ds.X, ds.y, ds.extras["f"]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    train, test = perm[:n_train], perm[n_train:]
    start = time.perf_counter()
    model = RVGP(X, train, y[train])
    gpkit.fit(model)
    pred = model.predict(test)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    rbf = EuclideanVectorGP(X[train], y[train])
    gpkit.fit(rbf)
    base, _ = rbf.predict(X[test])
    base_seconds = time.perf_counter() - start

    def align(p):
        return torch.nn.functional.cosine_similarity(p, f[test], dim=-1).mean().item()

    def normal(p):
        return ((p * X[test]).sum(-1).abs() / p.norm(dim=-1)).median().item()

    fig = plt.figure(figsize=(12, 4), constrained_layout=True)
    front = test[X[test, 0] > 0]
    for i, (title, V) in enumerate([("truth", f[front]), (f"RVGP (k={model.num_eigenpairs})", model.predict(front)),
                                    ("Euclidean RBF GP", rbf.predict(X[front])[0])]):
        ax = fig.add_subplot(1, 3, i + 1, projection="3d")
        P = X[front]
        ax.quiver(P[:, 0], P[:, 1], P[:, 2], V[:, 0], V[:, 1], V[:, 2], length=0.08, normalize=True, linewidth=0.6)
        ax.scatter(*X[train][X[train, 0] > 0].T, s=4, c="r")
        ax.set_title(title)
        ax.view_init(0, 0)
        ax.set_axis_off()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "rvgp.png", dpi=100)
    plt.close(fig)
    data = f"smooth tangent field on a sphere, {n} nodes, {n_train} noisy training vectors"
    return [
        {"method": "RVGP", "data": data, "metric": "test alignment (mean cosine)", "value": align(pred),
         "baseline": "Euclidean RBF GP", "baseline_value": align(base), "seconds": seconds,
         "baseline_seconds": base_seconds},
        {"method": "RVGP", "data": data, "metric": "median |v.n|/|v| (tangency)", "value": normal(pred),
         "baseline": "Euclidean RBF GP", "baseline_value": normal(base), "seconds": seconds,
         "baseline_seconds": base_seconds},
    ]
