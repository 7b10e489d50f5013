"""Variational parameters of SWSGP: a global mean and a sparse, local Cholesky factor."""

from __future__ import annotations

import torch
from gpytorch.module import Module
from torch import Tensor

from gpkit.neighbors import previous_knn

__all__ = ["LocalCholeskyVariationalDistribution"]


class LocalCholeskyVariationalDistribution(Module):
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
    follow the inducing locations during training.

    :param num_inducing: number of inducing points :math:`M`.
    :param num_factor_neighbors: off-diagonal entries per row of :math:`\mathbf L` (:math:`K`).
    :param dtype: parameter dtype.
    :param device: parameter device.
    """

    def __init__(
        self,
        num_inducing: int,
        num_factor_neighbors: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_inducing, int) or num_inducing < 1:
            raise ValueError(f"num_inducing must be a positive int, got {num_inducing!r}")
        if not isinstance(num_factor_neighbors, int) or num_factor_neighbors < 0:
            raise ValueError(f"num_factor_neighbors must be a non-negative int, got {num_factor_neighbors!r}")
        k = min(num_factor_neighbors, num_inducing - 1)
        kw = {"dtype": dtype, "device": device}
        self.num_inducing = num_inducing
        self.num_factor_neighbors = k
        self.register_parameter("variational_mean", torch.nn.Parameter(torch.zeros(num_inducing, **kw)))
        self.register_parameter("log_diag", torch.nn.Parameter(torch.zeros(num_inducing, **kw)))
        self.register_parameter("off_diag", torch.nn.Parameter(torch.zeros(num_inducing, k, **kw)))
        self.register_buffer("factor_index", torch.zeros(num_inducing, k, dtype=torch.long, device=device))
        self.register_buffer("factor_mask", torch.zeros(num_inducing, k, dtype=torch.bool, device=device))
        # sorted keys row * M + col of the stored off-diagonal entries, and their flat positions in off_diag
        self.register_buffer("_keys", torch.zeros(0, dtype=torch.long, device=device))
        self.register_buffer("_key_pos", torch.zeros(0, dtype=torch.long, device=device))

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
        keys = (rows * self.num_inducing + index)[mask]
        pos = torch.arange(index.numel(), device=index.device).view_as(index)[mask]
        keys, order = keys.sort()
        self._keys = keys
        self._key_pos = pos[order]

    def initialize(self, prior_mean: Tensor, prior_var: Tensor, scale: float = 0.1) -> None:
        """Start from the prior mean and a diagonal factor ``scale * sqrt(prior_var)`` (no correlations).

        :param prior_mean: prior mean at the inducing points, shape ``(M,)``.
        :param prior_var: prior variance at the inducing points, shape ``(M,)``.
        :param scale: ratio of the initial posterior standard deviation to the prior one.
        """
        with torch.no_grad():
            self.variational_mean.copy_(prior_mean)
            self.log_diag.copy_(torch.log(scale * prior_var.clamp_min(1e-12).sqrt()))
            self.off_diag.zero_()

    def factor(self, index: Tensor, mask: Tensor | None = None) -> Tensor:
        r"""Sub-block :math:`\mathbf L_{AA}` for active sets ``A = index`` (sorted ascending in the last dim).

        :param index: active sets, shape ``(..., S)``.
        :param mask: ``False`` marks padding slots (given identity rows/columns), shape ``(..., S)``.
        :return: lower-triangular factors, shape ``(..., S, S)``.
        """
        m, s = self.num_inducing, index.size(-1)
        diag = self.log_diag.exp()[index]  # shape: (..., S)
        if mask is not None:
            diag = torch.where(mask, diag, torch.ones_like(diag))
        out = torch.diag_embed(diag)
        if self._keys.numel() == 0 or s < 2:
            return out
        # A is sorted, so only pairs (row a, col b) below the diagonal can be stored entries
        rows, cols = torch.tril_indices(s, s, -1, device=index.device)
        query = index[..., rows] * m + index[..., cols]  # shape: (..., S(S-1)/2)
        pos = torch.searchsorted(self._keys, query).clamp_max(self._keys.numel() - 1)
        found = self._keys[pos] == query
        if mask is not None:
            found = found & mask[..., rows] & mask[..., cols]
        values = self.off_diag.reshape(-1)[self._key_pos[pos]]
        out[..., rows, cols] = torch.where(found, values, torch.zeros_like(values))
        return out

    def mean(self, index: Tensor) -> Tensor:
        """Variational mean at the inducing indices ``index`` (any shape)."""
        return self.variational_mean[index]

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
