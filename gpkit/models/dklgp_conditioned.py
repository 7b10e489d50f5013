"""A DKLGP conditioned on new observations ordered after all training points (BoTorch fantasies)."""

from __future__ import annotations

import torch
from botorch.models.model import Model
from botorch.posteriors import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from torch import Tensor

__all__ = ["DKLConditionedModel"]


class DKLConditionedModel(Model):
    r"""``base`` conditioned on observations ``Y = f(X) + eps`` of points ordered after its training points.

    In DKLGP's ordering, points after the training set are conditioned jointly on the union of their
    training sets and on each other; so the conditioned posterior at ``x`` is the base model's joint
    posterior over ``(X, x)`` conditioned on ``Y`` in closed form:
    :math:`m_x + S_{xX}(S_{XX} + N)^{-1}(Y - m_X)` and :math:`S_{xx} - S_{xX}(S_{XX} + N)^{-1}S_{Xx}`.
    Batched fantasies (``Y`` with extra leading dimensions) broadcast against the query batch.

    :param base: the fitted DKLGP (shared, not copied).
    :param X: ``batch x k x d`` new inputs.
    :param Y: ``batch' x k x 1`` new targets.
    :param noise: ``batch' x k x 1`` noise variances (default: the base likelihood's noise).
    """

    _num_outputs = 1

    def __init__(self, base, X: Tensor, Y: Tensor, noise: Tensor | None = None):
        super().__init__()
        likelihood = base.likelihood
        if not isinstance(likelihood, GaussianLikelihood) or isinstance(likelihood, FixedNoiseGaussianLikelihood):
            raise NotImplementedError(
                f"condition_on_observations needs a GaussianLikelihood, the model has {type(likelihood).__name__}"
            )
        if X.dim() < 2 or X.shape[-1] != base.train_X.shape[-1]:
            raise ValueError(f"X must be batch x k x {base.train_X.shape[-1]}, got shape {tuple(X.shape)}")
        if Y.dim() < 2 or Y.shape[-1] != 1 or Y.shape[-2] != X.shape[-2]:
            raise ValueError(f"Y must be batch x {X.shape[-2]} x 1, got shape {tuple(Y.shape)}")
        if noise is not None:
            noise = noise.to(Y).expand_as(Y).squeeze(-1)
        object.__setattr__(self, "base", base)  # not a submodule: its parameters stay the base model's
        self.X_new, self.Y_new, self.noise = X.to(base.train_X), Y.squeeze(-1).to(base.train_X), noise

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def likelihood(self):
        return self.base.likelihood

    @property
    def batch_shape(self) -> torch.Size:
        return torch.broadcast_shapes(self.X_new.shape[:-2], self.Y_new.shape[:-1])

    def _noise(self) -> Tensor:
        if self.noise is not None:
            return self.noise
        return self.base.likelihood.noise.reshape(-1)[0].expand(self.Y_new.shape)

    def posterior(self, X: Tensor, observation_noise: bool | Tensor = False, posterior_transform=None, **kwargs):
        """The conditioned joint posterior of the q-batches of ``X`` (``batch x q x d``)."""
        base = self.base
        base.eval()
        k, q = self.X_new.shape[-2], X.shape[-2]
        batch = torch.broadcast_shapes(self.batch_shape, X.shape[:-2])
        Xn = self.X_new.expand(*batch, k, X.shape[-1])
        Xq = X.expand(*batch, q, X.shape[-1])
        joint = base.variational_strategy(torch.cat([Xn, Xq], dim=-2))  # ordered after the training points
        mean, cov = joint.mean, joint.covariance_matrix  # shape: (*batch, k + q), (*batch, k + q, k + q)
        S_nn = cov[..., :k, :k] + torch.diag_embed(self._noise().expand(*batch, k))
        L = torch.linalg.cholesky(S_nn)
        A = torch.linalg.solve_triangular(L, cov[..., :k, k:], upper=False)  # shape: (*batch, k, q)
        r = torch.linalg.solve_triangular(L, (self.Y_new.expand(*batch, k) - mean[..., :k]).unsqueeze(-1), upper=False)
        post_mean = mean[..., k:] + (A.mT @ r).squeeze(-1)
        post_cov = cov[..., k:, k:] - A.mT @ A
        if observation_noise is not False:
            noise = (
                observation_noise.squeeze(-1)
                if isinstance(observation_noise, Tensor)
                else base.likelihood.noise.reshape(-1)[0].expand(post_mean.shape)
            )
            post_cov = post_cov + torch.diag_embed(noise.expand(post_mean.shape))
        posterior = GPyTorchPosterior(MultivariateNormal(post_mean, post_cov))
        if posterior_transform is not None:
            return posterior_transform(posterior)
        return posterior

    def condition_on_observations(self, X: Tensor, Y: Tensor, noise: Tensor | None = None, **kwargs):
        """Condition further: the new points are ordered after the ones already conditioned on."""
        if kwargs:
            raise ValueError(f"condition_on_observations: unsupported arguments {sorted(kwargs)}")
        Y = Y.squeeze(-1)
        batch = torch.broadcast_shapes(self.Y_new.shape[:-1], self.X_new.shape[:-2], Y.shape[:-1], X.shape[:-2])
        d, k1, k2 = X.shape[-1], self.X_new.shape[-2], X.shape[-2]
        X_all = torch.cat([self.X_new.expand(*batch, k1, d), X.expand(*batch, k2, d)], dim=-2)
        Y_all = torch.cat([self.Y_new.expand(*batch, k1), Y.expand(*batch, k2)], dim=-1)
        old = self._noise().expand(*batch, k1)
        new = self.base.likelihood.noise.reshape(-1)[0].expand(*batch, k2) if noise is None else noise.squeeze(-1)
        noise_all = torch.cat([old, new.to(old).expand(*batch, k2)], dim=-1)
        return DKLConditionedModel(self.base, X_all, Y_all.unsqueeze(-1), noise_all.unsqueeze(-1))
