r"""Dual (site) parameterisation of a sparse variational GP (Adam et al., NeurIPS 2021).

``q(u)`` is not stored as a mean and a Cholesky factor but as the data's site parameters projected onto
the inducing points :math:`\mathbf Z`:

.. math::
    \boldsymbol\lambda_1 = \sum_i \mathbf k_{\mathbf Z}(\mathbf x_i)\,\tilde\lambda_{1,i}, \qquad
    \boldsymbol\Lambda_2 = \sum_i \mathbf k_{\mathbf Z}(\mathbf x_i)\,\beta_i\,\mathbf k_{\mathbf Z}(\mathbf x_i)^\top,

with :math:`\mathbf R = \mathbf K + \boldsymbol\Lambda_2` (:math:`\mathbf K = \mathbf K_{\mathbf{ZZ}}`):
:math:`q(\mathbf u) = \mathcal N(\boldsymbol\mu_{\mathbf Z} + \mathbf K\mathbf R^{-1}\boldsymbol\lambda_1,\;
\mathbf K\mathbf R^{-1}\mathbf K)`. The sites describe the centred function :math:`f - \mu`.

Everything is computed in whitened form, :math:`\mathbf K = \mathbf L\mathbf L^\top`,
:math:`\mathbf B = \mathbf I + \mathbf L^{-1}\boldsymbol\Lambda_2\mathbf L^{-\top}` (eigenvalues >= 1), so that
the whitened mean is :math:`\mathbf m = \mathbf B^{-1}\mathbf L^{-1}\boldsymbol\lambda_1` and the whitened
covariance :math:`\mathbf B^{-1}`; no solve with the possibly ill-conditioned :math:`\mathbf R` is formed.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from gpytorch import settings
from gpytorch.distributions import MultivariateNormal
from gpytorch.utils.memoize import add_to_cache, cached, clear_cache_hook
from gpytorch.variational import _VariationalDistribution, _VariationalStrategy
from linear_operator.operators import DenseLinearOperator, DiagLinearOperator, LinearOperator, MatmulLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

__all__ = ["DualVariationalDistribution", "DualVariationalStrategy"]


class DualVariationalDistribution(_VariationalDistribution):
    r"""The dual parameters :math:`\boldsymbol\lambda_1` (``*batch x M``) and :math:`\boldsymbol\Lambda_2`
    (``*batch x M x M``) of :class:`DualVariationalStrategy`.

    They are buffers, not parameters: they are set by site updates (E-steps), never by a gradient optimizer,
    so that a hyperparameter step differentiates through the kernel with the duals held fixed. The
    distribution over :math:`\mathbf u` needs the prior, so :meth:`forward` takes it as an argument.

    :param num_inducing_points: :math:`M`.
    :param batch_shape: batch of independent GPs (e.g. one per class).
    """

    def __init__(
        self,
        num_inducing_points: int,
        batch_shape: torch.Size | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        batch_shape = torch.Size([]) if batch_shape is None else torch.Size(batch_shape)
        super().__init__(num_inducing_points, batch_shape)
        m = num_inducing_points
        self.register_buffer("lambda1", torch.zeros(*batch_shape, m, dtype=dtype, device=device))
        self.register_buffer("Lambda2", torch.zeros(*batch_shape, m, m, dtype=dtype, device=device))

    @property
    def dtype(self) -> torch.dtype:
        return self.lambda1.dtype

    @property
    def device(self) -> torch.device:
        return self.lambda1.device

    def set_duals(self, lambda1: Tensor, Lambda2: Tensor) -> None:
        """Replace the duals (any batch shape that broadcasts against the strategy's)."""
        m = self.num_inducing_points
        if lambda1.shape[-1:] != (m,) or Lambda2.shape[-2:] != (m, m):
            raise ValueError(f"duals must have shapes (..., {m}) and (..., {m}, {m})")
        self.lambda1 = lambda1.detach().to(self.lambda1)
        self.Lambda2 = (0.5 * (Lambda2 + Lambda2.mT)).detach().to(self.Lambda2)

    def initialize_variational_distribution(self, prior_dist: MultivariateNormal) -> None:
        """No data yet: zero duals, so ``q(u)`` is the prior."""
        self.lambda1.zero_()
        self.Lambda2.zero_()

    def forward(self, prior_dist: MultivariateNormal) -> MultivariateNormal:
        r""":math:`q(\mathbf u)` given the prior :math:`p(\mathbf u) = \mathcal N(\boldsymbol\mu_Z, \mathbf K)`."""
        chol = psd_safe_cholesky(prior_dist.covariance_matrix)
        chol_b, m_w = whitened_duals(chol, self.lambda1, self.Lambda2)
        mean = prior_dist.mean + (chol @ m_w.unsqueeze(-1)).squeeze(-1)
        root = torch.linalg.solve_triangular(chol_b, chol.mT, upper=False).mT  # L C^-T
        return MultivariateNormal(mean, DenseLinearOperator(root @ root.mT))

    def __call__(self, prior_dist: MultivariateNormal) -> MultivariateNormal:
        return self.forward(prior_dist)


def whitened_duals(chol: Tensor, lambda1: Tensor, Lambda2: Tensor) -> tuple[Tensor, Tensor]:
    """Cholesky factor of B = I + L^-1 Λ2 L^-T and the whitened mean B^-1 L^-1 λ1."""
    m = chol.size(-1)
    a = torch.linalg.solve_triangular(chol, Lambda2, upper=False)  # L^-1 Λ2
    a = torch.linalg.solve_triangular(chol, a.mT, upper=False)  # L^-1 Λ2 L^-T (Λ2 symmetric)
    eye = torch.eye(m, dtype=chol.dtype, device=chol.device)
    chol_b = torch.linalg.cholesky(eye + 0.5 * (a + a.mT))  # shape: (*batch, M, M)
    b = torch.linalg.solve_triangular(chol, lambda1.unsqueeze(-1), upper=False)
    m_w = torch.cholesky_solve(b, chol_b).squeeze(-1)  # shape: (*batch, M)
    return chol_b, m_w


def project_sites(k_zx: Tensor, site1: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`\mathbf K_{\mathbf Zx}\tilde{\boldsymbol\lambda}_1` and :math:`\mathbf K_{\mathbf Zx}\,
    \mathrm{diag}(\boldsymbol\beta)\,\mathbf K_{x\mathbf Z}` from ``K_Zx`` (``*batch x M x n``) and the sites
    (``*batch x n``): :meth:`DualVariationalStrategy.project_sites` for a cross-covariance already evaluated."""
    return (k_zx @ site1.unsqueeze(-1)).squeeze(-1), (k_zx * beta.unsqueeze(-2)) @ k_zx.mT


class DualVariationalStrategy(_VariationalStrategy):
    r"""Sparse variational GP whose :math:`q(\mathbf u)` is given by dual (site) parameters projected on
    the inducing points (t-SVGP, Adam et al. 2021); see the module docstring for the formulas.

    Predictions: :math:`\mu(\mathbf x) + \mathbf w^\top\mathbf m` and
    :math:`k_{xx} - \mathbf w^\top\mathbf w + \mathbf w^\top\mathbf B^{-1}\mathbf w` with
    :math:`\mathbf w = \mathbf L^{-1}\mathbf k_{\mathbf Z x}`, i.e. :math:`\mathbf k_{x\mathbf Z}\mathbf R^{-1}
    \boldsymbol\lambda_1` and :math:`k_{xx} - \mathbf k_{x\mathbf Z}\mathbf K^{-1}\mathbf k_{\mathbf Z x} +
    \mathbf k_{x\mathbf Z}\mathbf R^{-1}\mathbf k_{\mathbf Z x}`. KL:
    :math:`\tfrac12[\log|\mathbf R| - \log|\mathbf K| + \mathrm{tr}(\mathbf R^{-1}\mathbf K) - M +
    \boldsymbol\lambda_1^\top\mathbf R^{-1}\mathbf K\mathbf R^{-1}\boldsymbol\lambda_1]`.

    Both are differentiable in the kernel hyperparameters and the inducing locations while the duals are
    fixed buffers. The duals are set by site updates: :meth:`project_sites` turns per-datum sites into their
    projections, :meth:`marginals` gives the :math:`q(f_i)` they are computed from (see
    :mod:`gpkit.variational.dual_sites`), and :meth:`move_inducing_points` carries the duals to new inducing
    locations. The duals may carry an extra batch shape (e.g. after BoTorch fantasies); it broadcasts
    against the kernel's.

    :param model: the ``ApproximateGP`` whose ``forward`` gives the prior (mean and kernel).
    :param inducing_points: ``M x d`` (or ``*batch x M x d``).
    :param variational_distribution: a :class:`DualVariationalDistribution` for the same ``M``.
    :param learn_inducing_locations: make the inducing locations a parameter.
    :param jitter_val: added to :math:`\mathbf K`'s diagonal; default GPyTorch's variational jitter.
    """

    def __init__(
        self,
        model,
        inducing_points: Tensor,
        variational_distribution: DualVariationalDistribution,
        learn_inducing_locations: bool = True,
        jitter_val: float | None = None,
    ) -> None:
        if not isinstance(variational_distribution, DualVariationalDistribution):
            raise TypeError("variational_distribution must be a DualVariationalDistribution")
        if inducing_points.size(-2) != variational_distribution.num_inducing_points:
            raise ValueError(
                f"inducing_points has {inducing_points.size(-2)} rows, the distribution "
                f"{variational_distribution.num_inducing_points} inducing points"
            )
        super().__init__(model, inducing_points, variational_distribution, learn_inducing_locations, jitter_val)
        self.variational_params_initialized.fill_(1)  # zero duals = the prior

    # ------------------------------------------------------------------------------------------ caches
    # In eval mode with GPyTorch's ``settings.detach_test_caches`` on (its default), the prior at Z and the factors
    # of q(u) are computed without gradients and kept across predictions (GPyTorch's rule: dropped on ``train()``,
    # on the switch to eval, and with new duals or inducing points; change hyperparameters in train mode or call
    # ``train()``/``eval()`` after changing them in eval mode). Otherwise (training, or the setting off) they are
    # recomputed, with gradients, at every call.
    def keeps_test_caches(self) -> bool:
        """Whether the prior at Z and the factors of q(u) are cached across predictions (see above)."""
        return not self.training and settings.detach_test_caches.on()

    def set_duals(self, lambda1: Tensor, Lambda2: Tensor, prior: MultivariateNormal | None = None) -> None:
        """Replace the duals and drop the cached factors.

        :param prior: what :attr:`prior_distribution` is at the current inducing points and hyperparameters (jitter
            included), when the caller has it already, e.g. a copy of an unchanged model or a block of a larger prior
            evaluation (see :meth:`jittered_prior`): it becomes the cached prior, so the next prediction makes no kernel
            call at the inducing points. Without gradients; dropped like any cache (``train()``, new duals).
        """
        self._variational_distribution.set_duals(lambda1, Lambda2)
        self._clear_cache()
        if prior is not None:
            m = self.inducing_points.size(-2)
            if prior.event_shape != (m,):
                raise ValueError(f"prior must be over the {m} inducing points, got event shape {tuple(prior.event_shape)}")
            add_to_cache(self, "prior_distribution_memo", prior)

    def jittered_prior(self, mean: Tensor, covar: Tensor) -> MultivariateNormal:
        """:attr:`prior_distribution` from the prior mean (``*batch x M``) and covariance (``*batch x M x M``) at the
        inducing points, e.g. blocks of a larger prior evaluation: symmetrised, with the strategy's jitter added."""
        eye = torch.eye(covar.size(-1), dtype=covar.dtype, device=covar.device)
        return MultivariateNormal(mean, DenseLinearOperator(0.5 * (covar + covar.mT) + self.jitter_val * eye))

    @property
    def duals(self) -> tuple[Tensor, Tensor]:
        """``(lambda1, Lambda2)``."""
        return self._variational_distribution.lambda1, self._variational_distribution.Lambda2

    @property
    @cached(name="prior_distribution_memo")
    def prior_distribution(self) -> MultivariateNormal:
        with torch.no_grad() if self.keeps_test_caches() else nullcontext():
            return self._prior_distribution()

    def _prior_distribution(self) -> MultivariateNormal:
        prior = self.model.forward(self.inducing_points)
        covar = prior.lazy_covariance_matrix.to_dense()
        eye = torch.eye(covar.size(-1), dtype=covar.dtype, device=covar.device)
        return MultivariateNormal(prior.mean, DenseLinearOperator(covar + self.jitter_val * eye))

    @cached(name="dual_terms_memo")
    def _terms(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(L, C, m, B^-1 - I)``: chol of K (+ jitter), chol of B, the whitened mean and the middle factor of the
        predictive covariance (``None`` in training)."""
        with torch.no_grad() if self.keeps_test_caches() else nullcontext():
            chol = psd_safe_cholesky(self.prior_distribution.covariance_matrix)
            lambda1, Lambda2 = self.duals
            chol_b, m_w = whitened_duals(chol, lambda1, Lambda2)
            if self.training:  # the middle factor serves joint predictions (eval mode) only
                return chol, chol_b, m_w, None
            eye = torch.eye(chol_b.size(-1), dtype=chol_b.dtype, device=chol_b.device)
            return chol, chol_b, m_w, torch.cholesky_inverse(chol_b) - eye

    @property
    @cached(name="variational_distribution_memo")
    def variational_distribution(self) -> MultivariateNormal:
        return self._variational_distribution(self.prior_distribution)

    def kl_divergence(self) -> Tensor:
        r""":math:`\mathrm{KL}(q(\mathbf u)\,\|\,p(\mathbf u))`, batch shape of the duals and kernel."""
        _, chol_b, m_w, _ = self._terms()
        m = chol_b.size(-1)
        inv_c = torch.linalg.solve_triangular(
            chol_b, torch.eye(m, dtype=chol_b.dtype, device=chol_b.device), upper=False
        )
        logdet_b = 2 * chol_b.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return 0.5 * (inv_c.pow(2).sum((-2, -1)) + m_w.pow(2).sum(-1) - m + logdet_b)

    # ------------------------------------------------------------------------------------- predictions
    def _cross(self, x: Tensor) -> tuple[Tensor, Tensor, LinearOperator]:
        """Prior mean at x, K_Zx and the prior covariance at x, from one prior evaluation at [Z; x]."""
        z = self.inducing_points
        batch = torch.broadcast_shapes(z.shape[:-2], x.shape[:-2])
        z, x = z.expand(*batch, *z.shape[-2:]), x.expand(*batch, *x.shape[-2:])
        m = z.size(-2)
        full = self.model.forward(torch.cat([z, x], dim=-2))
        covar = full.lazy_covariance_matrix
        if x.size(-2) <= m:  # small x (BO's q-batches): the whole (M + n)^2 block at once, cheaper than slicing
            covar = covar.to_dense()
            return full.mean[..., m:], covar[..., :m, m:], DenseLinearOperator(covar[..., m:, m:])
        k_zx = covar[..., :m, m:].to_dense()  # shape: (*batch, M, n)
        return full.mean[..., m:], k_zx, covar[..., m:, m:]

    def prior_cross(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The prior mean at ``x`` (``*batch x n x d``) and :math:`\mathbf K_{\mathbf Zx}` (``*batch x M x n``)."""
        mean_x, k_zx, _ = self._cross(x)
        return mean_x, k_zx

    def __call__(self, x: Tensor, prior: bool = False, diag: bool = True, **kwargs) -> MultivariateNormal:
        if prior:
            return self.model.forward(x, **kwargs)
        if not self.keeps_test_caches():
            self._clear_cache()
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.size(-1) != self.inducing_points.size(-1):
            raise ValueError(f"x has {x.size(-1)} features, the inducing points {self.inducing_points.size(-1)}")
        chol, chol_b, m_w, middle = self._terms()  # middle: B^-1 - I, shape: (*batch, M, M)
        mean_x, k_zx, k_xx = self._cross(x)
        w = torch.linalg.solve_triangular(chol, k_zx, upper=False)  # L^-1 K_Zx, shape: (*batch, M, n)
        batch = torch.broadcast_shapes(w.shape[:-2], chol_b.shape[:-2])  # duals may carry fantasy batches
        w = w.expand(*batch, *w.shape[-2:])
        mean = mean_x + (w * m_w.unsqueeze(-1)).sum(-2)
        if self.training and diag:
            v = torch.linalg.solve_triangular(chol_b, w, upper=False)  # C^-1 w
            k_diag = k_xx.diagonal(dim1=-2, dim2=-1)
            var = (k_diag - w.pow(2).sum(-2)).clamp_min(0) + v.pow(2).sum(-2)
            return MultivariateNormal(mean, DiagLinearOperator(var))
        if middle is None:  # training, joint covariance asked for
            middle = torch.cholesky_inverse(chol_b) - torch.eye(chol_b.size(-1), dtype=w.dtype, device=w.device)
        if x.size(-2) <= w.size(-2):  # n <= M (e.g. BO's q-batches): dense, at no more than the cost of w
            covar = k_xx.to_dense() + w.mT @ (middle @ w)
            return MultivariateNormal(mean, DenseLinearOperator(covar.expand(*batch, *covar.shape[-2:])))
        if k_xx.shape[:-2] != batch:
            k_xx = k_xx.expand(*batch, *k_xx.shape[-2:])
        covar = k_xx + MatmulLinearOperator(w.mT, middle @ w)
        return MultivariateNormal(mean, covar)

    @torch.no_grad()
    def marginals(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Means and variances of :math:`q(f_i)` and the prior mean at ``x`` (no gradient).

        :param x: ``*batch x n x d``.
        :return: ``(mean, variance, prior_mean)``, each ``*batch x n``.
        """
        self._clear_cache()  # hyperparameters may have moved since the last call
        chol, chol_b, m_w, _ = self._terms()
        mean_x, k_zx, k_xx = self._cross(x)
        w = torch.linalg.solve_triangular(chol, k_zx, upper=False)
        v = torch.linalg.solve_triangular(chol_b, w, upper=False)
        k_diag = k_xx.diagonal(dim1=-2, dim2=-1)
        var = (k_diag - w.pow(2).sum(-2)).clamp_min(0) + v.pow(2).sum(-2)
        return mean_x + (w * m_w.unsqueeze(-1)).sum(-2), var, mean_x

    # ----------------------------------------------------------------------------------- site updates
    @torch.no_grad()
    def project_sites(self, x: Tensor, site1: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        r"""Project per-datum sites onto the inducing points: :math:`\mathbf K_{\mathbf Zx}\tilde{\boldsymbol
        \lambda}_1` and :math:`\mathbf K_{\mathbf Zx}\,\mathrm{diag}(\boldsymbol\beta)\,\mathbf K_{x\mathbf Z}`.

        :param x: ``n x d`` inputs (or ``*batch x n x d``).
        :param site1: ``*batch x n`` first site parameters (of the centred function).
        :param beta: ``*batch x n`` site precisions (>= 0).
        :return: ``(*batch x M, *batch x M x M)``.
        """
        _, k_zx, _ = self._cross(x)
        return project_sites(k_zx, site1, beta)

    @torch.no_grad()
    def move_inducing_points(
        self,
        new_inducing_points: Tensor,
        duals: tuple[Tensor, Tensor] | None = None,
        prior: MultivariateNormal | None = None,
    ) -> None:
        r"""Move the inducing points to ``new_inducing_points`` (``M' x d``, any :math:`M'`) and carry the
        duals along with :math:`\mathbf A = \mathbf K_{\mathrm{old}}^{-1}\mathbf K(\mathbf Z_{\mathrm{old}},
        \mathbf Z_{\mathrm{new}})`: :math:`\boldsymbol\lambda_1 \leftarrow \mathbf A^\top\boldsymbol\lambda_1`,
        :math:`\boldsymbol\Lambda_2 \leftarrow \mathbf A^\top\boldsymbol\Lambda_2\mathbf A` (exact for sites at
        inputs in the span of the old inducing points). A changed :math:`M'` replaces the inducing-location
        parameter (rebuild any optimizer holding it).

        :param duals: the duals already carried to ``new_inducing_points`` (e.g. by :meth:`transport_map`), to
            skip carrying them again.
        :param prior: the :attr:`prior_distribution` at ``new_inducing_points`` (see :meth:`set_duals`).
        """
        lambda1, Lambda2 = self.transport(new_inducing_points, *self.duals) if duals is None else duals
        new_inducing_points = new_inducing_points.to(self.inducing_points)
        if new_inducing_points.shape == self.inducing_points.shape:
            self.inducing_points.data.copy_(new_inducing_points)
        else:
            if isinstance(self.inducing_points, torch.nn.Parameter):
                self.inducing_points = torch.nn.Parameter(new_inducing_points.clone())
            else:
                self.inducing_points = new_inducing_points.clone()
            self._variational_distribution.num_inducing_points = new_inducing_points.size(-2)
            self._variational_distribution.lambda1 = lambda1.new_zeros(lambda1.shape)
            self._variational_distribution.Lambda2 = Lambda2.new_zeros(Lambda2.shape)
        self.set_duals(lambda1, Lambda2, prior=prior)

    @torch.no_grad()
    def transport(
        self, new_inducing_points: Tensor, lambda1: Tensor, Lambda2: Tensor, transport_map: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Duals ``(lambda1, Lambda2)`` projected on the current inducing points, re-expressed on
        ``new_inducing_points`` (``M' x d``; see :meth:`move_inducing_points`); nothing is changed.

        :param transport_map: :meth:`transport_map` of ``new_inducing_points``, when already computed (one map
            serves several sets of duals).
        """
        a = self.transport_map(new_inducing_points) if transport_map is None else transport_map
        return (a.mT @ lambda1.unsqueeze(-1)).squeeze(-1), a.mT @ Lambda2 @ a

    @torch.no_grad()
    def transport_map(self, new_inducing_points: Tensor) -> Tensor:
        r""":math:`\mathbf A = \mathbf K_{\mathrm{old}}^{-1}\mathbf K(\mathbf Z_{\mathrm{old}}, \mathbf Z_{\mathrm{new}})`
        (``*batch x M x M'``), which carries duals as :math:`\mathbf A^\top\boldsymbol\lambda_1`,
        :math:`\mathbf A^\top\boldsymbol\Lambda_2\mathbf A` (one map for several sets of duals)."""
        if new_inducing_points.dim() < 2 or new_inducing_points.size(-1) != self.inducing_points.size(-1):
            raise ValueError(
                f"new_inducing_points must have shape (M', {self.inducing_points.size(-1)}), "
                f"got {tuple(new_inducing_points.shape)}"
            )
        self._clear_cache()
        chol = psd_safe_cholesky(self.prior_distribution.covariance_matrix)
        _, k_old_new, _ = self._cross(new_inducing_points.to(self.inducing_points))
        return torch.cholesky_solve(k_old_new, chol)  # K_old^-1 K(Z_old, Z_new), shape: (*batch, M, M')

    def _clear_cache(self) -> None:
        clear_cache_hook(self)

    def clear_cache(self) -> None:
        """Drop the cached prior and dual factors (e.g. before ``copy.deepcopy``)."""
        self._clear_cache()
