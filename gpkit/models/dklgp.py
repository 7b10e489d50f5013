"""DKLGP: variational sparse inverse Cholesky latent GP via double-KL minimisation (Cao et al., ICML 2023)."""

from __future__ import annotations

import gpytorch
import torch
from botorch.models.gpytorch import GPyTorchModel
from gpytorch.distributions import MultivariateNormal
from gpytorch.likelihoods import GaussianLikelihood, Likelihood
from gpytorch.models import ApproximateGP
from torch import Tensor

from gpkit import neighbors
from gpkit.models._checks import check_training_data
from gpkit.operators.incomplete_cholesky import gram_on_pattern, incomplete_reverse_cholesky
from gpkit.operators.sparse_triangular import SparseTriangularLinearOperator, canonical_pattern
from gpkit.variational.dkl_variational_strategy import DKLVariationalStrategy
from gpkit.variational.sparse_cholesky_variational_distribution import SparseCholeskyVariationalDistribution

__all__ = ["DKLGP"]


def _lengthscale(kernel) -> Tensor | None:
    """The (ARD) lengthscale of a kernel or of the kernel it wraps, if any."""
    while kernel is not None:
        if getattr(kernel, "has_lengthscale", False):
            return kernel.lengthscale.detach().reshape(-1)
        kernel = getattr(kernel, "base_kernel", None)
    return None


def _check_inputs(train_X: Tensor, train_Y: Tensor) -> tuple[Tensor, Tensor]:
    train_X, train_Y = check_training_data(train_X, train_Y)
    train_Y = train_Y.squeeze(-1)
    groups = neighbors.find_duplicates(train_X)
    if groups:
        raise ValueError(
            f"train_X has {sum(len(g) - 1 for g in groups)} duplicate row(s) (e.g. rows {groups[0].tolist()}): "
            "DKLGP needs distinct inputs (duplicates make the kernel matrix singular and break the maximin "
            "ordering). Merge them first, e.g. average train_Y over repeated inputs."
        )
    return train_X, train_Y


