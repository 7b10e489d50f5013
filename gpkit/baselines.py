"""The GPyTorch baselines that gpkit's benchmarks, demos and tutorials compare against.

Both train with :func:`gpkit.fit`: ``SVGPBaseline`` through the ``train_X``/``train_Y``/``likelihood`` options,
``VNNGPBaseline`` through its ``batch_loss``.
"""

from __future__ import annotations

import gpytorch
from torch import Tensor

import gpkit

__all__ = ["LGCPBaseline", "SVGPBaseline", "VNNGPBaseline"]


class SVGPBaseline(gpytorch.models.ApproximateGP):
    """GPyTorch's SVGP: ``CholeskyVariationalDistribution`` with a whitened (default) or unwhitened strategy
    and the SWSGP default prior (constant mean, Matérn-5/2 ARD).

    :param inducing_points: initial inducing locations, ``M x d`` (learned).
    :param whitened: ``VariationalStrategy`` if True, else ``UnwhitenedVariationalStrategy``.
    :param covar_module: the kernel (default ``ScaleKernel(MaternKernel(2.5, ard_num_dims=d))``).
    """

    def __init__(self, inducing_points: Tensor, whitened: bool = True, covar_module=None) -> None:
        q = gpytorch.variational.CholeskyVariationalDistribution(inducing_points.size(0))
        cls = gpytorch.variational.VariationalStrategy if whitened else gpytorch.variational.UnwhitenedVariationalStrategy
        super().__init__(cls(self, inducing_points, q, learn_inducing_locations=True))
        self.mean_module = gpytorch.means.ConstantMean()
        d = inducing_points.size(-1)
        self.covar_module = covar_module or gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d)
        )
        self.to(inducing_points)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


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


class LGCPBaseline:
    """GPyTorch log-Gaussian Cox process: an :class:`SVGPBaseline` (RBF ARD kernel) with the log-link Poisson
    likelihood on the binned counts of a :class:`~gpkit.cox.GaussianCoxProcess`'s observed grid cells, inducing
    points a seeded random subset of the cells. Trained by :func:`gpkit.fit` (Adam on the ELBO).

    :param model: the Cox model whose grid, counts and coordinates are used.
    :param num_inducing: inducing points (e.g. the model's number of landmarks).
    """

    def __init__(self, model, num_inducing: int) -> None:
        import math

        import torch

        from gpkit.likelihoods import PoissonLikelihood

        self.cox = model
        self.cells, self.counts = model.cells[model.observed], model.counts[model.observed]
        gen = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(self.cells), generator=gen)[:num_inducing].to(self.cells.device)
        d = self.cells.shape[-1]
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=d))
        kernel.base_kernel.lengthscale = 0.1
        self.svgp = SVGPBaseline(self.cells[idx].clone(), covar_module=kernel)
        self.svgp.mean_module.constant.data.fill_(math.log(float(self.counts.mean().clamp_min(1e-3))))
        self.likelihood = PoissonLikelihood()

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
        import math

        import torch

        with torch.no_grad():
            f = self.svgp(self.cox.to_unit(X.to(self.cells)))
        mean, std = f.mean, f.variance.sqrt()
        z = math.sqrt(2) * float(torch.erfinv(torch.tensor(level)))
        unit = self.cox.cell_volume * self.cox.volume  # counts per cell -> events per unit volume
        return (mean + std**2 / 2).exp() / unit, (mean - z * std).exp() / unit, (mean + z * std).exp() / unit
