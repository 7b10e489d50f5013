r"""One BoTorch base for gpkit's variational models (SWSGP, DKLGP, DualMemoryGP, ETGP ...).

:class:`VariationalGPModel` subclasses ``gpytorch.models.ApproximateGP`` and
``botorch.models.gpytorch.GPyTorchModel`` (as BoTorch's ``ApproximateGPyTorchModel`` pairs them) and does,
once for every model, what a BoTorch user expects: data validation, input/outcome transforms, the
posterior, conditioning and fantasies.

API (stable; subclasses build on it)
------------------------------------
Construction, in a subclass's ``__init__``::

    data = self.prepare_training_data(train_X, train_Y, likelihood=likelihood, covar_module=covar_module,
                                      input_transform=input_transform, outcome_transform=outcome_transform)
    # data.X: n x d inputs in model space (input-transformed, detached, promoted dtype)
    # data.Y: n x 1 targets in model space (outcome-transformed); data.likelihood: resolved likelihood
    strategy = ...  # built from data.X
    super().__init__(strategy, data)  # registers likelihood, transforms and the data
    self.mean_module, self.covar_module = ...

- ``prepare_training_data`` (classmethod) checks shapes (``train_X`` ``n x d``, ``train_Y`` ``n x 1`` or
  ``n``), NaN/inf, floating dtype (integer/bool ``train_Y`` is cast), promotes mixed float dtypes to the
  wider one, detaches ``requires_grad`` inputs, and raises ``TypeError`` naming ``likelihood`` /
  ``covar_module`` when they are not GPyTorch modules (e.g. strings).
- ``likelihood=None`` gives :func:`default_likelihood`: a ``GaussianLikelihood`` with SingleTaskGP's
  ``LogNormal(-4, 1)`` noise prior, starting at its mode. :func:`default_bo_kernel` is SingleTaskGP's kernel
  (for a model's small-data defaults).
- Scale: ``outcome_transform`` defaults to ``Standardize(m=1, min_stdv=1e-30)`` for Gaussian likelihoods (as
  ``SingleTaskGP``), so targets of any scale (1e-8, 1e6) predict well; pass ``None`` to switch it off.
  Non-Gaussian likelihoods default to none. Inputs are not rescaled; if a column spans less than 1e-3 or
  more than 1e3 an ``InputDataWarning`` suggests ``input_transform=Normalize(d)`` (off under
  ``botorch.settings.validate_input_scaling(False)``). Input transforms with learnable parameters are
  rejected (the stored training inputs are transformed once).
- ``train_inputs`` (``(n x d,)``), ``train_targets`` (``n``), ``num_data``: model-space training data.
- ``batch_loss(index)``: per-datum negative ``VariationalELBO`` on ``index`` (the :func:`gpkit.fit`
  hook); subclasses may override it (e.g. cached neighbour sets). ``fit_defaults`` may be set too.
- ``posterior(X, observation_noise=False, posterior_transform=None)``: ``X`` is ``batch x q x d`` (cast to
  the model's dtype/device); the latent joint over each q-batch from the hook ``_latent_posterior(X)``
  (default ``self(X)`` in eval mode; model-space ``X``),
  ``observation_noise`` (``True`` or a ``batch x q (x 1)`` tensor in the outcome-transformed space; Gaussian
  likelihoods only), then the outcome transform is undone. ``num_outputs == 1``.
- ``condition_on_observations(X, Y, noise=None)`` (raw ``X`` and ``Y``, as BoTorch's) transforms them and
  calls the hook ``_condition(X, Y, noise)`` (model space; ``noise`` ``None`` = the likelihood's). Its
  default returns a :class:`ConditionedVariationalGP`: the model's variational posterior process conditioned
  exactly on the new Gaussian observations (for SVGP this is what online variational conditioning gives).
  ``fantasize`` is BoTorch's (posterior, sample, condition), so qKnowledgeGradient and qMaxValueEntropy work.
- ``subset_output([0])`` returns the model; any other index is a ``ValueError``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import gpytorch
import torch
from botorch import settings as botorch_settings
from botorch.exceptions.warnings import InputDataWarning
from botorch.models.gpytorch import GPyTorchModel
from botorch.models.model import FantasizeMixin, Model
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from botorch.models.utils.assorted import gpt_posterior_settings
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.utils.types import DEFAULT
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.likelihoods import GaussianLikelihood, Likelihood
from gpytorch.likelihoods.gaussian_likelihood import _GaussianLikelihoodBase
from gpytorch.mlls import VariationalELBO
from gpytorch.models import ApproximateGP
from gpytorch.priors import LogNormalPrior
from linear_operator.operators import DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from gpkit.models._checks import check_training_data

__all__ = ["ConditionedVariationalGP", "TrainingData", "VariationalGPModel", "default_bo_kernel", "default_likelihood"]


@dataclass
class TrainingData:
    """What :meth:`VariationalGPModel.prepare_training_data` returns (model-space data and resolved modules)."""

    X: Tensor  # shape: (n, d), input-transformed
    Y: Tensor  # shape: (n, 1), outcome-transformed
    likelihood: Likelihood
    input_transform: InputTransform | None
    outcome_transform: OutcomeTransform | None


def _check_module(name: str, value, cls: type, what: str) -> None:
    if value is not None and not isinstance(value, cls):
        raise TypeError(f"{name} must be {what} (or None for the default), got {type(value).__name__} {value!r:.60}")


class VariationalGPModel(ApproximateGP, GPyTorchModel, FantasizeMixin):
    r"""BoTorch model base for gpkit's variational GPs (see the module docstring for the API).

    :param variational_strategy: the model's strategy (a GPyTorch ``_VariationalStrategy``).
    :param data: the result of :meth:`prepare_training_data`.
    """

    _num_outputs = 1

    def __init__(self, variational_strategy, data: TrainingData) -> None:
        super().__init__(variational_strategy)
        self.likelihood = data.likelihood
        if data.input_transform is not None:
            self.input_transform = data.input_transform
        if data.outcome_transform is not None:
            self.outcome_transform = data.outcome_transform
        # non-persistent: a state_dict loads into a fresh model built on the same (or other) data
        self.register_buffer("_train_X", data.X, persistent=False)
        self.register_buffer("_train_Y", data.Y, persistent=False)

    # ------------------------------------------------------------------------------------------ data
    @classmethod
    def prepare_training_data(
        cls,
        train_X: Tensor,
        train_Y: Tensor,
        likelihood: Likelihood | None = None,
        covar_module: gpytorch.kernels.Kernel | None = None,
        input_transform: InputTransform | None = None,
        outcome_transform: OutcomeTransform | None = DEFAULT,
    ) -> TrainingData:
        """Validate and transform BoTorch-shaped training data (see the module docstring).

        :param train_X: ``n x d`` inputs.
        :param train_Y: ``n x 1`` (or ``n``) targets.
        :param likelihood: a GPyTorch ``Likelihood``; default :func:`default_likelihood` (a
            ``GaussianLikelihood`` with SingleTaskGP's noise prior).
        :param covar_module: only checked (a GPyTorch ``Kernel`` or ``None``).
        :param input_transform: a BoTorch ``InputTransform`` (e.g. ``Normalize(d)``) or ``None``.
        :param outcome_transform: a BoTorch ``OutcomeTransform``, ``None``, or the default
            (``Standardize(m=1)`` for a Gaussian likelihood, else ``None``).
        """
        _check_module("likelihood", likelihood, Likelihood, "a gpytorch.likelihoods.Likelihood")
        _check_module("covar_module", covar_module, gpytorch.kernels.Kernel, "a gpytorch.kernels.Kernel")
        _check_module("input_transform", input_transform, InputTransform, "a botorch InputTransform")
        if outcome_transform is not DEFAULT:
            _check_module("outcome_transform", outcome_transform, OutcomeTransform, "a botorch OutcomeTransform")
        X, Y = check_training_data(train_X, train_Y)
        X, Y = X.detach(), Y.detach()
        likelihood = default_likelihood() if likelihood is None else likelihood
        if outcome_transform is DEFAULT:
            # min_stdv far below BoTorch's 1e-8 default, so that targets of std 1e-9 are still rescaled
            gaussian = isinstance(likelihood, _GaussianLikelihoodBase)
            outcome_transform = Standardize(m=1, min_stdv=1e-30) if gaussian else None
        if input_transform is not None:
            if any(p.requires_grad for p in input_transform.parameters()):
                raise ValueError("input_transform with learnable parameters is not supported (inputs are transformed once)")
            input_transform.to(X)
            input_transform.train()
            with torch.no_grad():
                X = input_transform(X)
        if outcome_transform is not None:
            outcome_transform.to(X)
            outcome_transform.train()
            with torch.no_grad():
                Y, _ = outcome_transform(Y, X=X)
            outcome_transform.eval()
        if input_transform is not None:
            input_transform.eval()
        _warn_scale(X)
        return TrainingData(X, Y, likelihood, input_transform, outcome_transform)

    @property
    def train_inputs(self) -> tuple[Tensor]:
        return (self._train_X,)

    @property
    def train_targets(self) -> Tensor:
        return self._train_Y.squeeze(-1)

    @property
    def num_data(self) -> int:
        return self._train_X.size(0)

    def _set_transformed_inputs(self) -> None:  # the stored inputs are transformed already
        pass

    def _revert_to_original_inputs(self) -> None:
        pass

    def _restore_targets_and_noise(self, Y: Tensor, Yvar: Tensor | None, strict: bool) -> None:
        # BoTorch's load_state_dict re-transforms the targets with the loaded outcome transform
        self._train_Y = Y.reshape(self._train_Y.shape).to(self._train_Y)

    def log_prior(self) -> Tensor | float:
        """Sum of the registered priors' log densities, each prior counted once (GPyTorch's ``VariationalELBO``
        counts the likelihood's priors twice when the likelihood is a submodule of the model)."""
        total = 0.0
        for _, module, prior, closure, _ in self.named_priors():
            total = total + prior.log_prob(closure(module)).sum()
        return total

    def batch_loss(self, index: Tensor) -> Tensor:
        """Negative ``VariationalELBO`` per datum on the training rows ``index`` (for :func:`gpkit.fit`)."""
        index = index.to(self._train_X.device)
        output = self(self._train_X[index])
        return -VariationalELBO(self.likelihood, self, num_data=self.num_data)(output, self.train_targets[index])

    # ------------------------------------------------------------------------------------- posterior
    def _check_test_inputs(self, X: Tensor, name: str = "X") -> Tensor:
        d = self._train_X.size(-1)
        if not torch.is_tensor(X) or X.dim() < 2 or X.size(-1) != d:
            shape = tuple(X.shape) if torch.is_tensor(X) else type(X).__name__
            raise ValueError(f"{name} must be a tensor of shape (..., q, {d}), got {shape}")
        if not torch.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or inf")
        return X.to(self._train_X)

    def _noisy(self, mvn: MultivariateNormal, X: Tensor, observation_noise: bool | Tensor) -> MultivariateNormal:
        if observation_noise is False:
            return mvn
        if not isinstance(self.likelihood, _GaussianLikelihoodBase):
            raise ValueError(  # noqa: TRY004 (a value of observation_noise, not a type, is wrong)
                "observation_noise needs a Gaussian likelihood; apply the likelihood to the latent posterior"
            )
        if torch.is_tensor(observation_noise):
            noise = observation_noise.to(mvn.mean)
            if noise.dim() == mvn.mean.dim() + 1 and noise.size(-1) == 1:
                noise = noise.squeeze(-1)
            noise = noise.expand(mvn.mean.shape)
            return MultivariateNormal(mvn.mean, mvn.lazy_covariance_matrix + DiagLinearOperator(noise))
        return self.likelihood(mvn, X)

    def _finish_posterior(self, mvn, X, observation_noise, posterior_transform):
        posterior = GPyTorchPosterior(distribution=self._noisy(mvn, X, observation_noise))
        if hasattr(self, "outcome_transform"):
            posterior = self.outcome_transform.untransform_posterior(posterior, X=X)
        if posterior_transform is not None:
            return posterior_transform(posterior)
        return posterior

    def posterior(
        self,
        X: Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | Tensor = False,
        posterior_transform=None,
        **kwargs: Any,
    ) -> GPyTorchPosterior:
        """Posterior of the latent f at ``X`` (``batch x q x d``), joint over each q-batch.

        :param X: test inputs (raw space).
        :param output_indices: ``None`` or ``[0]`` (one output).
        :param observation_noise: ``True`` adds the likelihood's noise; a tensor ``batch x q (x 1)`` adds that
            noise (outcome-transformed space). Gaussian likelihoods only.
        :param posterior_transform: an optional BoTorch ``PosteriorTransform``.
        """
        if output_indices is not None and list(output_indices) != [0]:
            raise ValueError(f"output_indices must be None or [0] (the model has one output), got {output_indices}")
        X = self._check_test_inputs(X)
        self.eval()
        X = self.transform_inputs(X)
        with gpt_posterior_settings():
            mvn = self._latent_posterior(X)
        return self._finish_posterior(mvn, X, observation_noise, posterior_transform)

    def _latent_posterior(self, X: Tensor) -> MultivariateNormal:
        """Hook: the joint latent ``q(f)`` over each q-batch of model-space ``X`` (default ``self(X)``)."""
        return self(X)

    # ---------------------------------------------------------------------------------- conditioning
    def condition_on_observations(self, X: Tensor, Y: Tensor, noise: Tensor | None = None, **kwargs: Any) -> Model:
        """Condition on new observations (raw ``X`` ``batch x n' x d``, ``Y`` ``batch' x n' x 1``).

        :param noise: observation noise variances shaped like ``Y`` (outcome-transformed space); default the
            likelihood's noise.
        :return: a model of the conditioned posterior (see :meth:`_condition`).
        """
        return self._condition(*self._model_space(X, Y, noise))

    def _model_space(self, X: Tensor, Y: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Raw conditioning data to model space: ``X`` input-transformed, ``Y`` outcome-transformed, ``noise``
        shaped like ``Y``."""
        X = self._check_test_inputs(X)
        if not torch.is_tensor(Y) or Y.dim() < 2 or Y.size(-1) != 1 or Y.size(-2) != X.size(-2):
            raise ValueError(f"Y must be a tensor of shape (..., {X.size(-2)}, 1), got {tuple(getattr(Y, 'shape', ()))}")
        if not torch.isfinite(Y).all():
            raise ValueError("Y contains NaN or inf")
        if noise is not None and not (torch.isfinite(noise).all() and (noise >= 0).all()):
            raise ValueError("noise must be finite and non-negative")
        self.eval()
        Y = Y.to(self._train_X)
        X = self.transform_inputs(X)
        if hasattr(self, "outcome_transform"):
            Y, _ = self.outcome_transform(Y, X=X)
        if noise is not None:
            noise = noise.to(Y)
            if noise.dim() == Y.dim() - 1:
                noise = noise.unsqueeze(-1)
            noise = noise.expand(Y.shape)
        return X, Y, noise

    def _condition(self, X: Tensor, Y: Tensor, noise: Tensor | None) -> Model:
        """Hook: condition on model-space data (``X`` ``batch x n' x d``, ``Y`` and ``noise`` ``batch' x n' x 1``).

        The default is exact Gaussian conditioning of this model's variational posterior process
        (:class:`ConditionedVariationalGP`); a subclass may override it, e.g. to update its strategy.
        """
        return ConditionedVariationalGP(self, X, Y, noise)

    def subset_output(self, idcs: list[int]) -> Model:
        """The model itself for ``idcs == [0]`` (it has a single output)."""
        if list(idcs) != [0]:
            raise ValueError(f"{type(self).__name__} has a single output; subset_output needs idcs=[0], got {idcs}")
        return self


class ConditionedVariationalGP(Model, FantasizeMixin):
    r"""A variational model's posterior process conditioned exactly on extra Gaussian observations.

    With :math:`q(f)` the model's (joint) posterior over ``[X_c, X]`` and observations
    :math:`y_c = f(X_c) + \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, \mathrm{diag}(\sigma^2))`:

    .. math::
        f(X) \mid y_c \sim \mathcal N\big(m_X + K_{Xc}(K_{cc} + \Sigma)^{-1}(y_c - m_c),\;
        K_{XX} - K_{Xc}(K_{cc} + \Sigma)^{-1}K_{cX}\big).

    Each posterior call costs one joint posterior of the base model over ``n_c + q`` points plus an
    :math:`O(n_c^3)` solve. It keeps a reference to the base model (do not retrain the base while using it).

    :param model: the :class:`VariationalGPModel`.
    :param X: conditioning inputs, model space, ``batch x n_c x d``.
    :param Y: targets, model space, ``batch' x n_c x 1``.
    :param noise: noise variances like ``Y``, or ``None`` for the likelihood's noise.
    """

    _num_outputs = 1

    def __init__(self, model: VariationalGPModel, X: Tensor, Y: Tensor, noise: Tensor | None = None) -> None:
        super().__init__()
        if noise is None:
            if not isinstance(model.likelihood, _GaussianLikelihoodBase):
                raise ValueError("conditioning a model with a non-Gaussian likelihood needs an explicit noise=")
            noise = model.likelihood.noise.detach().reshape(-1)[0].expand(Y.shape)
        batch = torch.broadcast_shapes(X.shape[:-2], Y.shape[:-2], noise.shape[:-2])
        self.base = model
        self.register_buffer("X_c", X.expand(*batch, *X.shape[-2:]))
        self.register_buffer("Y_c", Y.expand(*batch, *Y.shape[-2:]).squeeze(-1))
        self.register_buffer("noise_c", noise.expand(*batch, *noise.shape[-2:]).squeeze(-1))

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def batch_shape(self) -> torch.Size:
        return self.X_c.shape[:-2]

    @property
    def likelihood(self) -> Likelihood:
        return self.base.likelihood

    def _latent(self, X: Tensor) -> MultivariateNormal:
        """The conditioned latent joint at model-space ``X`` (``batch x q x d``)."""
        nc = self.X_c.size(-2)
        batch = torch.broadcast_shapes(X.shape[:-2], self.batch_shape)
        both = torch.cat([self.X_c.expand(*batch, nc, X.size(-1)), X.expand(*batch, *X.shape[-2:])], dim=-2)
        with gpt_posterior_settings():
            joint = self.base._latent_posterior(both)
        mean, cov = joint.mean, joint.covariance_matrix  # shapes: (*batch, nc + q), (*batch, nc + q, nc + q)
        k_cc = cov[..., :nc, :nc] + torch.diag_embed(self.noise_c.expand(*batch, nc))
        chol = psd_safe_cholesky(k_cc)
        rhs = torch.cat([cov[..., :nc, nc:], (self.Y_c.expand(*batch, nc) - mean[..., :nc]).unsqueeze(-1)], -1)
        solved = torch.linalg.solve_triangular(chol, rhs, upper=False)
        w, r = solved[..., :-1], solved[..., -1:]  # shapes: (*batch, nc, q), (*batch, nc, 1)
        post_mean = mean[..., nc:] + (w * r).sum(-2)
        post_cov = cov[..., nc:, nc:] - w.mT @ w
        return MultivariateNormal(post_mean, post_cov)

    def posterior(
        self, X: Tensor, output_indices=None, observation_noise: bool | Tensor = False, posterior_transform=None,
        **kwargs: Any,
    ) -> GPyTorchPosterior:
        """As :meth:`VariationalGPModel.posterior`, for the conditioned process."""
        if output_indices is not None and list(output_indices) != [0]:
            raise ValueError(f"output_indices must be None or [0] (the model has one output), got {output_indices}")
        X = self.base._check_test_inputs(X)
        self.base.eval()
        X = self.base.transform_inputs(X)
        return self.base._finish_posterior(self._latent(X), X, observation_noise, posterior_transform)

    def condition_on_observations(self, X: Tensor, Y: Tensor, noise: Tensor | None = None, **kwargs: Any) -> Model:
        """Condition further: the data are appended (raw ``X`` and ``Y``, as for the base model)."""
        new = ConditionedVariationalGP(self.base, *self.base._model_space(X, Y, noise))
        batch = torch.broadcast_shapes(self.batch_shape, new.batch_shape)
        cat = [
            torch.cat([a.expand(*batch, *a.shape[len(a.shape) - k:]), b.expand(*batch, *b.shape[len(b.shape) - k:])], -k)
            for a, b, k in ((self.X_c, new.X_c, 2), (self.Y_c, new.Y_c, 1), (self.noise_c, new.noise_c, 1))
        ]
        return ConditionedVariationalGP(self.base, cat[0], cat[1].unsqueeze(-1), cat[2].unsqueeze(-1))

    def subset_output(self, idcs: list[int]) -> Model:
        if list(idcs) != [0]:
            raise ValueError(f"the model has a single output; subset_output needs idcs=[0], got {idcs}")
        return self


def default_likelihood(initial_noise: float | None = None) -> GaussianLikelihood:
    """The default likelihood: a ``GaussianLikelihood`` with SingleTaskGP's noise prior and start.

    ``LogNormal(-4, 1)`` on the noise (of the standardised targets), the noise starting at the prior's mode
    (about 0.0067) and kept above 1e-4, as BoTorch's ``get_gaussian_likelihood_with_lognormal_prior`` (but with
    GPyTorch's softplus constraint transform, which Adam needs). The prior enters the ELBO as in the MAP fit of
    ``SingleTaskGP``, so the two learn comparable noise levels at small n.

    :param initial_noise: where the noise starts instead of the prior's mode (the prior is kept); a model whose
        early fits are short and leave lasting traces (:class:`~gpkit.models.DualMemoryGP`) starts higher.
    """
    prior = LogNormalPrior(loc=-4.0, scale=1.0)
    start = prior.mode if initial_noise is None else torch.tensor(float(initial_noise))
    if not start > 1e-4:
        raise ValueError(f"initial_noise must be > 1e-4 (the noise's lower bound), got {initial_noise!r}")
    return GaussianLikelihood(noise_prior=prior, noise_constraint=GreaterThan(1e-4, initial_value=start))


def default_bo_kernel(d: int) -> gpytorch.kernels.RBFKernel:
    """SingleTaskGP's default kernel for small data: an RBF kernel with BoTorch's dimension-scaled lengthscale
    prior ``LogNormal(sqrt(2) + log(d) / 2, sqrt(3))`` (Hvarfner et al., 2024), starting at its mode and kept
    above 0.025, but with GPyTorch's softplus constraint transform (BoTorch's has none, which only L-BFGS-B's
    bounds keep feasible; Adam needs the transform).

    :param d: input dimension (one lengthscale per dimension).
    """
    prior = LogNormalPrior(loc=math.sqrt(2) + 0.5 * math.log(d), scale=math.sqrt(3))
    constraint = GreaterThan(2.5e-2, initial_value=prior.mode)
    return gpytorch.kernels.RBFKernel(ard_num_dims=d, lengthscale_prior=prior, lengthscale_constraint=constraint)


def _warn_scale(X: Tensor) -> None:
    if botorch_settings.validate_input_scaling.off() or X.size(0) < 2:
        return
    spread = (X.max(0).values - X.min(0).values)
    bad = ((spread > 0) & ((spread < 1e-3) | (spread > 1e3))).nonzero().flatten().tolist()
    if bad:
        warnings.warn(
            f"train_X columns {bad[:5]} span {spread[bad[0]].item():.3g} (far from unit scale); the default kernel "
            f"hyperparameters assume O(1) inputs. Pass input_transform=Normalize(d={X.size(-1)}) or rescale the data.",
            InputDataWarning,
            stacklevel=3,
        )