class DKLGP(ApproximateGP, GPyTorchModel):
    r"""Latent GP with the double-KL variational sparse inverse Cholesky approximation.

    The prior :math:`\mathcal N(\mu, K)` is replaced by :math:`\mathcal N(\mu, (UU^\top)^{-1})` with ``U`` the
    KL-optimal sparse inverse Cholesky factor on a maximin-ordered pattern (set by ``rho``), and the
    posterior is approximated by :math:`\mathcal N(\nu, (VV^\top)^{-1})` with ``V`` on the same pattern.
    Train with :func:`gpkit.fit` (minibatches over columns); any one-dimensional likelihood works.

    Prediction orders test points after the training points. A q-batch of test points (``q <= 64``) is
    conditioned jointly on the union of their training neighbour sets, so ``posterior(X)`` returns a full
    ``q x q`` covariance (GPyTorch's VNNGP returns a diagonal); larger inputs get independent marginals,
    each conditioned on its own neighbours (the two agree for ``q = 1``).

    :param train_X: ``n x d`` distinct training inputs.
    :param train_Y: ``n x 1`` (or ``n``) targets.
    :param likelihood: a one-dimensional GPyTorch likelihood (default ``GaussianLikelihood``).
    :param covar_module: the kernel (default ``ScaleKernel(MaternKernel(1.5, ard_num_dims=d))``).
    :param mean_module: the prior mean (default ``ConstantMean``).
    :param rho: pattern radius factor; ``m`` (average pattern size) grows like ``rho^d``.
    :param max_size: cap on the pattern sizes ``|S_j|`` (nearest kept); ``"auto"``: ``max(32, 2 m)``, ``m``
        the mean uncapped ``|S_j|`` (only the first, coarse-scale columns are that large); ``None``: no cap.
    :param ancestor_size: cap on the ancestor sets ``A_j`` used for the solves with ``V`` (nearest kept,
        always merged with ``S_j``); ``"auto"``: ``max(32, 4 m)`` with ``m`` the mean ``|S_j|``, which keeps
        the cost per column independent of ``n``; ``None``: uncapped (exact ``A_j``, width grows like log n).
    :param diagonal: use a diagonal ``V`` ("DKL-D").
    :param nugget: added to the kernel diagonal.
    :param init: ``"newton"`` (Newton steps for ``nu``, ``V = IC0(U U^T + W)``) or ``"prior"``
        (``V = U``, ``nu = mu``).
    :param reorder_epoch: epoch after which the inputs are re-ordered with the learned lengthscales and
        ``q`` re-initialised (``None``: never).
    :param sparse_grad: give the variational parameters sparse gradients, so that :func:`gpkit.fit` updates
        them with ``torch.optim.SparseAdam`` and a step costs O(batch) instead of O(n m) (worth it for
        n >= ~5e4 on a CPU; see ``gpkit bench dklgp``).
    """

    _num_outputs = 1

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        likelihood: Likelihood | None = None,
        covar_module: gpytorch.kernels.Kernel | None = None,
        mean_module: gpytorch.means.Mean | None = None,
        rho: float = 1.5,
        max_size: int | str | None = "auto",
        ancestor_size: int | str | None = "auto",
        diagonal: bool = False,
        nugget: float = 1e-4,
        init: str = "newton",
        reorder_epoch: int | None = 5,
        sparse_grad: bool = False,
    ):
        train_X, train_Y = _check_inputs(train_X, train_Y)
        if not (max_size is None or max_size == "auto" or (isinstance(max_size, int) and max_size > 0)):
            raise ValueError(f"max_size must be a positive int, 'auto' or None, got {max_size!r}")
        if not (isinstance(rho, int | float) and rho >= 1.0):
            raise ValueError(f"rho must be a number >= 1, got {rho!r}")
        if init not in ("newton", "prior"):
            raise ValueError(f"init must be 'newton' or 'prior', got {init!r}")
        _n, d = train_X.shape
        if covar_module is None:
            covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=d))
        covar_module = covar_module.to(train_X)
        self.rho, self.max_size, self.init, self.reorder_epoch = float(rho), max_size, init, reorder_epoch
        if not (
            ancestor_size is None
            or ancestor_size == "auto"
            or (isinstance(ancestor_size, int) and ancestor_size > 0)
        ):
            raise ValueError(f"ancestor_size must be a positive int, 'auto' or None, got {ancestor_size!r}")
        self.ancestor_size = ancestor_size
        X_ord, Y_ord, order, index, anc, dist = self._ordering(train_X, train_Y, _lengthscale(covar_module))
        q = SparseCholeskyVariationalDistribution(
            index, diagonal=diagonal, sparse_grad=sparse_grad, dtype=train_X.dtype, device=train_X.device
        )
        strategy = DKLVariationalStrategy(self, X_ord, index, anc, q, test_sets=None, nugget=nugget)
        super().__init__(strategy)
        self.mean_module = (mean_module or gpytorch.means.ConstantMean()).to(train_X)
        self.covar_module = covar_module
        self.likelihood = (likelihood or GaussianLikelihood()).to(train_X)
        self.register_buffer("train_X", train_X)
        self.register_buffer("train_Y_ordered", Y_ord)
        self.register_buffer("order", order)
        self.register_buffer("dist", dist)
        strategy.test_sets = self._test_sets
        self.initialize_variational()

    # --------------------------------------------------------------------------------- ordering
    def _ordering(self, X: Tensor, Y: Tensor, lengthscale: Tensor | None):
        order, dist = neighbors.maximin_order(X, lengthscale=lengthscale, duplicates="ignore")
        self._order_lengthscale = lengthscale  # the units of dist, also used for the test sets
        X_ord = X[order]
        auto = self.max_size == "auto"
        pat = neighbors.sparsity_pattern(
            X_ord, dist, self.rho, max_size=None if auto else self.max_size, lengthscale=lengthscale
        )
        self.pattern_max_size = self.max_size
        if auto:
            self.pattern_max_size = max(32, int(2 * pat.mask.sum(-1).double().mean().ceil()))
            if pat.index.shape[-1] > self.pattern_max_size:
                pat = neighbors.sparsity_pattern(
                    X_ord, dist, self.rho, max_size=self.pattern_max_size, lengthscale=lengthscale
                )
        if self.ancestor_size == "auto":
            self.ancestor_max_size = max(32, int(4 * pat.mask.sum(-1).double().mean().ceil()))
        else:
            self.ancestor_max_size = self.ancestor_size
        anc = neighbors.ancestor_sets(
            X_ord, dist, self.rho, max_size=self.ancestor_max_size, lengthscale=lengthscale
        )
        index = canonical_pattern(pat.index, pat.mask)
        return X_ord, Y[order], order, index, canonical_pattern(anc.index, anc.mask), dist.to(X)

    def _test_sets(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Training conditioning sets and ancestor sets of test points ``x`` (``t x d``), canonical."""
        X_ord, n = self.variational_strategy.inputs, self.num_data
        kw = {"lengthscale": self._order_lengthscale}
        pat = neighbors.test_pattern(X_ord, self.dist, x, self.rho, max_size=self.pattern_max_size, **kw)
        anc = neighbors.test_ancestor_sets(
            X_ord, self.dist, x, self.rho, max_size=self.ancestor_max_size, **kw
        )
        sets = torch.where(pat.mask & (pat.index < n), pat.index, -1).sort(dim=-1).values[:, 1:]
        anc = torch.where(anc.mask & (anc.index < n), anc.index, -1).sort(dim=-1).values[:, 1:]
        return sets, anc

    def reorder(self) -> None:
        """Re-order the training inputs with the current lengthscales, rebuild the patterns, re-initialise q
        (the variational mean of each point is kept)."""
        strategy = self.variational_strategy
        nu_by_point = torch.empty_like(strategy.variational_distribution.variational_mean)
        nu_by_point[self.order] = strategy.variational_distribution.variational_mean.detach()
        lengthscale = _lengthscale(self.covar_module)
        X_ord, Y_ord, order, index, anc, dist = self._ordering(self.train_X, self.train_Y, lengthscale)
        strategy.set_pattern(X_ord, index, anc, test_sets=self._test_sets)
        strategy.variational_distribution.set_pattern(index)
        self.train_Y_ordered, self.order, self.dist = Y_ord, order, dist
        self.initialize_variational(nu=nu_by_point[order])

    # ------------------------------------------------------------------------------ initialise q
    @torch.no_grad()
    def initialize_variational(self, nu: Tensor | None = None, newton_steps: int = 20) -> None:
        """``V = U``, ``nu = mu`` (or ``nu``); with ``init="newton"``: Newton steps (CG solves with the sparse
        precision ``U U^T + W``, backtracking) to the posterior mode ``f``, ``nu = f`` and
        ``V = IC0(U U^T + W)`` (``W``: negative likelihood curvature at ``f``)."""
        strategy, q = self.variational_strategy, self.variational_strategy.variational_distribution
        u = strategy.prior_factor_all()
        strategy._frozen_prior(values=u)  # cached for training if the kernel is frozen
        mu = self.mean_module(strategy.inputs)
        q.initialize_from_prior(strategy.index, u, mean=mu if nu is None else nu)
        if self.init != "newton":
            return
        U = SparseTriangularLinearOperator(strategy.index, u)
        prec = lambda v: U._matmul(U._t_matmul(v.unsqueeze(-1))).squeeze(-1)
        f = q.variational_mean.clone()
        solve = _newton_solver(strategy.index, u)
        diag_uut = torch.zeros_like(f).index_add(
            0, strategy.index.clamp_min(0).reshape(-1), u.square().reshape(-1)
        )
        objective = lambda f: self._loglik(f).sum() - 0.5 * U._t_matmul((f - mu).unsqueeze(-1)).square().sum()
        best = objective(f)
        for _ in range(newton_steps):
            g, w = self._loglik_derivatives(f)
            step = solve(w, g - prec(f - mu))
            for _ in range(20):  # backtracking: non-log-concave likelihoods (Student-t) need damping
                value = objective(f + step)
                if value >= best:
                    break
                step = 0.5 * step
            else:
                break
            f, best = f + step, value
            if step.abs().max() < 1e-6:
                break
        w = self._loglik_derivatives(f)[1]
        if q.diagonal:
            # mean-field optimum for a Gaussian likelihood: V_jj^2 = (U U^T)_jj + w_j
            q.initialize_from_factor((diag_uut + w).sqrt().unsqueeze(-1), f)
            return
        # V = IC0(U U^T + diag(w)) on the pattern: the precision of the Laplace approximation at f
        P = gram_on_pattern(strategy.index, u, w)
        q.initialize_from_factor(incomplete_reverse_cholesky(strategy.index, P), f)

    def _loglik(self, f: Tensor) -> Tensor:
        """``log p(y_j | f_j)`` per training point (model ordering)."""
        return self.likelihood.forward(f).log_prob(self.train_Y_ordered)

    def _loglik_derivatives(self, f: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient and (clamped, positive) negative second derivative of ``log p(y | f)`` per point."""
        with torch.enable_grad():
            f = f.detach().requires_grad_(True)
            logp = self._loglik(f).sum()
            (g,) = torch.autograd.grad(logp, f, create_graph=True)
            (h,) = torch.autograd.grad(g.sum(), f)
        return g.detach(), (-h).clamp_min(1e-6)

    # -------------------------------------------------------------------------------- gpytorch
    def forward(self, x: Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def prior_mean_covar(self, x: Tensor, covar: bool = True) -> tuple[Tensor, Tensor | None]:
        """Prior mean and (if ``covar``) dense kernel matrix at ``x``, as :meth:`forward` gives them but
        without building a distribution (the strategy's per-minibatch fast path)."""
        if type(self).forward is not DKLGP.forward:  # a subclass with its own prior
            prior = self.forward(x)
            return prior.mean, prior.lazy_covariance_matrix.to_dense() if covar else None
        if not covar:
            return self.mean_module(x), None
        with gpytorch.settings.lazily_evaluate_kernels(False):
            return self.mean_module(x), self.covar_module(x).to_dense()

    @property
    def train_inputs(self) -> tuple[Tensor]:
        return (self.train_X,)

    @property
    def train_Y(self) -> Tensor:
        Y = torch.empty_like(self.train_Y_ordered)
        Y[self.order] = self.train_Y_ordered
        return Y

    @property
    def train_targets(self) -> Tensor:
        return self.train_Y

    # ----------------------------------------------------------------------------- gpkit.fit
    @property
    def num_data(self) -> int:
        return self.train_X.shape[0]

    @property
    def fit_defaults(self) -> dict:
        return {"epochs": 40, "lr": 0.01, "batch_size": 128, "schedule": "cosine"}

    def sparse_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters with sparse gradients (for ``torch.optim.SparseAdam`` in :func:`gpkit.fit`)."""
        q = self.variational_strategy.variational_distribution
        return [q.raw_values, q.raw_mean] if q.sparse_grad else []

    def batch_loss(self, index: Tensor) -> Tensor:
        """``-ELBO_estimate / n`` from the columns ``index`` (positions in the model's ordering)."""
        output = self(None, index=index)
        mll = gpytorch.mlls.VariationalELBO(self.likelihood, self, num_data=self.num_data)
        return -mll(output, self.train_Y_ordered[index])

    def elbo(self) -> Tensor:
        """The full-batch ELBO (sum over all columns; O(n) work)."""
        strategy = self.variational_strategy
        total = 0.0
        for c in torch.arange(self.num_data, device=self.train_X.device).split(strategy.chunk_size):
            mean, var, kl = strategy.column_terms(c)
            ell = self.likelihood.expected_log_prob(
                self.train_Y_ordered[c], MultivariateNormal(mean, torch.diag_embed(var))
            )
            total = total + ell.sum() - kl.sum()
        return total

    def on_epoch_end(self, epoch: int) -> bool:
        self.variational_strategy._kl_estimate = None
        if self.reorder_epoch is not None and epoch + 1 == self.reorder_epoch:
            self.reorder()
            return True
        return False


def _newton_solver(index: Tensor, u: Tensor):
    """``solve(w, rhs) = (U U^T + diag(w))^{-1} rhs`` by Jacobi-preconditioned CG (scipy, on the CPU)."""
    import numpy as np
    import scipy.sparse
    import scipy.sparse.linalg

    n = index.shape[0]
    valid = (index >= 0).cpu().numpy()
    cols = np.broadcast_to(np.arange(n)[:, None], valid.shape)[valid]
    U = scipy.sparse.csc_matrix(
        (u.detach().cpu().numpy()[valid], (index.cpu().numpy()[valid], cols)), shape=(n, n)
    )
    Ut = U.T.tocsr()
    diag_uut = np.asarray(U.multiply(U).sum(axis=1)).ravel()

    def solve(w: Tensor, rhs: Tensor) -> Tensor:
        w_np = w.detach().cpu().numpy()
        A = scipy.sparse.linalg.LinearOperator(
            (n, n), matvec=lambda v: U @ (Ut @ v) + w_np * v, dtype=np.float64
        )
        M = scipy.sparse.diags(1.0 / (diag_uut + w_np))
        x, _ = scipy.sparse.linalg.cg(
            A, rhs.detach().cpu().numpy().astype(np.float64), rtol=1e-10, maxiter=2000, M=M
        )
        return torch.as_tensor(x, dtype=rhs.dtype, device=rhs.device)

    return solve
