"""Sparse-within-sparse GP (Tran et al., ICML 2021): many inducing points, each input using its nearest few."""

from __future__ import annotations

import math

import gpytorch
import torch
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform
from botorch.utils.types import DEFAULT
from gpytorch.likelihoods import Likelihood
from gpytorch.likelihoods.gaussian_likelihood import _GaussianLikelihoodBase
from gpytorch.mlls import VariationalELBO
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from gpkit.models.base import VariationalGPModel, default_bo_kernel
from gpkit.neighbors import knn
from gpkit.variational.inducing_points import init_inducing_points
from gpkit.variational.local_cholesky_variational_distribution import LocalCholeskyVariationalDistribution
from gpkit.variational.nearest_inducing_variational_strategy import NearestInducingVariationalStrategy

__all__ = ["SWSGP", "init_inducing_points"]


class SWSGP(VariationalGPModel):
    r"""Sparse-within-sparse variational GP: :math:`M` inducing points, each input conditioned on its
    :math:`H` nearest (:class:`~gpkit.variational.NearestInducingVariationalStrategy`).

    A training step on a batch of :math:`B` inputs costs :math:`O(B H^3)`, plus an :math:`O(M (H + d))`
    dense optimizer update unless ``sparse_grad=True``; parameters take :math:`O(M (H + d))` memory. With
    :math:`H = M` and ``num_factor_neighbors = M - 1`` it is the unwhitened SVGP. Train with
    :func:`gpkit.fit` (defaults: batch 100, Adam, lr 0.01).

    Neighbours of the training inputs are cached (``n x H`` indices) and recomputed at the end of each
    epoch in which the inducing locations moved (:meth:`on_epoch_end`); any other input gets fresh
    neighbours. One kNN pass per epoch builds one tree on the inducing points, whereas a search per step
    would rebuild it every step, an :math:`O(M \log M)` cost per step that grows with :math:`M`. Within an
    epoch the sets lag the moving inducing points by less than one epoch of updates; the selection carries
    no gradient either way.

    Initialisation: the local factor starts diagonal at 0.1 times the prior standard deviation; with a
    Gaussian likelihood the variational mean starts at the target of the training input nearest to each
    inducing point (otherwise at the prior mean). In the unwhitened local parameterisation the mean
    otherwise takes many epochs to leave the prior (e.g. UCI bike, M = 1024, H = 50, 4 epochs: test NLL
    0.22 from the prior mean, -0.12 from the data; the same start does not change a small SVGP).

    Small data (the BO regime): when :math:`M \le` ``exact_size`` (default 128) and ``num_neighbors`` is not
    given, every input uses all :math:`M` inducing points (:math:`H = M`, one shared conditional) and the
    inducing points stay at the distinct training inputs: the exact GP. With a Gaussian likelihood the default
    kernel is then SingleTaskGP's (:func:`~gpkit.models.base.default_bo_kernel`), the full-batch loss is the
    collapsed bound (:meth:`collapsed_bound`: the ELBO at the closed-form optimal :math:`q`, here the exact
    marginal likelihood) plus the priors, and :func:`gpkit.fit` minimises it with L-BFGS over the
    hyperparameters, setting :math:`q(\mathbf u)` to its optimum after each iteration
    (:meth:`set_optimal_variational_distribution`). Cost per evaluation: :math:`O(n M^2)`. This matches
    SingleTaskGP + ``fit_gpytorch_mll`` (same hyperparameters, ``gpkit bench swsgp_bo``). Above
    ``exact_size``, or with an explicit ``num_neighbors``, nothing changes: :math:`H` nearest neighbours,
    minibatch Adam.

    Predictions: :meth:`posterior` of a ``b x q x d`` batch is a joint Gaussian over each q-batch, conditioned
    on the union of the q inputs' neighbour sets (when :math:`qH \le` ``max_joint_inducing`` = 4096 of the
    strategy; larger batches, e.g. a test set, get exact per-input marginals). The posterior mean is only
    piecewise smooth: it jumps where an input's nearest-inducing set changes.

    :param train_X: training inputs, ``n x d``.
    :param train_Y: training targets, ``n x 1`` (or ``n``).
    :param likelihood: any one-dimensional GPyTorch likelihood; default ``GaussianLikelihood``.
    :param covar_module: kernel; default ``ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d))``.
    :param mean_module: prior mean; default ``ConstantMean``.
    :param num_inducing: :math:`M`; capped at the number of distinct training inputs (BO loops repeat
        inputs), so the default 1024 suits any n.
    :param num_neighbors: :math:`H \le M`; capped with :math:`M`. Default: 50, or :math:`M` when
        :math:`M \le` ``exact_size``.
    :param exact_size: the largest :math:`M` at which the default ``num_neighbors`` is :math:`M` (see above);
        ``None`` or 0: never.
    :param num_factor_neighbors: off-diagonal entries per row of the local Cholesky factor
        (default ``num_neighbors - 1``); see :class:`~gpkit.variational.LocalCholeskyVariationalDistribution`.
    :param inducing_points: initial locations ``M x d``, or ``"random"`` / ``"kmeans"``.
    :param learn_inducing_locations: optimise the inducing locations; default: yes, except in the small-data
        regime (there the inducing points are the distinct training inputs, already optimal).
    :param seed: seed of the inducing initialisation.
    :param sparse_grad: give the per-inducing-point parameters (variational mean, local factor rows and,
        when learned, the inducing locations) sparse gradients over the rows a minibatch touches;
        :meth:`sparse_parameters` returns them and :func:`gpkit.fit` trains them with
        ``torch.optim.SparseAdam`` (a lazy Adam: rows not in the batch keep their moments). A step then costs
        :math:`O(B H (H^2 + K + d))` whatever :math:`M`, instead of an :math:`O(M (K + d))` dense update.
        Forward values are the same either way.
    :param input_transform: a BoTorch input transform (e.g. ``Normalize(d)``), applied as BoTorch does.
    :param outcome_transform: a BoTorch outcome transform; default ``Standardize(m=1)`` for a Gaussian
        likelihood (see :class:`~gpkit.models.base.VariationalGPModel`), ``None`` for none.
    """

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        likelihood: Likelihood | None = None,
        covar_module: gpytorch.kernels.Kernel | None = None,
        mean_module: gpytorch.means.Mean | None = None,
        num_inducing: int = 1024,
        num_neighbors: int | None = None,
        num_factor_neighbors: int | None = None,
        exact_size: int | None = 128,
        inducing_points: Tensor | str = "random",
        learn_inducing_locations: bool | None = None,
        seed: int = 0,
        sparse_grad: bool = False,
        input_transform: InputTransform | None = None,
        outcome_transform: OutcomeTransform | None = DEFAULT,
    ) -> None:
        data = self.prepare_training_data(
            train_X, train_Y, likelihood=likelihood, covar_module=covar_module,
            input_transform=input_transform, outcome_transform=outcome_transform,
        )
        train_X, train_Y = data.X, data.Y
        d = train_X.size(-1)
        if isinstance(inducing_points, Tensor):
            inducing_points = inducing_points.detach()
            if inducing_points.dim() != 2 or inducing_points.size(-1) != d:
                raise ValueError(f"inducing_points must have shape (M, {d}), got {tuple(inducing_points.shape)}")
            if not torch.isfinite(inducing_points).all():
                raise ValueError("inducing_points contains NaN or inf")
            repeats = inducing_points.size(0) - torch.unique(inducing_points, dim=0).size(0)
            if repeats:
                raise ValueError(f"inducing_points has {repeats} repeated row(s); K_ZZ would be singular")
            num_inducing = inducing_points.size(0)
        elif not isinstance(num_inducing, int) or num_inducing < 1:
            raise ValueError(f"num_inducing must be a positive int, got {num_inducing!r}")
        if num_neighbors is not None and (not isinstance(num_neighbors, int) or not 1 <= num_neighbors <= num_inducing):
            raise ValueError(f"num_neighbors must be an int in [1, num_inducing={num_inducing}], got {num_neighbors!r}")
        if not isinstance(inducing_points, Tensor):  # BO loops repeat inputs: M <= the distinct inputs
            num_inducing = min(num_inducing, torch.unique(train_X, dim=0).size(0))
        # the BO regime: every input uses all M inducing points (see the class docstring)
        exact = num_neighbors is None and bool(exact_size) and num_inducing <= exact_size
        num_neighbors = num_inducing if exact else min(50 if num_neighbors is None else num_neighbors, num_inducing)
        if learn_inducing_locations is None:
            learn_inducing_locations = not (exact and not isinstance(inducing_points, Tensor))
        if not isinstance(inducing_points, Tensor):
            inducing_points = init_inducing_points(train_X, num_inducing, inducing_points, seed)
        inducing_points = inducing_points.to(train_X)
        k = num_neighbors - 1 if num_factor_neighbors is None else num_factor_neighbors
        q_u = LocalCholeskyVariationalDistribution(
            num_inducing, k, sparse_grad=sparse_grad, dtype=train_X.dtype, device=train_X.device
        )
        # the strategy sets q_u's factor pattern from the inducing locations
        strategy = NearestInducingVariationalStrategy(
            self, inducing_points, q_u, num_neighbors, learn_inducing_locations=learn_inducing_locations,
            sparse_grad=sparse_grad,
        )
        super().__init__(strategy, data)
        self.mean_module = gpytorch.means.ConstantMean() if mean_module is None else mean_module
        gaussian = isinstance(self.likelihood, _GaussianLikelihoodBase)
        if covar_module is None and exact and gaussian:
            covar_module = default_bo_kernel(d)  # SingleTaskGP's kernel
        elif covar_module is None:
            covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d))
        self.covar_module = covar_module
        # q has a closed-form optimum (homoscedastic or fixed Gaussian noise)
        closed_form = isinstance(self.likelihood, gpytorch.likelihoods.GaussianLikelihood | gpytorch.likelihoods.FixedNoiseGaussianLikelihood)
        self._exact = exact and closed_form and k >= num_inducing - 1
        self.to(train_X)
        # a cache (rebuilt on demand), so not in the state_dict
        self.register_buffer("_train_neighbors", torch.zeros(0, num_neighbors, dtype=torch.long), persistent=False)
        # inducing locations at the last refresh of _train_neighbors
        self.register_buffer("_neighbors_Z", torch.zeros(0, d).to(train_X), persistent=False)
        self.register_load_state_dict_post_hook(_clear_neighbor_cache)
        strategy.reset_variational_distribution()
        if isinstance(self.likelihood, _GaussianLikelihoodBase):
            # start m_j at the target of the training input nearest to z_j (see the class docstring)
            _, nearest = knn(strategy.inducing_points.detach(), train_X, 1)
            with torch.no_grad():
                q_u.variational_mean.copy_(train_Y[nearest[:, 0].to(train_Y.device), 0])

    @property
    def fit_defaults(self) -> dict:
        if self._exact:
            # H = M at small n: the full-batch loss is the collapsed bound (a function of the hyperparameters only),
            # minimised by L-BFGS (strong Wolfe) until 5 iterations improve it by less than 1e-6 per datum
            return {"optimizer": "lbfgs", "lr": 1.0, "batch_size": self.num_data, "max_iter": 200, "min_steps": 1,
                    "tol": 1e-6, "patience": 5}
        return {"epochs": 20, "lr": 0.01, "batch_size": 100}

    def _collapsed_factors(self) -> dict:
        """Shared pieces of :meth:`collapsed_bound` and :meth:`set_optimal_variational_distribution`."""
        strategy = self.variational_strategy
        m = strategy.num_inducing
        if strategy.num_neighbors != m or strategy.local_distribution.num_factor_neighbors < m - 1:
            raise ValueError("the closed-form q needs num_neighbors = num_inducing and a complete factor")
        if not isinstance(self.likelihood, _GaussianLikelihoodBase):
            raise ValueError("the closed-form q needs a Gaussian likelihood")
        X, y = self._train_X, self.train_targets
        prior = self.forward(torch.cat([strategy.inducing_points, X]))  # Z gets gradients when learned
        lazy, mu = prior.lazy_covariance_matrix, prior.mean
        jitter = strategy.jitter_val or gpytorch.settings.variational_cholesky_jitter.value(X.dtype)
        eye = torch.eye(m, dtype=X.dtype, device=X.device)
        chol_k = psd_safe_cholesky(lazy[:m, :m].to_dense() + jitter * eye)  # K = K_ZZ + jitter
        a = torch.linalg.solve_triangular(chol_k, lazy[:m, m:].to_dense(), upper=False)  # L_K^-1 K_ZX, (M, n)
        noise = self.likelihood.noise.reshape(-1).expand(X.size(0))  # D
        v = a / noise.sqrt()
        chol_b = psd_safe_cholesky(eye + v @ v.mT)  # B = I + V V^T
        resid = y - mu[m:]
        c = torch.linalg.solve_triangular(chol_b, v @ (resid / noise.sqrt()).unsqueeze(-1), upper=False)
        return {"m": m, "mu_z": mu[:m], "chol_k": chol_k, "a": a, "noise": noise, "chol_b": chol_b, "resid": resid,
                "c": c, "k_xx": lazy[m:, m:].diagonal(dim1=-2, dim2=-1)}

    def collapsed_bound(self) -> Tensor:
        r"""The ELBO (without priors) at the optimal :math:`q(\mathbf u)`, over all training data (Gaussian
        likelihood, :math:`H = M`): Titsias's bound

        .. math::
            \log \mathcal N(\mathbf y \mid \boldsymbol\mu_X, \mathbf Q + \mathbf D)
            - \tfrac12 \textstyle\sum_i (k_{ii} - Q_{ii}) / D_{ii}, \quad
            \mathbf Q = \mathbf K_{XZ} \mathbf K^{-1} \mathbf K_{ZX},

        with :math:`\mathbf K = \mathbf K_{ZZ}` + jitter, :math:`\mathbf D` the noise variances; with
        :math:`Z = X` it is the exact log marginal likelihood. :math:`O(n M^2)`.
        """
        f = self._collapsed_factors()
        n = f["resid"].size(-1)
        logdet = f["noise"].log().sum() + 2 * f["chol_b"].diagonal().log().sum()  # log |Q + D|
        quad = (f["resid"].pow(2) / f["noise"]).sum() - f["c"].pow(2).sum()
        trace = ((f["k_xx"] - f["a"].pow(2).sum(-2)) / f["noise"]).sum()
        return -0.5 * (n * math.log(2 * math.pi) + logdet + quad + trace)

    @torch.no_grad()
    def set_optimal_variational_distribution(self) -> None:
        r"""Set :math:`q(\mathbf u)` to the optimum of the ELBO for the current hyperparameters (Gaussian
        likelihood, :math:`H = M`, a complete factor):

        .. math::
            \mathbf S = \mathbf K (\mathbf K + \mathbf K_{ZX} \mathbf D^{-1} \mathbf K_{XZ})^{-1} \mathbf K, \quad
            \mathbf m = \boldsymbol\mu_Z + \mathbf K (\mathbf K + \mathbf K_{ZX} \mathbf D^{-1} \mathbf K_{XZ})^{-1}
            \mathbf K_{ZX} \mathbf D^{-1} (\mathbf y - \boldsymbol\mu_X),

        with :math:`\mathbf K = \mathbf K_{ZZ}` + the strategy's jitter and :math:`\mathbf D` the noise
        variances (Titsias's optimal :math:`q`; with :math:`Z = X` the exact posterior).
        """
        f = self._collapsed_factors()
        r = torch.linalg.solve_triangular(f["chol_b"], f["chol_k"].mT, upper=False)  # L_B^-1 L_K^T: S = R^T R
        q = self.variational_strategy.local_distribution
        q.load_dense(psd_safe_cholesky(r.mT @ r))
        q.variational_mean.copy_(f["mu_z"] + (r.mT @ f["c"]).squeeze(-1))

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def sparse_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters with sparse gradients (for ``torch.optim.SparseAdam`` in :func:`gpkit.fit`)."""
        strategy = self.variational_strategy
        out = []
        if strategy.local_distribution.sparse_grad:
            out.append(strategy.local_distribution.local_rows)
        if strategy.sparse_grad and strategy.learn_inducing_locations:
            out.append(strategy.inducing_points)
        return out

    def refresh_neighbors(self) -> None:
        """Recompute the cached neighbour sets of the training inputs against the current inducing points
        (one kd-tree on the inducing points, the training inputs queried on all cores)."""
        self._train_neighbors = self.variational_strategy.neighbors(self._train_X)
        self._neighbors_Z = self.variational_strategy.inducing_points.detach().clone()

    def on_epoch_end(self, epoch: int) -> None:
        """Refresh the training inputs' neighbour sets if the inducing locations moved since the last refresh;
        in the small-data regime (see the class docstring) set ``q`` to its optimum."""
        strategy = self.variational_strategy
        Z = strategy.inducing_points
        moved = strategy.learn_inducing_locations and not torch.equal(Z.detach(), self._neighbors_Z)
        if moved and strategy.num_neighbors < strategy.num_inducing:  # with H = M every set is all of them
            self.refresh_neighbors()
        if self._exact:
            self.set_optimal_variational_distribution()

    def _latent_posterior(self, X: Tensor) -> gpytorch.distributions.MultivariateNormal:
        # BoTorch posteriors are always joint over each q-batch (a clear error if too large)
        return self(X, joint=True)

    def batch_loss(self, index: Tensor) -> Tensor:
        """Negative ELBO estimate per datum on the training inputs ``index`` (for :func:`gpkit.fit`).

        In the small-data regime (see the class docstring), for ``index`` covering all the data, it is the
        negative :meth:`collapsed_bound` plus log priors (each counted once) per datum: the loss at the optimal
        ``q``, computed without ``q``.
        """
        if self._exact and index.numel() == self.num_data:
            return -(self.collapsed_bound() + self.log_prior()) / self.num_data
        if self._train_neighbors.size(0) != self.num_data:
            self.refresh_neighbors()
        index = index.to(self._train_X.device)
        output = self(self._train_X[index], neighbor_index=self._train_neighbors[index])
        return -VariationalELBO(self.likelihood, self, num_data=self.num_data)(output, self.train_targets[index])


def _clear_neighbor_cache(model: SWSGP, incompatible_keys) -> None:
    """After ``load_state_dict`` the inducing locations may have changed: rebuild the neighbour cache lazily."""
    model._train_neighbors = model._train_neighbors[:0]
    model._neighbors_Z = model._neighbors_Z[:0]
