"""GPyTorch multi-class baselines of ETGP: C independent SVGPs or an LMC (softmax), and Dirichlet-based GP classification."""

from __future__ import annotations

import gpytorch
import torch
from torch import Tensor

__all__ = ["DirichletSVGPBaseline", "MulticlassSVGPBaseline"]


def _batch_svgp_parts(model, inducing_points: Tensor, num_latents: int):
    """Variational distribution, strategy, mean and RBF-ARD kernel of ``num_latents`` independent SVGPs."""
    M, d = inducing_points.shape
    batch = torch.Size([num_latents])
    q = gpytorch.variational.CholeskyVariationalDistribution(M, batch_shape=batch)
    Z = inducing_points.unsqueeze(0).expand(num_latents, M, d).clone()
    strategy = gpytorch.variational.VariationalStrategy(model, Z, q, learn_inducing_locations=True)
    mean = gpytorch.means.ConstantMean(batch_shape=batch)
    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=d, batch_shape=batch), batch_shape=batch)
    kernel.base_kernel.lengthscale = d**0.5
    return strategy, mean, kernel


class MulticlassSVGPBaseline(gpytorch.models.ApproximateGP):
    """GPyTorch's multi-class SVGP: C independent whitened SVGPs (``IndependentMultitaskVariationalStrategy``)
    or an LMC of ``num_latents`` (``LMCVariationalStrategy``), each with ``M`` inducing points and an RBF-ARD
    kernel (lengthscales sqrt(d) at the start); train with ``gpkit.fit(model, train_X=, train_Y=,
    likelihood=model.likelihood)``, the likelihood being ``SoftmaxLikelihood(mixing_weights=False)``.

    :param inducing_points: initial locations ``M x d`` shared by every latent GP at the start.
    :param num_classes: C.
    :param num_latents: ``None`` for C independent GPs, else the LMC's number of latent GPs.
    """

    def __init__(self, inducing_points: Tensor, num_classes: int, num_latents: int | None = None) -> None:
        L = num_classes if num_latents is None else num_latents
        base, mean, kernel = _batch_svgp_parts(self, inducing_points, L)
        if num_latents is None:
            strategy = gpytorch.variational.IndependentMultitaskVariationalStrategy(base, num_tasks=num_classes)
        else:
            strategy = gpytorch.variational.LMCVariationalStrategy(base, num_tasks=num_classes, num_latents=L, latent_dim=-1)
        super().__init__(strategy)
        self.mean_module, self.covar_module = mean, kernel
        self.likelihood = gpytorch.likelihoods.SoftmaxLikelihood(num_classes=num_classes, mixing_weights=False)
        self.to(inducing_points)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    @torch.no_grad()
    def predict_proba(self, X: Tensor, num_samples: int = 256, chunk: int = 1024) -> Tensor:
        """Class probabilities ``n x C``: Monte Carlo over the C latent GPs' marginals."""
        self.eval()
        out = []
        for xb in X.split(chunk):
            f = self(xb)  # MultitaskMultivariateNormal, n x C
            samples = f.mean + f.variance.clamp_min(0).sqrt() * torch.randn(num_samples, *f.mean.shape).to(f.mean)
            out.append(torch.softmax(samples, -1).mean(0))
        return torch.cat(out)


class DirichletSVGPBaseline(gpytorch.models.ApproximateGP):
    """Dirichlet-based GP classification (Milios et al., 2018) with GPyTorch's ``DirichletClassificationLikelihood``:
    C independent whitened SVGP regressions on the transformed labels with their fixed per-label noise (a
    sparse variational form, so it runs at the same n as the other models); trained by :func:`gpkit.fit`
    through ``batch_loss``.

    :param inducing_points: ``M x d``.
    :param train_X: ``n x d`` inputs.
    :param train_y: ``n`` labels in ``0..C-1``.
    :param num_classes: C.
    """

    def __init__(self, inducing_points: Tensor, train_X: Tensor, train_y: Tensor, num_classes: int) -> None:
        base, mean, kernel = _batch_svgp_parts(self, inducing_points, num_classes)
        super().__init__(base)
        self.mean_module, self.covar_module = mean, kernel
        self.likelihood = gpytorch.likelihoods.DirichletClassificationLikelihood(
            train_y.long(), learn_additional_noise=True, dtype=train_X.dtype
        )
        self.to(inducing_points)
        self.register_buffer("train_X", train_X)
        self.register_buffer("targets", self.likelihood.transformed_targets.to(train_X))  # C x n
        self.register_buffer("label_noise", self.likelihood.noise.detach().to(train_X))  # C x n

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    @property
    def num_data(self) -> int:
        return self.train_X.size(0)

    def batch_loss(self, index: Tensor) -> Tensor:
        mll = gpytorch.mlls.VariationalELBO(self.likelihood, self, num_data=self.num_data)
        return -mll(self(self.train_X[index]), self.targets[:, index], noise=self.label_noise[:, index]).sum()

    @torch.no_grad()
    def predict_proba(self, X: Tensor, num_samples: int = 256, chunk: int = 1024) -> Tensor:
        """Class probabilities ``n x C``: Monte Carlo of softmax over the C latent GPs' marginals."""
        self.eval()
        out = []
        for xb in X.split(chunk):
            f = self(xb)  # batch C x n
            mean, std = f.mean.T, f.variance.clamp_min(0).sqrt().T
            samples = mean + std * torch.randn(num_samples, *mean.shape).to(mean)
            out.append(torch.softmax(samples, -1).mean(0))
        return torch.cat(out)
