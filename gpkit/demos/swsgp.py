"""``gpkit demo`` entry for SWSGP: many inducing points at the per-step cost of a tiny SVGP."""

from __future__ import annotations

import time
from pathlib import Path

import gpytorch
import torch

__all__ = ["demo"]


def demo(out_dir: Path, quick: bool = False) -> list[dict]:
    """SWSGP (M = 500, H = 16) vs SVGP (M = 16) on a 2-D synthetic GP draw with short lengthscales.

    SWSGP is trained by ``gpkit.fit`` for a fixed number of epochs (8 quick, 16 full; its defaults take 1000+
    steps, too slow for a demo); SVGP by ``gpkit.fit`` (Adam lr 0.01, full batch) to convergence under the
    benchmarks' rule, :data:`gpkit.benchmarking.CONVERGENCE`.

    :param out_dir: folder for ``swsgp.png``.
    :param quick: fewer points and epochs.
    :return: one row per metric (test NLL and RMSE) with the SVGP baseline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gpkit
    from gpkit.datasets import load, standardize
    from gpkit.baselines import SVGPBaseline
    from gpkit.metrics import gaussian_metrics
    from gpkit.models import SWSGP

    from gpkit.benchmarking import CONVERGENCE

    n, M, H, epochs = (1500, 300, 16, 8) if quick else (2500, 500, 16, 16)
    ds = load("synthetic-gp", n=n, d=2, kernel="matern25", lengthscale=0.12, noise=0.01, seed=0)
    Xtr, ytr, Xte, yte, (_, y_std) = standardize(ds.train_X, ds.train_y, ds.test_X, ds.test_y)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = SWSGP(Xtr, ytr.unsqueeze(-1), num_inducing=M, num_neighbors=H, inducing_points="kmeans")
    gpkit.fit(model, epochs=epochs, lr=0.01, batch_size=100, seed=0, progress=False)
    sws = gaussian_metrics(model, model.likelihood, Xte, yte, float(y_std))
    sws_seconds = time.perf_counter() - start

    start = time.perf_counter()
    svgp = SVGPBaseline(Xtr[torch.randperm(Xtr.size(0))[:H]].clone())
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(Xtr)
    # full batch: the loss is deterministic, so the tolerance test stops at convergence rather than riding noise
    gpkit.fit(svgp, train_X=Xtr, train_Y=ytr, likelihood=likelihood, lr=0.01, batch_size=Xtr.size(0), seed=0,
              progress=False, **CONVERGENCE)
    base = gaussian_metrics(svgp, likelihood, Xte, yte, float(y_std))
    svgp_seconds = time.perf_counter() - start

    # predictions on a grid (standardised input space)
    g = torch.linspace(0, 1, 60, dtype=Xtr.dtype)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    grid_std = (grid - ds.train_X.mean(0)) / ds.train_X.std(0)
    with torch.no_grad():
        preds = [model.posterior(grid_std).mean.squeeze(-1), svgp(grid_std).mean]
    preds = [p * y_std + ds.train_y.mean() for p in preds]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), constrained_layout=True)
    vmin, vmax = float(ds.train_y.min()), float(ds.train_y.max())
    image = axes[0].scatter(
        ds.train_X[:, 0], ds.train_X[:, 1], c=ds.train_y, s=4, cmap="viridis", vmin=vmin, vmax=vmax
    )
    axes[0].set_title(f"synthetic-gp: {Xtr.size(0)} training points")
    titles = [
        f"SWSGP (M={M}, H={H}) mean, white: inducing points\ntest NLL {sws['nll']:.2f}",
        f"SVGP (M={H}) mean\ntest NLL {base['nll']:.2f}",
    ]
    for ax, pred, title in zip(axes[1:], preds, titles):
        ax.imshow(pred.reshape(60, 60).T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(title)
    z = model.variational_strategy.inducing_points.detach() * ds.train_X.std(0) + ds.train_X.mean(0)
    axes[1].scatter(z[:, 0], z[:, 1], s=1, c="w", alpha=0.5)
    axes[1].set_xlim(0, 1), axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    fig.colorbar(image, ax=axes, label="y (training) / predictive mean", shrink=0.9)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "swsgp.png", dpi=110)
    plt.close(fig)
    data = f"synthetic-gp {Xtr.size(0)}+{Xte.size(0)}"
    common = {"method": f"SWSGP (M={M}, H={H})", "data": data, "baseline": f"SVGP (M={H})"}
    times = {"seconds": sws_seconds, "baseline_seconds": svgp_seconds}
    return [
        {**common, "metric": "test NLL", "value": sws["nll"], "baseline_value": base["nll"], **times},
        {**common, "metric": "test RMSE", "value": sws["rmse"], "baseline_value": base["rmse"], **times},
    ]
