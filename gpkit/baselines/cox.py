"""GPyTorch's log-Gaussian Cox process (SVGP on binned counts): the baseline of the Gaussian Cox process."""

from __future__ import annotations

import math

import gpytorch
import torch
from torch import Tensor

import gpkit
from gpkit.baselines.regression import SVGPBaseline

__all__ = ["LGCPBaseline"]


class LGCPBaseline:
    """GPyTorch log-Gaussian Cox process: an :class:`SVGPBaseline` (RBF ARD kernel) with the log-link Poisson
    likelihood on the binned counts of a :class:`~gpkit.cox.GaussianCoxProcess`'s observed grid cells, inducing
    points a seeded random subset of the cells. Trained by :func:`gpkit.fit` (Adam on the ELBO).

    :param model: the Cox model whose grid, counts and coordinates are used.
    :param num_inducing: inducing points (e.g. the model's number of landmarks).
    """

    def __init__(self, model, num_inducing: int) -> None:


        from gpkit.likelihoods import ExpLinkPoissonLikelihood

        self.cox = model
        self.cells, self.counts = model.cells[model.observed], model.counts[model.observed]
        gen = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(self.cells), generator=gen)[:num_inducing].to(self.cells.device)
        d = self.cells.shape[-1]
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=d))
        kernel.base_kernel.lengthscale = 0.1
        self.svgp = SVGPBaseline(self.cells[idx].clone(), covar_module=kernel)
        self.svgp.mean_module.constant.data.fill_(math.log(float(self.counts.mean().clamp_min(1e-3))))
        self.likelihood = ExpLinkPoissonLikelihood()

    def fit(self, max_seconds: float | None = None, **options):
        """Adam lr 0.05, full batch, until the ELBO improves by less than 1e-6 (relative) over 200 epochs (at
        most 3000), or after ``max_seconds``; seeded (the variational mean starts with random noise)."""
        callback = None if max_seconds is None else (lambda state: state.elapsed >= max_seconds)
        opts = {"epochs": 3000, "lr": 0.05, "batch_size": 4096, "tol": 1e-6, "patience": 200, "progress": False,
                "seed": 0, **options}
        gpkit.fit(self.svgp, train_X=self.cells, train_Y=self.counts, likelihood=self.likelihood, callback=callback, **opts)
        return self

    def intensity(self, X: Tensor, level: float = 0.95) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior mean and ``level`` band of the intensity (the Cox model's units) at ``X`` (``n x d``)."""


        with torch.no_grad():
            f = self.svgp(self.cox.to_unit(X.to(self.cells)))
        mean, std = f.mean, f.variance.sqrt()
        z = math.sqrt(2) * float(torch.erfinv(torch.tensor(level)))
        unit = self.cox.cell_volume * self.cox.volume  # counts per cell -> events per unit volume
        return (mean + std**2 / 2).exp() / unit, (mean - z * std).exp() / unit, (mean + z * std).exp() / unit
