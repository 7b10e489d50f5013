"""Variational parameters of SWSGP: a global mean and a sparse, local Cholesky factor."""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.variational import _VariationalDistribution
from linear_operator.operators import CholLinearOperator, TriangularLinearOperator
from torch import Tensor

from gpkit.neighbors import previous_knn
from gpkit.variational.gather import gather_rows

__all__ = ["LocalCholeskyVariationalDistribution"]

# largest table (active sets x M entries) that _positions builds; beyond it, a binary search
_TABLE_SIZE = 2**22


class LocalCholeskyVariationalDistribution(_VariationalDistribution):
    r"""Mean and sparse lower-triangular factor from which SWSGP builds each input's :math:`q(\mathbf u_A)`.

    The parameters are a mean :math:`\mathbf m \in \mathbb R^M` and a lower-triangular
    :math:`\mathbf L \in \mathbb R^{M \times M}` that is stored sparsely: row :math:`j` holds its diagonal
    (positive, kept as a log) and at most ``num_factor_neighbors`` entries at the nearest inducing points
    with a smaller index (``gpkit.neighbors.previous_knn`` on the inducing locations). Memory is
    :math:`O(M K)` for :math:`K` = ``num_factor_neighbors``.

    For an active set :math:`A` (sorted ascending), the distribution used by an input is

    .. math::
        q(\mathbf u_A) = \mathcal N(\mathbf m_A, \mathbf L_{AA} \mathbf L_{AA}^\top),

    where :math:`\mathbf L_{AA}` is the :math:`A \times A` sub-block of :math:`\mathbf L`. This is the
    parameterisation of the public TF2 re-implementation of SWSGP (BahramJafrasteh/IDSGP). Why: under the
    hierarchical prior the bound only involves, for each input, a Gaussian over its own active set, compared
    with :math:`p(\mathbf u_A)` in its own KL term, so the per-input Gaussians need not be marginals of one
    joint Gaussian; and :math:`\mathbf L_{AA}` is triangular with a positive diagonal, so
    :math:`\mathbf S_A` is positive definite, :math:`\log|\mathbf S_A|` is a sum of logs and both cost
    :math:`O(|A|^2)` look-ups. It is *not* the marginal :math:`(\mathbf L\mathbf L^\top)_{AA}` of a single
    global Gaussian; that marginal would need the rows of :math:`\mathbf L` over all columns, i.e.
    :math:`O(|A| K)` columns per input. When :math:`A` is every inducing point and
    :math:`K = M - 1` both coincide, and the model is the unwhitened SVGP with Cholesky factor
    :math:`\mathbf L`.

    The sparsity pattern is fixed when it is set (the learned values are attached to it); it does not
    follow the inducing locations during training. :class:`~gpkit.variational.NearestInducingVariationalStrategy`
    sets it from its inducing points when it is built.

    As a GPyTorch ``_VariationalDistribution``, calling it returns the global Gaussian
    :math:`\mathcal N(\mathbf m, \mathbf L\mathbf L^\top)` (a dense :math:`M \times M` factor: for checks on
    small problems); the strategy itself reads only the blocks it needs (:meth:`local`).

    Everything inducing point :math:`j` owns (:math:`m_j`, :math:`\log L_{jj}`, row :math:`j`'s off-diagonal
    entries) is one row of the parameter ``local_rows`` (``M x (K + 2)``); ``variational_mean``,
    ``log_diag`` and ``off_diag`` are views of its columns. An active set reads only its own rows, so with
    ``sparse_grad=True`` the gradient is a sparse tensor over those rows and ``torch.optim.SparseAdam``
    updates them in :math:`O(|A| K)` instead of :math:`O(M K)` per step (forward values are unchanged).

    :param num_inducing_points: number of inducing points :math:`M`.
    :param num_factor_neighbors: off-diagonal entries per row of :math:`\mathbf L` (:math:`K`); default
        :math:`M - 1` (a complete factor).
    :param batch_shape: must be empty (no batched models).
    :param sparse_grad: give ``local_rows`` sparse gradients (for ``torch.optim.SparseAdam``).
    :param dtype: parameter dtype.
    :param device: parameter device.
    """

    def __init__(
        self,
        num_inducing_points: int,
        num_factor_neighbors: int | None = None,
        batch_shape: torch.Size = torch.Size([]),  # noqa: B008 (GPyTorch's signature)
        sparse_grad: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        num_inducing = num_inducing_points
        if not isinstance(num_inducing, int) or num_inducing < 1:
            raise ValueError(f"num_inducing_points must be a positive int, got {num_inducing!r}")
        if len(batch_shape) != 0:
            raise ValueError(f"batch_shape must be empty (no batched SWSGP models), got {tuple(batch_shape)}")
        super().__init__(num_inducing, batch_shape=torch.Size([]))
        if num_factor_neighbors is None:
            num_factor_neighbors = num_inducing - 1
        if not isinstance(num_factor_neighbors, int) or num_factor_neighbors < 0:
            raise ValueError(f"num_factor_neighbors must be a non-negative int, got {num_factor_neighbors!r}")
        k = min(num_factor_neighbors, num_inducing - 1)
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.num_factor_neighbors = k
        self.sparse_grad = bool(sparse_grad)
        # row j: [m_j, log L_jj, L_j,factor_index[j, 0], ..., L_j,factor_index[j, K-1]]
        self.register_parameter("local_rows", torch.nn.Parameter(torch.zeros(num_inducing, k + 2, **kw)))
        self.register_buffer("factor_index", torch.zeros(num_inducing, k, dtype=torch.long, device=device))
        self.register_buffer("factor_mask", torch.zeros(num_inducing, k, dtype=torch.bool, device=device))
        # factor_index with -1 at padding slots (a column no active set contains)
        self.register_buffer("_cols", torch.full((num_inducing, k), -1, dtype=torch.long, device=device))

    @property
    def num_inducing(self) -> int:
        """:math:`M` (GPyTorch's ``num_inducing_points``)."""
        return self.num_inducing_points

    @property
    def variational_mean(self) -> Tensor:
        r"""Mean :math:`\mathbf m`, shape ``(M,)`` (a view of ``local_rows``)."""
        return self.local_rows[:, 0]

    @property
    def log_diag(self) -> Tensor:
        r""":math:`\log \mathrm{diag}(\mathbf L)`, shape ``(M,)`` (a view of ``local_rows``)."""
        return self.local_rows[:, 1]

    @property
    def off_diag(self) -> Tensor:
        """Stored off-diagonal entries ``L[j, factor_index[j]]``, shape ``(M, K)`` (a view of ``local_rows``)."""
        return self.local_rows[:, 2:]

    def set_pattern(self, inducing_points: Tensor) -> None:
        """Set the off-diagonal pattern: row j gets the ``num_factor_neighbors`` nearest of ``Z[:j]``.

        :param inducing_points: inducing locations, shape ``(M, d)``.
        """
        if self.num_factor_neighbors == 0:
            self._set_index(self.factor_index, self.factor_mask)
            return
        index, mask = previous_knn(inducing_points.detach(), self.num_factor_neighbors)
        self._set_index(index.to(self.factor_index.device), mask.to(self.factor_mask.device))

    def _set_index(self, index: Tensor, mask: Tensor) -> None:
        # shape: (M, K) each
        rows = torch.arange(self.num_inducing, device=index.device).unsqueeze(-1).expand_as(index)
        if bool((mask & (index >= rows)).any()):
            raise ValueError("factor pattern must be strictly lower triangular (col < row)")
        self.factor_index.copy_(torch.where(mask, index, torch.zeros_like(index)))
        self.factor_mask.copy_(mask)
        self._cols.copy_(torch.where(mask, index, torch.full_like(index, -1)))

    def forward(self) -> MultivariateNormal:
        r"""The global Gaussian :math:`\mathcal N(\mathbf m, \mathbf L\mathbf L^\top)` (dense factor)."""
        return MultivariateNormal(self.variational_mean, CholLinearOperator(TriangularLinearOperator(self.to_dense())))

    def initialize_variational_distribution(self, prior_dist: MultivariateNormal, scale: float = 0.1) -> None:
        """GPyTorch's initialisation hook: :meth:`initialize_from_prior` with the prior's mean and variance."""
        self.initialize_from_prior(prior_dist.mean.detach(), prior_dist.variance.detach(), scale)

    def initialize_from_prior(self, prior_mean: Tensor, prior_var: Tensor, scale: float = 0.1) -> None:
        """Start from the prior mean and a diagonal factor ``scale * sqrt(prior_var)`` (no correlations).

        :param prior_mean: prior mean at the inducing points, shape ``(M,)``.
        :param prior_var: prior variance at the inducing points, shape ``(M,)``.
        :param scale: ratio of the initial posterior standard deviation to the prior one.
        """
        with torch.no_grad():
            self.variational_mean.copy_(prior_mean)
            self.log_diag.copy_(torch.log(scale * prior_var.clamp_min(1e-12).sqrt()))
            self.off_diag.zero_()

    def local(self, index: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Mean :math:`\mathbf m_A` and sub-block :math:`\mathbf L_{AA}` for active sets ``A = index``.

        Reads only the rows ``index`` of ``local_rows`` (one gather, sparse gradient with ``sparse_grad``).

        :param index: active sets sorted ascending in the last dim, shape ``(..., S)``.
        :param mask: ``False`` marks padding slots (given identity rows/columns), shape ``(..., S)``.
        :return: ``(mean (..., S), factor (..., S, S))``; the factors are lower triangular.
        """
        s, k = index.size(-1), self.num_factor_neighbors
        rows = gather_rows(self.local_rows, index, self.sparse_grad)  # shape: (..., S, K + 2)
        diag = rows[..., 1].exp()  # shape: (..., S)
        if mask is not None:
            diag = torch.where(mask, diag, torch.ones_like(diag))
        if k == 0 or s < 2:
            return rows[..., 0], torch.diag_embed(diag)
        # stored entry (a, slot) sits in column b of the block if A[b] == its column
        cols = self._cols[index].reshape(*index.shape[:-1], s * k)  # shape: (..., S K)
        b, found = _positions(index, cols, self.num_inducing)
        a = torch.arange(s, device=index.device).repeat_interleave(k)  # shape: (S K,)
        if mask is not None:
            found = found & mask[..., a]
        values = torch.where(found, rows[..., 2:].reshape(cols.shape), torch.zeros_like(cols, dtype=rows.dtype))
        # entries not found add 0 to the diagonal slot a * S + a
        target = a * s + torch.where(found, b, a)
        off = torch.zeros(*cols.shape[:-1], s * s, dtype=rows.dtype, device=rows.device).scatter_add(
            -1, target.expand_as(cols), values
        )
        return rows[..., 0], off.view(*cols.shape[:-1], s, s) + torch.diag_embed(diag)

    def factor(self, index: Tensor, mask: Tensor | None = None) -> Tensor:
        r"""Sub-block :math:`\mathbf L_{AA}` for active sets ``A = index`` (see :meth:`local`), ``(..., S, S)``."""
        return self.local(index, mask)[1]

    def mean(self, index: Tensor) -> Tensor:
        """Variational mean at the inducing indices ``index`` (any shape)."""
        return gather_rows(self.local_rows, index, self.sparse_grad)[..., 0]

    def to_dense(self) -> Tensor:
        """The full factor as a dense ``M x M`` matrix (for checks on small problems only)."""
        return self.factor(torch.arange(self.num_inducing, device=self.log_diag.device))

    def load_dense(self, chol: Tensor) -> None:
        """Copy a dense lower-triangular factor into the stored entries (needs a complete pattern).

        :param chol: lower-triangular ``M x M`` matrix with a positive diagonal.
        """
        m = self.num_inducing
        if chol.shape != (m, m):
            raise ValueError(f"chol must have shape ({m}, {m}), got {tuple(chol.shape)}")
        rows = torch.arange(m, device=chol.device).unsqueeze(-1).expand_as(self.factor_index)
        outside = chol.tril(-1).clone()
        outside[rows[self.factor_mask], self.factor_index[self.factor_mask]] = 0
        if bool(outside.ne(0).any()):
            raise ValueError("chol has off-diagonal entries outside the stored sparsity pattern")
        with torch.no_grad():
            self.log_diag.copy_(chol.diagonal().log())
            values = chol[rows, self.factor_index]
            self.off_diag.copy_(torch.where(self.factor_mask, values, torch.zeros_like(values)))


def _positions(index: Tensor, cols: Tensor, num_inducing: int) -> tuple[Tensor, Tensor]:
    """Where the entries of ``cols`` (..., C) (inducing indices, -1 for none) first occur in the active
    sets ``index`` (..., S) (sorted ascending, padding repeats the largest entry): ``(b, found)``, both
    (..., C); ``b`` is in ``[0, S)`` and meaningful where ``found``.

    Up to ``_TABLE_SIZE`` entries, a table of each set's positions over all ``M`` inducing points (one
    scatter, one gather); larger batches (e.g. a test set at large ``M``) use ``torch.searchsorted``: the
    same result, an order of magnitude slower on the CPU.
    """
    s = index.size(-1)
    if index[..., 0].numel() * num_inducing > _TABLE_SIZE:
        b = torch.searchsorted(index, cols).clamp_max(s - 1)  # first match, so never a padding duplicate
        return b, index.gather(-1, b) == cols
    slots = torch.arange(s, device=index.device).expand_as(index)
    # the smallest slot per inducing index: the first match, so never a padding duplicate; s = not in the set
    table = torch.full((*index.shape[:-1], num_inducing), s, dtype=torch.long, device=index.device)
    table.scatter_reduce_(-1, index, slots, reduce="amin")
    b = table.gather(-1, cols.clamp_min(0))
    return b.clamp_max(s - 1), (b < s) & (cols >= 0)
