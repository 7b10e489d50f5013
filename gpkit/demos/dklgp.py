"""``gpkit demo`` entry for DKLGP: double-KL sparse inverse Cholesky vs SVGP (M = m) and VNNGP (k = m)."""

from __future__ import annotations

import time
from pathlib import Path

import gpytorch
import torch

__all__ = ["demo"]


def demo(out_dir: Path, quick: bool = False) -> list[dict]:
    """DKLGP vs SVGP (M = m) and VNNGP (k = m) on a 2-D Matérn-1.5 GP draw (hyperparameters at the truth).

    DKLGP is trained by ``gpkit.fit(model)`` with its defaults; the baselines by ``gpkit.fit`` (Adam lr 0.01,
    batch 128) to convergence under the benchmarks' rule, :data:`gpkit.benchmarking.CONVERGENCE`.

    :param out_dir: folder for ``dklgp.png``.
    :param quick: fewer points and epochs.
    :return: rows (latent test NLL and RMSE) with the VNNGP and SVGP baselines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gpkit
    from gpkit.baselines import SVGPBaseline, VNNGPBaseline
    from gpkit.datasets import synthetic_gp
    from gpkit.metrics import latent_metrics, predict_latent
    from gpkit.models import DKLGP
    from gpkit.variational.inducing_points import init_inducing_points

    from gpkit.benchmarking import CONVERGENCE

    n = 1000 if quick else 2000
    opts = {**CONVERGENCE, "lr": 0.01, "batch_size": 128, "seed": 0, "progress": False}
    ds = synthetic_gp(n, 2, "matern15", lengthscale=0.1, noise=0.01, seed=0)
    Xtr, ytr, Xte = ds.train_X, ds.train_y, ds.test_X
    f_test = ds.extras["f"][ds.splits["test"]]

    def frozen_kernel():
        k = ds.extras["covar_module"]
        k = type(k)(type(k.base_kernel)(nu=1.5, ard_num_dims=2)).to(Xtr)
        k.load_state_dict(ds.extras["covar_module"].state_dict())
        k.requires_grad_(False)
        return k

    def gaussian():
        lik = gpytorch.likelihoods.GaussianLikelihood().to(Xtr)
        lik.noise = 0.01
        lik.requires_grad_(False)
        return lik

    rows, preds = {}, {}
    start = time.perf_counter()
    model = DKLGP(
        Xtr,
        ytr.unsqueeze(-1),
        likelihood=gaussian(),
        covar_module=frozen_kernel(),
        rho=2.0,
        reorder_epoch=None,
        outcome_transform=None,  # the kernel is fixed at the truth, in the data's units
    )
    gpkit.fit(model, seed=0, progress=False)
    rows["DKLGP"] = (
        latent_metrics(*predict_latent(model.pointwise(), Xte), f_test),
        time.perf_counter() - start,
    )
    m = round((model.variational_strategy.index >= 0).sum(-1).double().mean().item())

    start = time.perf_counter()
    vnngp = VNNGPBaseline(Xtr, ytr, frozen_kernel(), gaussian(), k=m)
    gpkit.fit(vnngp, **opts)
    rows["VNNGP"] = (latent_metrics(*predict_latent(vnngp, Xte), f_test), time.perf_counter() - start)

    start = time.perf_counter()
    svgp = SVGPBaseline(init_inducing_points(Xtr, m, "kmeans"))
    svgp.covar_module = frozen_kernel()
    gpkit.fit(svgp, train_X=Xtr, train_Y=ytr, likelihood=gaussian(), **opts)
    rows["SVGP"] = (latent_metrics(*predict_latent(svgp, Xte), f_test), time.perf_counter() - start)

    # latent means on a grid
    g = torch.linspace(0, 1, 50, dtype=Xtr.dtype)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    for name, mod in [("DKLGP", model.pointwise()), ("VNNGP", vnngp), ("SVGP", svgp)]:
        preds[name] = predict_latent(mod, grid)[0].reshape(50, 50)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), constrained_layout=True)
    vmin, vmax = float(ds.extras["f"].min()), float(ds.extras["f"].max())
    image = axes[0].scatter(Xtr[:, 0], Xtr[:, 1], c=ytr, s=3, cmap="viridis", vmin=vmin, vmax=vmax)
    axes[0].set_title(f"synthetic-gp: {Xtr.shape[0]} training points")
    for ax, name in zip(axes[1:], ["DKLGP", "VNNGP", "SVGP"]):
        ax.imshow(preds[name].T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", vmin=vmin, vmax=vmax)
        met = rows[name][0]
        ax.set_title(f"{name} (m={m}) latent mean\nlatent RMSE {met['rmse']:.3f}, NLL {met['nll']:.2f}")
    for ax in axes:
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    fig.colorbar(image, ax=axes, label="y (training) / latent mean f", shrink=0.9)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "dklgp.png", dpi=110)
    plt.close(fig)

    n_train, n_test = Xtr.shape[0], Xte.shape[0]
    data = f"synthetic-gp {n_train}+{n_test}"
    result = []
    for base in ("VNNGP", "SVGP"):
        for metric in ("nll", "rmse"):
            result.append(
                {
                    "method": f"DKLGP (m={m})",
                    "data": data,
                    "metric": f"latent {metric.upper()}",
                    "value": rows["DKLGP"][0][metric],
                    "baseline": f"{base} ({'k' if base == 'VNNGP' else 'M'}={m})",
                    "baseline_value": rows[base][0][metric],
                    "seconds": rows["DKLGP"][1],
                    "baseline_seconds": rows[base][1],
                }
            )
    return result
