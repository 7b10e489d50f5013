"""``gpkit demo`` entry for DKLGP: double-KL sparse inverse Cholesky vs SVGP (M = m) and VNNGP (k = m).

Also holds the GPyTorch VNNGP baseline (with the ``batch_loss`` protocol of :func:`gpkit.fit`), the
k-means inducing-point initialisation and the latent-function metrics that the DKLGP benchmark and
tutorial reuse.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import gpytorch
import torch
from torch import Tensor

__all__ = ["VNNGPBaseline", "demo", "kmeans_points", "latent_metrics", "predict"]


class VNNGPBaseline(gpytorch.models.ApproximateGP):
    """GPyTorch's VNNGP (``NNVariationalStrategy`` + mean-field ``q``) with each point conditioning on its
    ``k`` nearest previous points, trainable by :func:`gpkit.fit` through ``batch_loss``.

    The strategy draws its own minibatches (a permutation per epoch, ``training_batch_size`` each), so
    ``batch_loss`` uses the size of the index it is given but VNNGP's own indices, as GPyTorch intends.

    :param train_X: ``n x d`` inputs (all of them are inducing points).
    :param train_y: ``n`` targets.
    :param covar_module: the kernel.
    :param likelihood: a GPyTorch likelihood.
    :param k: neighbours per point.
    :param batch_size: training minibatch size.
    :param jitter: added to the kernel blocks.
    """

    def __init__(
        self,
        train_X: Tensor,
        train_y: Tensor,
        covar_module,
        likelihood,
        k: int,
        batch_size: int = 128,
        jitter: float = 1e-4,
    ):
        n = train_X.shape[0]
        q = gpytorch.variational.MeanFieldVariationalDistribution(n)
        strategy = gpytorch.variational.NNVariationalStrategy(
            self, train_X, q, k=k, training_batch_size=min(batch_size, n), jitter_val=jitter
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar_module
        self.likelihood = likelihood
        self.register_buffer("train_y", train_y)
        self.to(train_X)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    @property
    def num_data(self) -> int:
        return self.train_y.shape[0]

    def batch_loss(self, index: Tensor) -> Tensor:
        output = self(None)
        target = self.train_y[self.variational_strategy.current_training_indices]
        return -gpytorch.mlls.VariationalELBO(self.likelihood, self, num_data=self.num_data)(output, target)


def kmeans_points(X: Tensor, M: int, seed: int = 0) -> Tensor:
    """``M`` k-means centres of ``X`` (scikit-learn), as inducing-point initialisation."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=M, n_init=1, random_state=seed, max_iter=50).fit(X.detach().cpu().numpy())
    return torch.as_tensor(km.cluster_centers_, dtype=X.dtype, device=X.device)


@torch.no_grad()
def predict(model, X: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Latent predictive means and variances of ``model`` at ``X`` (independent marginals, chunked)."""
    model.eval()
    outs = [model(xb) for xb in X.split(chunk)]
    return torch.cat([o.mean for o in outs]), torch.cat([o.variance for o in outs])


def latent_metrics(mean: Tensor, var: Tensor, f: Tensor) -> dict:
    """RMSE and mean full Gaussian NLL (incl. 0.5 log 2π) of the true latent values ``f``."""
    var = var.clamp_min(1e-10)
    nll = 0.5 * torch.log(2 * math.pi * var) + 0.5 * (f - mean).pow(2) / var
    return {"rmse": (mean - f).pow(2).mean().sqrt().item(), "nll": nll.mean().item()}


def demo(out_dir: Path, quick: bool = False) -> list[dict]:
    """DKLGP vs SVGP (M = m) and VNNGP (k = m) on a 2-D Matérn-1.5 GP draw (hyperparameters at the truth;
    every model trained by ``gpkit.fit`` with the same epochs, Adam lr 0.02 with cosine decay, batch 128).

    :param out_dir: folder for ``dklgp.png``.
    :param quick: fewer points and epochs.
    :return: rows (latent test NLL and RMSE) with the VNNGP and SVGP baselines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gpkit
    from gpkit.datasets import synthetic_gp
    from gpkit.demos.swsgp import SVGPBaseline
    from gpkit.models import DKLGP

    n, epochs = (1000, 8) if quick else (2000, 25)
    opts = {
        "epochs": epochs,
        "lr": 0.02,
        "schedule": "cosine",
        "batch_size": 128,
        "seed": 0,
        "progress": False,
    }
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
    )
    gpkit.fit(model, **opts)
    rows["DKLGP"] = (latent_metrics(*predict(model, Xte), f_test), time.perf_counter() - start)
    m = round((model.variational_strategy.index >= 0).sum(-1).double().mean().item())

    start = time.perf_counter()
    vnngp = VNNGPBaseline(Xtr, ytr, frozen_kernel(), gaussian(), k=m)
    gpkit.fit(vnngp, **opts)
    rows["VNNGP"] = (latent_metrics(*predict(vnngp, Xte), f_test), time.perf_counter() - start)

    start = time.perf_counter()
    svgp = SVGPBaseline(kmeans_points(Xtr, m))
    svgp.covar_module = frozen_kernel()
    gpkit.fit(svgp, train_X=Xtr, train_Y=ytr, likelihood=gaussian(), **opts)
    rows["SVGP"] = (latent_metrics(*predict(svgp, Xte), f_test), time.perf_counter() - start)

    # latent means on a grid
    g = torch.linspace(0, 1, 50, dtype=Xtr.dtype)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    for name, mod in [("DKLGP", model), ("VNNGP", vnngp), ("SVGP", svgp)]:
        preds[name] = predict(mod, grid)[0].reshape(50, 50)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), constrained_layout=True)
    vmin, vmax = float(ds.extras["f"].min()), float(ds.extras["f"].max())
    axes[0].scatter(Xtr[:, 0], Xtr[:, 1], c=ytr, s=3, cmap="viridis", vmin=vmin, vmax=vmax)
    axes[0].set_title(f"training data (n={Xtr.shape[0]})")
    for ax, name in zip(axes[1:], ["DKLGP", "VNNGP", "SVGP"]):
        ax.imshow(preds[name].T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", vmin=vmin, vmax=vmax)
        met = rows[name][0]
        ax.set_title(f"{name} (m={m}): RMSE {met['rmse']:.3f}, NLL {met['nll']:.2f}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "dklgp.png", dpi=110)
    plt.close(fig)

    data = f"synthetic-gp (n={n}, d=2, Matérn-1.5, lengthscale 0.1, true hyperparameters)"
    result = []
    for metric in ("nll", "rmse"):
        for base in ("VNNGP", "SVGP"):
            result.append(
                {
                    "method": "DKLGP",
                    "data": data,
                    "metric": f"latent test {metric.upper()}",
                    "value": rows["DKLGP"][0][metric],
                    "baseline": f"{base} ({'k' if base == 'VNNGP' else 'M'}={m})",
                    "baseline_value": rows[base][0][metric],
                    "seconds": rows["DKLGP"][1],
                }
            )
    return result
