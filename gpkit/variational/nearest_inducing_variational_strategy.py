"""SWSGP's variational strategy: each input is conditioned on its H nearest inducing points only."""

from __future__ import annotations

import torch
from gpytorch import settings
from gpytorch.distributions import MultivariateNormal
from gpytorch.utils.errors import CachingError
from gpytorch.utils.memoize import add_to_cache, cached, pop_from_cache
from gpytorch.variational import _VariationalStrategy
from linear_operator.operators import DenseLinearOperator, DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from gpkit.neighbors import knn
from gpkit.variational.gather import gather_rows
from gpkit.variational.local_cholesky_variational_distribution import LocalCholeskyVariationalDistribution

__all__ = ["NearestInducingVariationalStrategy"]


class NearestInducingVariationalStrategy(_VariationalStrategy):
    r"""Sparse-within-sparse strategy of Tran et al. (ICML 2021), unwhitened.

    Input :math:`\mathbf x_i` sees only its :math:`H` nearest inducing points :math:`A = N_i`:

    .. math::
        q(f_i) = \mathcal N\big(\mu(\mathbf x_i) + \mathbf k_{iA}\mathbf K_{AA}^{-1}(\mathbf m_A - \mu_A),\;
        k_{ii} - \mathbf k_{iA}\mathbf K_{AA}^{-1}(\mathbf K_{AA} - \mathbf S_A)\mathbf K_{AA}^{-1}\mathbf k_{Ai}\big)

    with :math:`q(\mathbf u_A) = \mathcal N(\mathbf m_A, \mathbf S_A)` from a
    :class:`~gpkit.variational.LocalCholeskyVariationalDistribution`. Under the paper's hierarchical prior
    the KL term is the average of the per-input terms
    :math:`\mathrm{KL}_i = \mathrm{KL}(q(\mathbf u_{N_i}) \,\|\, p(\mathbf u_{N_i}))`, so
    :meth:`kl_divergence` returns the mean of :math:`\mathrm{KL}_i` over the last training call's inputs:
    ``gpytorch.mlls.VariationalELBO`` (which divides it by ``num_data``) then gives an unbiased estimate of
    :math:`\frac1N\big(\sum_i \mathbb E_q \log p(y_i|f_i) - \frac1N \sum_i \mathrm{KL}_i\big)`.

    Neighbours come from :func:`gpkit.neighbors.knn` against the current inducing locations, on every call,
    unless ``neighbor_index`` is passed (e.g. cached for the training set). A call costs
    :math:`O(n H^3)` time and :math:`O(n H^2)` memory; nothing of size :math:`M \times M` is formed.

    In eval mode a batch of :math:`q > 1` inputs gets a joint Gaussian conditioned on the union :math:`U` of
    their neighbour sets (compacted: :math:`|U| \le \min(qH, M)`, no padding beyond the largest union in the
    batch); with :math:`q = 1` it is the input's own marginal. ``joint=True`` (what
    :meth:`gpkit.models.SWSGP.posterior` passes) always gives this joint and raises a ``ValueError`` when
    :math:`|U|` exceeds ``max_joint_inducing``; ``joint=None`` (a plain GPyTorch call, e.g. test-set metrics)
    returns per-input marginals (a diagonal covariance) when :math:`qH` exceeds ``max_joint_inducing``, as
    documented here, and ``joint=False`` always does.

    A GPyTorch ``_VariationalStrategy``: the maths is in :meth:`forward`, the distribution is initialised
    lazily from the prior on the first training call (``variational_params_initialized``), and the KL of
    the latest training call goes through GPyTorch's cache (:meth:`kl_divergence` pops it, so a stale value
    is never returned; switching train/eval clears it).

    :param model: the ``ApproximateGP`` whose ``forward`` gives the prior (mean and kernel).
    :param inducing_points: initial inducing locations, shape ``(M, d)``.
    :param variational_distribution: the mean and local factor, for the same ``M``.
    :param num_neighbors: active inducing points per input, :math:`H \le M` (default all :math:`M`).
    :param learn_inducing_locations: make the inducing locations a parameter.
    :param jitter_val: added to :math:`\mathbf K_{AA}`'s diagonal; default GPyTorch's variational jitter.
    :param max_joint_inducing: largest union size for a joint predictive covariance in eval mode (see above).
    :param sparse_grad: read the learned inducing locations row by row with a sparse gradient (for
        ``torch.optim.SparseAdam``), so a step does not touch all :math:`M` of them; the variational
        parameters follow the distribution's own ``sparse_grad``.
    """

    def __init__(
        self,
        model,
        inducing_points: Tensor,
        variational_distribution: LocalCholeskyVariationalDistribution,
        num_neighbors: int | None = None,
        learn_inducing_locations: bool = True,
        jitter_val: float | None = None,
        max_joint_inducing: int = 4096,
        sparse_grad: bool = False,
    ) -> None:
        if not torch.is_tensor(inducing_points) or inducing_points.dim() != 2:
            raise ValueError("inducing_points must be a tensor of shape (M, d)")
        m = inducing_points.size(0)
        if not isinstance(variational_distribution, LocalCholeskyVariationalDistribution):
            raise TypeError("variational_distribution must be a LocalCholeskyVariationalDistribution")
        if variational_distribution.num_inducing != m:
            raise ValueError(
                f"variational_distribution has {variational_distribution.num_inducing} inducing points, "
                f"inducing_points has {m}"
            )
        num_neighbors = m if num_neighbors is None else num_neighbors
        if not isinstance(num_neighbors, int) or not 1 <= num_neighbors <= m:
            raise ValueError(f"num_neighbors must be an int in [1, num_inducing={m}], got {num_neighbors!r}")
        super().__init__(model, inducing_points.detach(), variational_distribution, learn_inducing_locations, jitter_val)
        variational_distribution.to(inducing_points)
        variational_distribution.set_pattern(inducing_points)
        self.num_neighbors = num_neighbors
        self.learn_inducing_locations = learn_inducing_locations
        self.max_joint_inducing = max_joint_inducing
        self.sparse_grad = bool(sparse_grad)

    @property
    def local_distribution(self) -> LocalCholeskyVariationalDistribution:
        """The variational parameters' module (``variational_distribution`` is GPyTorch's: the distribution)."""
        return self._variational_distribution

    @property
    def num_inducing(self) -> int:
        return self.inducing_points.size(0)

    @property
    @cached(name="prior_distribution_memo")
    def prior_distribution(self) -> MultivariateNormal:
        r"""The prior :math:`p(\mathbf u)` at the inducing points (lazy kernel; nothing dense is formed)."""
        return self.model.forward(self.inducing_points)

    def neighbors(self, x: Tensor) -> Tensor:
        """Indices of the ``num_neighbors`` nearest inducing points, sorted ascending.

        :param x: inputs, shape ``(..., n, d)``.
        :return: shape ``(..., n, H)``.
        """
        flat = x.detach().reshape(-1, x.size(-1))
        _, index = knn(flat, self.inducing_points.detach(), self.num_neighbors)
        return index.to(x.device).sort(dim=-1).values.reshape(*x.shape[:-1], self.num_neighbors)

    @torch.no_grad()
    def reset_variational_distribution(self, scale: float = 0.1) -> None:
        """Set ``q(u)`` to the prior mean with a diagonal factor ``scale`` times the prior std (marks it
        initialised)."""
        z = self.inducing_points.detach().unsqueeze(-2)  # shape: (M, 1, d): only the prior's marginals
        prior = self.model.forward(z)
        self._variational_distribution.initialize_from_prior(prior.mean.squeeze(-1), prior.variance.squeeze(-1), scale)
        self.variational_params_initialized.fill_(1)

    def kl_divergence(self) -> Tensor:
        """Mean per-input KL over the inputs of the latest training-mode call (popped from the cache)."""
        try:
            return pop_from_cache(self, "kl_divergence_memo")
        except CachingError:
            raise RuntimeError("kl_divergence() needs a training-mode call of the model first") from None

    def __call__(self, x: Tensor, prior: bool = False, neighbor_index: Tensor | None = None,
                 joint: bool | None = None, **kwargs) -> MultivariateNormal:
        if prior:
            return self.model.forward(x, **kwargs)
        if self.training:
            self._clear_cache()
        if not self.variational_params_initialized.item():
            self.reset_variational_distribution()
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        return self.forward(x, self.inducing_points, None, None, neighbor_index=neighbor_index, joint=joint)

    def forward(self, x: Tensor, inducing_points: Tensor, inducing_values: Tensor | None = None,
                variational_inducing_covar=None, neighbor_index: Tensor | None = None,
                joint: bool | None = None, **kwargs) -> MultivariateNormal:
        r""":math:`q(\mathbf f)` at ``x`` (``(..., n, d)``); see the class docstring for ``joint``."""
        if x.size(-1) != inducing_points.size(-1):
            raise ValueError(f"x has {x.size(-1)} features, the inducing points {inducing_points.size(-1)}")
        if neighbor_index is not None and neighbor_index.shape != (*x.shape[:-1], self.num_neighbors):
            raise ValueError(f"neighbor_index must have shape {(*x.shape[:-1], self.num_neighbors)}")
        n = x.size(-2)
        marginal = self.training or n == 1 or joint is False
        if joint is None and n * self.num_neighbors > self.max_joint_inducing:
            marginal = True
        if self.num_neighbors == self.num_inducing:
            return self._shared(x, marginal)
        if neighbor_index is None:
            neighbor_index = self.neighbors(x)
        if marginal:
            # one active set per input: shape (..., n, 1, d) against (..., n, H)
            mean, covar, kl = self._conditional(x.unsqueeze(-2), neighbor_index, None, with_kl=self.training)
            if self.training:
                add_to_cache(self, "kl_divergence_memo", kl.mean(-1))
            return MultivariateNormal(mean.squeeze(-1), DiagLinearOperator(covar.squeeze(-1).squeeze(-1)))
        index, mask = _union(neighbor_index)
        if index.size(-1) > self.max_joint_inducing:
            raise ValueError(
                f"a joint posterior over these {n} inputs conditions on {index.size(-1)} inducing points, more than "
                f"max_joint_inducing={self.max_joint_inducing}; evaluate smaller q-batches, or X.unsqueeze(-2) for "
                "marginals"
            )
        mean, covar, _ = self._conditional(x, index, mask, with_kl=False)
        return MultivariateNormal(mean, DenseLinearOperator(covar))  # lazy: no Cholesky of a maybe-singular q x q

    def _shared(self, x: Tensor, marginal: bool) -> MultivariateNormal:
        """``H = M``: every input's active set is all inducing points, so one conditional serves all inputs
        (one :math:`M \\times M` Cholesky instead of one per input; the same values)."""
        m = self.num_inducing
        if not marginal and m > self.max_joint_inducing:
            raise ValueError(
                f"a joint posterior conditions on all {m} inducing points, more than max_joint_inducing="
                f"{self.max_joint_inducing}; evaluate smaller q-batches, or X.unsqueeze(-2) for marginals"
            )
        index = torch.arange(m, device=x.device).expand(*x.shape[:-2], m).contiguous()
        mean, covar, kl = self._conditional(x, index, None, with_kl=self.training, diag=marginal)
        if self.training:
            add_to_cache(self, "kl_divergence_memo", kl)  # every input has the same KL term
        if marginal:
            return MultivariateNormal(mean, DiagLinearOperator(covar))
        return MultivariateNormal(mean, DenseLinearOperator(covar))

    def _conditional(self, x: Tensor, index: Tensor, mask: Tensor | None, with_kl: bool, diag: bool = False):
        """Joint q(f) of inputs ``x`` (..., q, d) given active sets ``index`` (..., S) sorted ascending; with
        ``diag`` only the marginal variances (..., q) (nothing q x q is formed)."""
        s = index.size(-1)
        sparse = self.sparse_grad and self.learn_inducing_locations
        z = gather_rows(self.inducing_points, index, sparse)  # shape: (..., S, d)
        batch = torch.broadcast_shapes(z.shape[:-2], x.shape[:-2])
        full = torch.cat([z.expand(*batch, *z.shape[-2:]), x.expand(*batch, *x.shape[-2:])], dim=-2)
        prior = self.model.forward(full)
        mu = prior.mean  # shape: (..., S + q)
        lazy = prior.lazy_covariance_matrix
        k_aa, k_ax = lazy[..., :s, :s].to_dense(), lazy[..., :s, s:].to_dense()
        k_xx = lazy[..., s:, s:]
        k_xx = k_xx.diagonal(dim1=-2, dim2=-1) if diag else k_xx.to_dense()  # shape: (..., q) or (..., q, q)
        m_a, factor = self._variational_distribution.local(index, mask)  # shapes: (..., S), (..., S, S)
        diff = m_a - mu[..., :s]
        jitter = self.jitter_val or settings.variational_cholesky_jitter.value(k_aa.dtype)
        eye = torch.eye(s, dtype=k_aa.dtype, device=k_aa.device)
        if mask is not None:
            both = mask.unsqueeze(-1) & mask.unsqueeze(-2)
            k_aa = torch.where(both, k_aa, eye)
            k_ax = k_ax * mask.unsqueeze(-1)
            diff = diff * mask
        chol = psd_safe_cholesky(k_aa + jitter * eye)  # shape: (..., S, S)
        q = x.size(-2)
        # one triangular solve for C^-1 [K_Ax, L_A, m_A - mu_A]
        rhs = [k_ax, factor, diff.unsqueeze(-1)] if with_kl else [k_ax]
        solved = torch.linalg.solve_triangular(chol, torch.cat(rhs, -1), upper=False)
        w = solved[..., :q]  # C^-1 K_Ax, shape: (..., S, q)
        alpha = torch.linalg.solve_triangular(chol.mT, w, upper=True)  # K_AA^-1 K_Ax
        mean = mu[..., s:] + (alpha * diff.unsqueeze(-1)).sum(-2)  # shape: (..., q)
        la = factor.mT @ alpha  # shape: (..., S, q)
        if diag:
            covar = (k_xx - w.pow(2).sum(-2)).clamp_min(0) + la.pow(2).sum(-2)
        elif q == 1:
            covar = (k_xx - w.pow(2).sum(-2, keepdim=True)).clamp_min(0) + la.pow(2).sum(-2, keepdim=True)
        else:
            covar = k_xx - w.mT @ w + la.mT @ la
        if not with_kl:
            return mean, covar, None
        # KL(N(m, L L^T) || N(mu, C C^T)) per active set
        c_inv_l, c_inv_d = solved[..., q : q + s], solved[..., q + s :]
        logdet_k = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        logdet_s = 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        kl = 0.5 * (c_inv_l.pow(2).sum((-2, -1)) + c_inv_d.pow(2).sum((-2, -1)) - s + logdet_k - logdet_s)
        return mean, covar, kl


def _union(index: Tensor) -> tuple[Tensor, Tensor]:
    """Union of the rows of ``index`` (..., q, H): sorted ascending, padded (by repeating its largest entry) to
    the largest union size S in the batch, and a mask that is ``False`` at padding; shapes (..., S)."""
    flat = index.reshape(*index.shape[:-2], -1).sort(dim=-1).values
    first = torch.ones_like(flat, dtype=torch.bool)
    first[..., 1:] = flat[..., 1:] != flat[..., :-1]
    count = first.sum(-1, keepdim=True)  # shape: (..., 1)
    size = int(count.max())
    big = torch.iinfo(flat.dtype).max
    compact = torch.where(first, flat, torch.full_like(flat, big)).sort(dim=-1).values[..., :size]
    mask = torch.arange(size, device=flat.device) < count
    largest = compact.gather(-1, count - 1)
    return torch.where(mask, compact, largest), mask
