"""q(f) = N(nu, (V V^T)^{-1}) with V upper triangular on a sparsity pattern (DKLGP's variational family)."""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.variational import _VariationalDistribution
from torch import Tensor

from gpkit.operators.sparse_triangular import SparseTriangularLinearOperator, canonical_pattern
from gpkit.variational.gather import gather_rows

__all__ = ["SparseCholeskyVariationalDistribution"]


class SparseCholeskyVariationalDistribution(_VariationalDistribution):
    r"""Gaussian :math:`q(\mathbf f) = \mathcal N(\boldsymbol\nu, (V V^\top)^{-1})` over ``n`` latent values.

    ``V`` is upper triangular, stored by columns on a canonical pattern (O(n·m) parameters); the pattern is
    set by the variational strategy that owns the distribution (:meth:`set_pattern`; until then ``V`` is
    diagonal). Its diagonal is parametrised as :math:`V_{jj} = \exp(\theta_j) + \text{floor}` and the
    off-diagonal entries relative to the row's diagonal at initialisation, :math:`V_{ij} = w_{ij} s_i`
    (``s = diag(V)`` when initialised): a change of ``V_ij`` matters on the scale of ``V_ii``, so this keeps
    Adam's fixed-size steps harmless. With ``diagonal=True`` ``V`` is diagonal (the "DKL-D" ablation, a
    mean-field family).

    :param num_inducing_points: ``n``, the number of latent values.
    :param batch_shape: must be empty (no batched DKL models).
    :param diagonal: use a diagonal ``V``.
    :param floor: lower bound of ``V_jj``.
    :param sparse_grad: gather parameters so that their gradients are sparse (only the rows a minibatch
        touches), for ``torch.optim.SparseAdam``: the optimizer step then costs O(batch), not O(n·m).
    """

    def __init__(
        self,
        num_inducing_points: int,
        batch_shape: torch.Size = torch.Size([]),  # noqa: B008 (GPyTorch's signature)
        diagonal: bool = False,
        floor: float = 1e-4,
        sparse_grad: bool = False,
    ):
        if len(batch_shape) != 0:
            raise ValueError(
                f"batch_shape: {type(self).__name__} supports no batch shape, got {tuple(batch_shape)}"
            )
        if not (isinstance(num_inducing_points, int) and num_inducing_points >= 1):
            raise ValueError(f"num_inducing_points must be a positive int, got {num_inducing_points!r}")
        super().__init__(num_inducing_points, batch_shape)
        n = num_inducing_points
        self.diagonal = diagonal
        self.floor = floor
        self.sparse_grad = sparse_grad
        self.register_buffer("index", torch.arange(n).unsqueeze(-1))
        self.register_parameter("raw_mean", torch.nn.Parameter(torch.zeros(n, 1)))
        self.register_buffer("mean_scale", torch.ones(n))
        self.register_buffer("row_scale", torch.ones(n))
        self.register_parameter("raw_values", torch.nn.Parameter(torch.zeros(n, 1)))

    @property
    def variational_mean(self) -> Tensor:
        """``nu`` (``n``); stored as ``raw_mean * mean_scale``, ``mean_scale = 1 / V_jj`` at initialisation,
        a Jacobi preconditioner: rough directions of ``nu`` are stiff (``(UU^T)_jj`` is large)."""
        return self.raw_mean.squeeze(-1) * self.mean_scale

    @torch.no_grad()
    def set_mean(self, mean: Tensor, rescale: bool = True) -> None:
        """Set ``nu``; with ``rescale`` first set ``mean_scale = 1 / diag(V)``."""
        if rescale:
            self.mean_scale.copy_(1.0 / self.values()[:, -1])
        self.raw_mean.copy_((mean / self.mean_scale).unsqueeze(-1))

    @property
    def num_data(self) -> int:
        return self.index.shape[0]

    def values(self) -> Tensor:
        """``n x m`` entries of ``V`` aligned with ``index`` (last column: the diagonal)."""
        diag = self.raw_values[:, -1:].exp() + self.floor
        return torch.cat([self.raw_values[:, :-1] * self._off_scale(), diag], dim=-1)

    def _off_scale(self) -> Tensor:
        """``row_scale[index[:, :-1]]`` (zero at padding), cached until ``row_scale`` or ``index`` change."""
        key = (self.row_scale.data_ptr(), self.row_scale._version, self.index.data_ptr(), self.index._version)
        cache = getattr(self, "_off_scale_cache", None)
        if cache is None or cache[0] != key:
            rows = self.index[:, :-1]
            scale = self.row_scale.index_select(0, rows.clamp_min(0).reshape(-1)).view(rows.shape)
            cache = (key, scale * (rows >= 0).to(scale.dtype))
            object.__setattr__(self, "_off_scale_cache", cache)
        return cache[1]

    def _rows(self, param: Tensor, rows: Tensor) -> Tensor:
        """``param[rows]``, with a sparse gradient when ``sparse_grad``."""
        return gather_rows(param, rows, self.sparse_grad)

    def mean_at(self, index: Tensor) -> Tensor:
        """``nu[index]`` (any shape)."""
        flat = index.reshape(-1)
        raw = self._rows(self.raw_mean, flat).squeeze(-1)
        return (raw * self.mean_scale[flat]).reshape(index.shape)

    def entry_values(self, columns: Tensor, slots: Tensor) -> Tensor:
        """Entries ``V[index[c, s], c]`` for 1-D LongTensors of columns ``c`` and slots ``s`` (O(len(c)))."""
        if self.sparse_grad:
            raw = self._rows(self.raw_values, columns).gather(-1, slots.unsqueeze(-1)).squeeze(-1)
        else:
            raw = self.raw_values[columns, slots]
        is_diag = slots == self.index.shape[-1] - 1
        diag = torch.where(is_diag, raw, torch.zeros_like(raw)).exp() + self.floor
        off = raw * self.row_scale[self.index[columns, slots].clamp_min(0)]
        return torch.where(is_diag, diag, off)

    def stored_values(self, store: Tensor) -> Tensor:
        """Entries of ``V`` at flat storage positions ``store = column * m + slot`` (position ``n * m``: zero).

        Forms all ``n x m`` values when that is cheaper than gathering each entry (and without
        ``sparse_grad``)."""
        nm, m = self.index.numel(), self.index.shape[-1]
        if not self.sparse_grad and nm <= 4 * store.numel():
            flat = torch.cat([self.values().reshape(-1), self.raw_values.new_zeros(1)])
            return flat.index_select(0, store.reshape(-1)).reshape(store.shape)
        padded = store >= nm
        safe = store.clamp_max(nm - 1)
        if self.sparse_grad:
            vals = self.entry_values(safe // m, safe % m)
        else:
            raw = self.raw_values.reshape(-1).index_select(0, safe.reshape(-1)).reshape(store.shape)
            rows = self.index.reshape(-1).index_select(0, safe.reshape(-1)).reshape(store.shape)
            is_diag = safe % m == m - 1
            diag = torch.where(is_diag, raw, torch.zeros_like(raw)).exp() + self.floor
            vals = torch.where(
                is_diag,
                diag,
                raw * self.row_scale.index_select(0, rows.clamp_min(0).reshape(-1)).reshape(store.shape),
            )
        return torch.where(padded, 0.0, vals)

    def diag_values(self, columns: Tensor) -> Tensor:
        """``V_jj`` for the columns ``j``."""
        return self._rows(self.raw_values, columns)[:, -1].exp() + self.floor

    def factor(self) -> SparseTriangularLinearOperator:
        """``V`` as a sparse upper-triangular LinearOperator."""
        return SparseTriangularLinearOperator(self.index, self.values())

    def set_pattern(self, index: Tensor) -> None:
        """Replace the pattern (e.g. after re-ordering); resets ``V`` to the identity."""
        if index.shape[0] != self.num_data:
            raise ValueError(f"index: expected {self.num_data} rows, got {index.shape[0]}")
        if self.diagonal:
            index = torch.arange(index.shape[0], device=index.device).unsqueeze(-1)
        self.index = index.to(self.index.device)
        self._off_scale_cache = None
        self.raw_values = torch.nn.Parameter(
            torch.zeros(*index.shape, dtype=self.raw_values.dtype, device=self.raw_values.device)
        )
        self.mean_scale = torch.ones_like(self.mean_scale)
        self.row_scale = torch.ones_like(self.row_scale)

    @torch.no_grad()
    def initialize_from_prior(
        self, prior_index: Tensor, prior_values: Tensor, mean: Tensor | None = None
    ) -> None:
        """Set ``V = U`` (the prior factor, projected on ``V``'s pattern) and ``nu = mean``.

        For a diagonal ``V``: ``V_jj = sqrt((U U^T)_jj)``, the mean-field optimum for a Gaussian prior.

        :param prior_index: ``n x m_U`` canonical pattern of ``U``.
        :param prior_values: ``n x m_U`` values of ``U``.
        :param mean: ``n`` initial mean (default: keep).
        """
        mean = self.variational_mean.detach().clone() if mean is None else mean
        valid = (prior_index >= 0).to(prior_values.dtype)
        if self.diagonal:
            sq = torch.zeros_like(prior_values[:, -1]).index_add(
                0, prior_index.clamp_min(0).reshape(-1), (prior_values.square() * valid).reshape(-1)
            )
            self.raw_values[:, -1].copy_((sq.sqrt() - self.floor).clamp_min(1e-12).log())
            self.set_mean(mean)
            return
        raw = torch.zeros_like(self.raw_values)
        # place U's entries onto V's pattern (identical patterns in the default construction)
        pos = torch.searchsorted(self.index, prior_index.clamp_min(0)).clamp_max(self.index.shape[-1] - 1)
        found = (self.index.gather(-1, pos) == prior_index) & (prior_index >= 0)
        raw.scatter_add_(-1, torch.where(found, pos, torch.zeros_like(pos)), prior_values * found)
        self.initialize_from_factor(raw, mean)

    @torch.no_grad()
    def initialize_from_factor(self, values: Tensor, mean: Tensor) -> None:
        """Set ``V`` from values on its own pattern (last column: diagonal) and ``nu = mean``."""
        self.row_scale.copy_(values[:, -1])
        raw = values / self.row_scale[self.index.clamp_min(0)]
        raw[:, -1] = (values[:, -1] - self.floor).clamp_min(1e-12).log()
        self.raw_values.copy_(
            raw * ((self.index >= 0) | (torch.arange(raw.shape[-1], device=raw.device) == raw.shape[-1] - 1))
        )
        self.set_mean(mean)

    @torch.no_grad()
    def initialize_variational_distribution(self, prior_dist: MultivariateNormal) -> None:
        """``nu`` = the prior mean, ``V`` = the exact inverse Cholesky factor of the prior covariance projected
        on the pattern (dense, O(n^3): the strategy initialises from its sparse prior factor instead)."""
        K = prior_dist.covariance_matrix
        # reverse Cholesky: K^{-1} = U U^T with U = J chol(J K^{-1} J) J upper triangular (J: the flip)
        U = torch.linalg.cholesky(torch.linalg.inv(K).flip(-1, -2)).flip(-1, -2)
        cols = torch.arange(self.num_data, device=K.device).unsqueeze(-1).expand_as(self.index)
        values = U[self.index.clamp_min(0), cols] * (self.index >= 0)
        self.initialize_from_factor(values, prior_dist.mean.detach())

    def forward(self) -> MultivariateNormal:
        """The dense ``q(f)`` (O(n^3): for small ``n`` and tests only)."""
        V = self.factor().to_dense()
        eye = torch.eye(self.num_data, dtype=V.dtype, device=V.device)
        Vinv = torch.linalg.solve_triangular(V, eye, upper=True)
        return MultivariateNormal(self.variational_mean, Vinv.mT @ Vinv)

    @staticmethod
    def canonical(index: Tensor, mask: Tensor) -> Tensor:
        return canonical_pattern(index, mask)
