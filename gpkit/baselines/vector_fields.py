"""RVGP's baselines: a Euclidean RBF GP per coordinate and scalar graph-Laplacian eigenfeatures with one shared kernel."""

from __future__ import annotations

import math

import gpytorch
import torch
from torch import Tensor

__all__ = ["EuclideanVectorGP", "ScalarLaplacianVectorGP"]


# Full-batch Adam with the same stopping rule for both vector-field baselines and RVGP in the benchmark.
_VECTOR_FIT = {"optimizer": "adam", "lr": 0.1, "max_iter": 200, "tol": 1e-6, "patience": 20}


class EuclideanVectorGP(gpytorch.models.ExactGP):
    """Independent exact GPs, one per ambient coordinate of a vector field, each with its own learned
    ``ScaleKernel(RBFKernel)`` and noise (a GPyTorch batch ExactGP). Fitted by :func:`gpkit.fit` through
    ``loss()`` (exact marginal likelihood, the RVGP protocol: Adam, lr 0.1, at most 200 steps).

    :param train_X: ``n x D`` points.
    :param train_Y: ``n x D`` vectors.
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor) -> None:
        D = train_Y.shape[-1]
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            batch_shape=torch.Size([D]), noise_constraint=gpytorch.constraints.GreaterThan(1e-6)
        )
        super().__init__(train_X.expand(D, *train_X.shape), train_Y.T.contiguous(), likelihood)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.RBFKernel(batch_shape=torch.Size([D])), batch_shape=torch.Size([D])
        )
        scale = train_Y.var(0)
        scale = scale.clamp_min(1e-3 * float(scale.max()))
        self.covar_module.outputscale = scale
        self.likelihood.noise = 0.05 * scale.unsqueeze(-1)
        self.covar_module.base_kernel.lengthscale = 0.2 * float((train_X.max(0).values - train_X.min(0).values).norm())
        self.fit_defaults = dict(_VECTOR_FIT)
        self.to(train_X)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(torch.zeros(x.shape[:-1]).to(x), self.covar_module(x))

    def loss(self) -> Tensor:
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self)
        return -mll(self(*self.train_inputs), self.train_targets).mean()

    @torch.no_grad()
    def predict(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Predictive mean ``q x D`` and variance of the noisy vectors ``q x D``."""
        self.eval()
        out = self.likelihood(self(X.expand(self.train_targets.shape[0], *X.shape)))
        return out.mean.T, out.variance.T


class ScalarLaplacianVectorGP(torch.nn.Module):
    """Each ambient coordinate a GP on the graph with one shared kernel from the scalar graph Laplacian:
    ``k(i, j) = sum_l s_l phi_l(i) phi_l(j)`` with RVGP's Matérn spectral density and normalisation
    (``s = outputscale * S / sum S``), exact by Woodbury in weight space, one noise. Fitted by
    :func:`gpkit.fit` through ``loss()``. Predictions are not tangent.

    :param eigenvalues: ``k`` scalar-Laplacian eigenvalues.
    :param eigenvectors: ``N x k`` eigenvectors scaled to mean square 1.
    :param train_index: ``n`` training nodes.
    :param train_Y: ``n x D`` vectors.
    """

    def __init__(self, eigenvalues: Tensor, eigenvectors: Tensor, train_index: Tensor, train_Y: Tensor, nu: float = 1.5):
        super().__init__()
        from gpkit.kernels.connection_laplacian_kernel import spectral_density

        self._density = spectral_density
        self.register_buffer("eigenvalues", eigenvalues.clamp_min(0))
        self.register_buffer("eigenvectors", eigenvectors)
        Phi = eigenvectors[train_index]  # shape: (n, k)
        self.register_buffer("_gram", Phi.T @ Phi)
        self.register_buffer("_Phi_Y", Phi.T @ train_Y)  # shape: (k, D)
        self._yy, self._shape = float(train_Y.square().sum()), tuple(train_Y.shape)
        k = eigenvalues.numel()
        lam_ref = float(eigenvalues[k // 4].clamp_min(1e-8))
        to = {"dtype": train_Y.dtype, "device": train_Y.device}
        scale = float(train_Y.var(0).mean())
        self.raw_kappa = torch.nn.Parameter(torch.tensor(math.log(math.sqrt(2 * nu / lam_ref)), **to))
        self.raw_nu = torch.nn.Parameter(torch.tensor(math.log(nu), **to))
        self.raw_outputscale = torch.nn.Parameter(torch.tensor(math.log(scale), **to))
        self.raw_noise = torch.nn.Parameter(torch.tensor(math.log(0.05 * scale), **to))
        self.fit_defaults = dict(_VECTOR_FIT)

    @property
    def noise(self) -> Tensor:
        return self.raw_noise.exp() + 1e-6

    def _weights(self):
        kappa, nu = self.raw_kappa.exp().reshape(1, 1), self.raw_nu.exp().clamp(0.1, 10).reshape(1)
        s = self.raw_outputscale.exp() * torch.softmax(self._density(self.eigenvalues, kappa, nu).squeeze(0), -1)
        r, noise = s.sqrt(), self.noise
        C = torch.eye(s.numel()).to(s) + r[:, None] * self._gram * r / noise
        L = torch.linalg.cholesky(C)
        V = torch.linalg.solve_triangular(L, r[:, None] * self._Phi_Y, upper=False)  # shape: (k, D)
        return r, noise, L, V

    def loss(self) -> Tensor:
        _, noise, L, V = self._weights()
        n, D = self._shape
        quad = (self._yy - V.square().sum() / noise) / noise
        logdet = D * (n * torch.log(noise) + 2 * torch.log(L.diagonal()).sum())
        return 0.5 * (quad + logdet + n * D * math.log(2 * math.pi)) / (n * D)

    @torch.no_grad()
    def predict(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Predictive mean ``q x D`` and variance of the noisy vectors ``q x D`` at nodes ``index``."""
        r, noise, L, V = self._weights()
        A = self.eigenvectors[index] * r  # shape: (q, k)
        B = torch.linalg.solve_triangular(L, A.T, upper=False)  # shape: (k, q)
        mean = B.T @ V / noise
        var = B.square().sum(0) + noise
        return mean, var.unsqueeze(-1).expand_as(mean)
