"""The GPyTorch baselines that gpkit's benchmarks, demos and tutorials compare against.

All train with :func:`gpkit.fit`: ``SVGPBaseline`` through the ``train_X``/``train_Y``/``likelihood`` options,
``VNNGPBaseline`` through its ``batch_loss``, the vector-field baselines of RVGP (``EuclideanVectorGP``,
``ScalarLaplacianVectorGP``) through their full-batch ``loss``.
"""

from __future__ import annotations

import math

import gpytorch
import torch
from torch import Tensor

import gpkit

__all__ = [
    "DirichletSVGPBaseline",
    "EuclideanVectorGP",
    "LGCPBaseline",
    "MulticlassSVGPBaseline",
    "SVGPBaseline",
    "ScalarLaplacianVectorGP",
    "VNNGPBaseline",
]


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
        import math

        import torch

        with torch.no_grad():
            f = self.svgp(self.cox.to_unit(X.to(self.cells)))
        mean, std = f.mean, f.variance.sqrt()
        z = math.sqrt(2) * float(torch.erfinv(torch.tensor(level)))
        unit = self.cox.cell_volume * self.cox.volume  # counts per cell -> events per unit volume
        return (mean + std**2 / 2).exp() / unit, (mean - z * std).exp() / unit, (mean + z * std).exp() / unit


# ------------------------------------------------------------------------------------------ vector fields
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
