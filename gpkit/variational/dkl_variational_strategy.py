"""Double-KL variational strategy: sparse inverse Cholesky prior and posterior (Cao et al., ICML 2023)."""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.module import Module
from linear_operator.operators import DiagLinearOperator
from torch import Tensor

from gpkit.operators.sparse_triangular import block_solve, pattern_positions, trim_padding, union_sets
from gpkit.variational.sparse_cholesky_variational_distribution import SparseCholeskyVariationalDistribution
from gpkit.variational.sparse_inverse_cholesky import masked_blocks

__all__ = ["DKLVariationalStrategy"]


class DKLVariationalStrategy(Module):
    r"""Variational strategy of DKLGP: prior :math:`\mathcal N(\mu, (UU^\top)^{-1})` with ``U`` the KL-optimal
    sparse inverse Cholesky factor, posterior :math:`q = \mathcal N(\nu, (VV^\top)^{-1})`.

    Training (``strategy(None, index=J)``, ``J`` a minibatch of columns in the strategy's ordering, or
    ``strategy(train_X[batch])``) returns
    the marginals :math:`q(f_j)` and caches the unbiased column-sum KL estimate
    :math:`\frac{n}{b}\sum_{j\in J}\mathrm{KL}_j`, so ``gpytorch.mlls.VariationalELBO(num_data=n)`` gives an
    unbiased ELBO/n estimate. Solves with ``V`` use only the block ``V[A_j, A_j]`` (``A_j``: ancestor set).
    Evaluation (``strategy(x)``) orders test points after the training points and returns the joint
    predictive over each q-batch (``q <= joint_max``), else independent marginals.

    :param model: the ``ApproximateGP``; its ``forward(x)`` gives the prior mean and covariance.
    :param inputs: ``n x d`` training inputs in the factor's ordering.
    :param index: ``n x m`` canonical pattern ``S`` of ``U`` (and ``V``).
    :param ancestors: ``n x a`` canonical ancestor sets ``A_j`` (``A_j`` is merged with ``S_j``).
    :param variational_distribution: a :class:`SparseCholeskyVariationalDistribution`.
    :param test_sets: callable ``x (t x d) -> (sets t x m, ancestors t x a)``: canonical conditioning sets of
        test points in the training set and their ancestor sets (``A_*``, used for the solves with ``V``);
        ``None`` = all training points (exact, small ``n`` only).
    :param nugget: added to the kernel diagonal.
    :param joint_max: largest q-batch predicted jointly.
    :param chunk_size: test points per batched prediction / columns per chunk of the full KL.
    :param group_size: training columns per group of similar ancestor-set size (less padding; only used
        when the widest ancestor set exceeds 64).
    """

    def __init__(
        self,
        model,
        inputs: Tensor,
        index: Tensor,
        ancestors: Tensor,
        variational_distribution: SparseCholeskyVariationalDistribution,
        test_sets=None,
        nugget: float = 1e-4,
        joint_max: int = 64,
        chunk_size: int = 256,
        group_size: int = 32,
    ):
        super().__init__()
        object.__setattr__(self, "_model", model)  # back-reference, not a submodule
        self._variational_distribution = variational_distribution
        self.test_sets = test_sets
        self.nugget = nugget
        self.joint_max = joint_max
        self.chunk_size = chunk_size
        self.group_size = group_size
        self.register_buffer("inputs", inputs)
        self.register_buffer("index", index)
        self.register_buffer("ancestors", union_sets(torch.cat([ancestors, index], dim=-1)))
        self._kl_estimate: Tensor | None = None
        self._lookup: dict | None = None

    @property
    def model(self):
        return self._model

    @property
    def variational_distribution(self) -> SparseCholeskyVariationalDistribution:
        return self._variational_distribution

    @property
    def num_data(self) -> int:
        return self.inputs.shape[-2]

    def set_pattern(self, inputs: Tensor, index: Tensor, ancestors: Tensor, test_sets=None) -> None:
        """Replace the ordering/pattern (after re-ordering); the caller re-initialises ``q``."""
        self.inputs, self.index = inputs, index
        self.ancestors = union_sets(torch.cat([ancestors, index], dim=-1))
        self.test_sets = test_sets
        self._kl_estimate = None
        self._lookup = None

    # ----------------------------------------------------------------------------------------- prior
    def _prior_blocks(self, sets: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Prior mean and masked covariance over ``inputs[sets]`` (then ``extra`` points, if given)."""
        Xs = self.inputs[sets.clamp_min(0)]  # shape: (b, m, d)
        valid = sets >= 0
        if extra is not None:
            Xs = torch.cat([Xs, extra], dim=-2)
            valid = torch.cat(
                [valid, torch.ones(extra.shape[:-1], dtype=torch.bool, device=valid.device)], -1
            )
        prior = self.model.forward(Xs)
        mean = prior.mean.expand(valid.shape)
        return mean, masked_blocks(prior.lazy_covariance_matrix.to_dense(), valid, self.nugget)

    def prior_factor_columns(self, columns: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Values of ``U[S_j, j]`` (``b x m``) and the prior mean on ``S_j`` (``b x m``) for ``columns``."""
        return self._prior_factor(self.index if columns is None else self.index[columns])

    def _prior_factor(self, sets: Tensor) -> tuple[Tensor, Tensor]:
        mean, K = self._prior_blocks(sets)
        L = torch.linalg.cholesky(K)
        e_last = torch.zeros(*sets.shape, 1, dtype=K.dtype, device=K.device)
        e_last[..., -1, :] = 1.0
        u = torch.linalg.solve_triangular(L.mT, e_last, upper=True).squeeze(-1)
        return u * (sets >= 0).to(u.dtype), mean

    # ------------------------------------------------------------------------------------- training
    def column_terms(self, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Marginal means, variances and KL terms ``KL_j`` of the columns ``j`` (each ``b``).

        Columns are processed in groups of similar ancestor-set size, each trimmed to its own width."""
        if columns.numel() <= self.group_size or self.ancestors.shape[-1] <= 64:
            return self._column_terms(columns)
        perm = (self.ancestors[columns] >= 0).sum(-1).argsort()
        parts = [self._column_terms(columns[p]) for p in perm.split(self.group_size)]
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        return tuple(torch.cat(t)[inverse] for t in zip(*parts))

    def _column_terms(self, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = self.variational_distribution
        sets, anc = trim_padding(self.index[columns]), trim_padding(self.ancestors[columns])  # (b, m), (b, a)
        u, mu = self._prior_factor(sets)
        pos, found = pattern_positions(anc, sets)
        rhs = torch.zeros(*anc.shape, 2, dtype=u.dtype, device=u.device)
        rhs[..., 0] = rhs[..., 0].scatter_add(-1, torch.where(found, pos, 0), u * found)
        rhs[..., -1, 1] = 1.0
        z = (
            block_solve(q.index, q.entry_values, anc, rhs).square().sum(-2)
        )  # ||V[A,A]^{-1} (u, e_j)||^2, shape: (b, 2)
        resid = (u * (q.mean_at(sets.clamp_min(0)) - mu)).sum(-1)
        log_u, log_v = u[:, -1].log(), q.diag_values(columns).log()
        kl = -(log_u - log_v - 0.5 * resid.square() - 0.5 * z[:, 0] + 0.5)
        return q.mean_at(columns), z[:, 1], kl

    def training_positions(self, x: Tensor) -> Tensor:
        """Positions (in the strategy's ordering) of training inputs ``x`` (``b x d``), so that the usual
        GPyTorch loop ``mll(model(train_X[batch]), train_y[batch])`` works in training mode."""
        if x.dim() != 2:
            raise ValueError(
                f"x: in training mode expected a b x d batch of training inputs, got {tuple(x.shape)}"
            )
        if self._lookup is None:
            rows = self.inputs.detach().cpu().contiguous().numpy()
            self._lookup = {r.tobytes(): i for i, r in enumerate(rows)}
        keys = x.detach().to(self.inputs.dtype).cpu().contiguous().numpy()
        pos = [self._lookup.get(r.tobytes(), -1) for r in keys]
        if min(pos) < 0:
            raise ValueError("x: in training mode x must be rows of the training inputs (or pass index=...)")
        return torch.tensor(pos, device=self.inputs.device)

    def kl_divergence(self) -> Tensor:
        """Unbiased estimate of KL(q || p) from the last minibatch, or the full column sum if none."""
        if self._kl_estimate is not None:
            return self._kl_estimate
        cols = torch.arange(self.num_data, device=self.index.device)
        return sum(self.column_terms(c)[2].sum() for c in cols.split(self.chunk_size))

    # ----------------------------------------------------------------------------------- prediction
    def _predict(self, x: Tensor, joint: bool) -> tuple[Tensor, Tensor]:
        """Predictive mean ``b x q`` and covariance ``b x q x q`` for test points ``x`` (``b x q x d``)."""
        q = self.variational_distribution
        b, t = x.shape[:2]
        if self.test_sets is None:
            sets = anc = torch.arange(self.num_data, device=x.device).expand(b * t, -1)
        else:
            sets, anc = self.test_sets(x.detach().reshape(b * t, -1))
        C = union_sets(sets.reshape(b, -1)) if joint else sets.reshape(b, -1)  # shape: (b, c)
        c = C.shape[-1]
        mean, K = self._prior_blocks(C, extra=x)
        L = torch.linalg.cholesky(K[..., :c, :c])
        W = torch.linalg.solve_triangular(L, K[..., :c, c:], upper=False)  # shape: (b, c, t)
        B = torch.linalg.solve_triangular(L.mT, W, upper=True)  # K_CC^{-1} K_Cx
        valid = (C >= 0).to(B.dtype)
        pred_mean = mean[..., c:] + (
            B * ((q.mean_at(C.clamp_min(0)) - mean[..., :c]) * valid).unsqueeze(-1)
        ).sum(-2)
        cond_cov = K[..., c:, c:] - W.mT @ W
        anc = union_sets(torch.cat([anc.reshape(b, -1), C], dim=-1))
        pos, found = pattern_positions(anc, C)
        rhs = torch.zeros(b, anc.shape[-1], t, dtype=B.dtype, device=B.device)
        idx = torch.where(found, pos, 0).unsqueeze(-1).expand(-1, -1, t)
        rhs = rhs.scatter_add(-2, idx, B * found.unsqueeze(-1))
        Z = block_solve(q.index, q.entry_values, anc, rhs)
        return pred_mean, cond_cov + Z.mT @ Z

    def __call__(self, x: Tensor | None = None, prior: bool = False, index: Tensor | None = None, **kwargs):
        if prior:
            return self.model.forward(x)
        if self.training and (index is not None or x is not None):
            index = self.training_positions(x) if index is None else index
            mean, var, kl = self.column_terms(index)
            self._kl_estimate = kl.sum() * (self.num_data / index.numel())
            return MultivariateNormal(mean, DiagLinearOperator(var))
        if x is None:
            raise ValueError("x: test inputs are required (or pass index=... in training mode)")
        batch, (t, d) = x.shape[:-2], x.shape[-2:]
        xf = x.reshape(-1, t, d)
        if t <= self.joint_max:
            outs = [self._predict(xc, joint=True) for xc in xf.split(max(1, self.chunk_size // t))]
            mean, cov = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            return MultivariateNormal(mean.reshape(*batch, t), cov.reshape(*batch, t, t))
        pts = xf.reshape(-1, 1, d)
        outs = [self._predict(xc, joint=False) for xc in pts.split(self.chunk_size)]
        mean = torch.cat([o[0] for o in outs]).reshape(*batch, t)
        var = torch.cat([o[1] for o in outs]).reshape(*batch, t)
        return MultivariateNormal(mean, DiagLinearOperator(var.clamp_min(1e-12)))
