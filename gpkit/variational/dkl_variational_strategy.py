"""Double-KL variational strategy: sparse inverse Cholesky prior and posterior (Cao et al., ICML 2023)."""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.module import Module
from linear_operator.operators import DiagLinearOperator
from torch import Tensor

from gpkit.operators.sparse_triangular import (
    block_entries,
    block_solve,
    pattern_positions,
    trim_padding,
    union_sets,
)
from gpkit.variational.sparse_cholesky_variational_distribution import SparseCholeskyVariationalDistribution
from gpkit.variational.sparse_inverse_cholesky import inverse_cholesky_last_column, masked_blocks

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
        when the widest ancestor set exceeds 64 and the block entries are not cached).
    :param prior_groups: a minibatch's prior factor columns are computed in this many groups of similar
        ``|S_j|`` (each padded to its own widest set: less padded kernel and Cholesky work).
    :param cache_bytes: memory allowed for the per-column index maps of the blocks ``V[A_j, A_j]`` (built once
        per pattern; above it they are recomputed for each minibatch).
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
        prior_groups: int = 2,
        cache_bytes: int = 2**28,
    ):
        super().__init__()
        object.__setattr__(self, "_model", model)  # back-reference, not a submodule
        self._variational_distribution = variational_distribution
        self.test_sets = test_sets
        self.nugget = nugget
        self.joint_max = joint_max
        self.chunk_size = chunk_size
        self.group_size = group_size
        self.prior_groups = prior_groups
        self.cache_bytes = cache_bytes
        self.register_buffer("inputs", inputs)
        self.register_buffer("index", index)
        self.register_buffer("ancestors", union_sets(torch.cat([ancestors, index], dim=-1)))
        self._kl_estimate: Tensor | None = None
        self._lookup: dict | None = None
        self._plan: tuple | None = None
        self._prior_cache: tuple | None = None

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
        self._plan = None
        self._prior_cache = None

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
        mean, K = self._prior_mean_covar(Xs)
        return mean.expand(valid.shape), masked_blocks(K, valid, self.nugget)

    def _prior_mean_covar(self, x: Tensor, covar: bool = True) -> tuple[Tensor, Tensor | None]:
        """Prior mean and (if ``covar``) dense covariance at ``x`` (``b x m x d``), through the model's
        ``prior_mean_covar`` if it has one (skips building a distribution), else its ``forward``."""
        fast = getattr(self.model, "prior_mean_covar", None)
        if fast is not None:
            return fast(x, covar=covar)
        prior = self.model.forward(x)  # the covariance of a gpytorch forward is lazy: evaluated only if used
        return prior.mean, prior.lazy_covariance_matrix.to_dense() if covar else None

    def prior_factor_columns(self, columns: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Values of ``U[S_j, j]`` (``b x m``) and the prior mean on ``S_j`` (``b x m``) for ``columns``."""
        return self._prior_factor(self.index if columns is None else self.index[columns])

    @torch.no_grad()
    def prior_factor_all(self, chunk_size: int = 1024) -> Tensor:
        """Values of ``U`` for all columns (``n x m``, no gradient), in chunks of similar ``|S_j|``, each
        trimmed to its widest set."""
        n, m = self.index.shape
        u = torch.zeros(n, m, dtype=self.inputs.dtype, device=self.inputs.device)
        for c in (self.index >= 0).sum(-1).argsort().split(chunk_size):
            sets = trim_padding(self.index[c])
            u[c, m - sets.shape[-1] :] = self._prior_factor(sets)[0]
        return u

    def _prior_factor(self, sets: Tensor) -> tuple[Tensor, Tensor]:
        mean, K = self._prior_blocks(sets)
        u = inverse_cholesky_last_column(K)
        return u * (sets >= 0).to(u.dtype), mean

    def _frozen_parameters(self) -> list[Tensor] | None:
        """The parameters that can change the prior covariance (the model's, less ``q``'s, ``mean_module``'s
        and ``likelihood``'s), or ``None`` if any of them needs a gradient."""
        skip = {id(p) for p in self.parameters()}
        for name in ("mean_module", "likelihood"):
            module = getattr(self.model, name, None)
            if isinstance(module, torch.nn.Module):
                skip.update(id(p) for p in module.parameters())
        params = [p for p in self.model.parameters() if id(p) not in skip]
        return None if any(p.requires_grad for p in params) else params

    def _frozen_prior(self, values: Tensor | None = None) -> Tensor | None:
        """``U``'s values for all columns (``n x m``), cached while the prior covariance is frozen (its
        parameters need no gradient and keep their values, compared with a snapshot); ``None`` otherwise.
        ``values``: freshly computed ``U`` to store (skips the computation)."""
        params = self._frozen_parameters()
        if params is None:
            return None
        key = (self.inputs.data_ptr(), self.index.data_ptr(), tuple(self.index.shape), self.nugget)
        cache = self._prior_cache
        if (
            values is None
            and cache is not None
            and cache[0] == key
            and len(cache[1]) == len(params)
            and all(torch.equal(a, p) for a, p in zip(cache[1], params))
        ):
            return cache[2]
        u = self.prior_factor_all() if values is None else values.detach()
        self._prior_cache = (key, [p.detach().clone() for p in params], u)
        return u

    def _prior_columns(self, columns: Tensor, sets: Tensor) -> tuple[Tensor, Tensor]:
        """``U[S_j, j]`` and the prior mean on ``S_j`` (``b x w`` each) for the training ``columns`` with
        trimmed ``sets`` (``b x w``): from the cache if the prior covariance is frozen, else computed in
        ``prior_groups`` groups of similar ``|S_j|``."""
        w = sets.shape[-1]
        frozen = self._frozen_prior()
        if frozen is not None:
            mean = self._prior_mean_covar(self.inputs[sets.clamp_min(0)], covar=False)[0].expand(sets.shape)
            return frozen.index_select(0, columns)[:, -w:], mean
        if self.prior_groups <= 1 or columns.numel() < 4 * self.prior_groups:
            return self._prior_factor(sets)
        perm = (sets >= 0).sum(-1).argsort()
        parts = [self._prior_factor(trim_padding(sets[p])) for p in perm.tensor_split(self.prior_groups)]
        pad = lambda t: torch.nn.functional.pad(t, (w - t.shape[-1], 0))
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        u = torch.cat([pad(t[0]) for t in parts]).index_select(0, inverse)
        mean = torch.cat([pad(t[1]) for t in parts]).index_select(0, inverse)
        return u, mean

    # ------------------------------------------------------------------------------------- training
    def _block_plan(self) -> tuple | None:
        """Per-column index maps, built once per pattern: the positions of ``S_j`` in ``A_j`` (``n x m``, and
        whether found), and the nonzeros of ``V[A_j, A_j]`` as flat positions in the dense ``a x a`` block
        and in ``V``'s ``n x m`` storage (``n x e`` each). ``None`` if over budget."""
        q = self.variational_distribution
        key = (q.index.data_ptr(), tuple(q.index.shape), self.ancestors.data_ptr(), self.index.data_ptr())
        key = (*key, self.cache_bytes)
        if self._plan is not None and self._plan[0] == key:
            return self._plan[1]
        anc = self.ancestors
        (n, a), nm = anc.shape, q.index.numel()
        small = torch.int32 if nm < 2**31 - 1 else torch.long  # halves the maps' memory
        chunks, e, plan = [], 1, None
        for cols in torch.arange(n, device=anc.device).split(max(1, 2**20 // (a * q.index.shape[-1]))):
            bi, pos, store = block_entries(q.index, anc[cols])
            counts = torch.bincount(bi, minlength=cols.numel())
            e = max(e, int(counts.max()))
            if n * e * 2 * small.itemsize > self.cache_bytes:
                break
            # entries come sorted by column: fill each row's first counts[j] slots, in order; padding points
            # at a strictly lower block position (row a - 1, column 0), ignored by the upper-triangular solves,
            # and at the storage slot n * m (a zero appended to V's values)
            filled = torch.arange(int(counts.max()), device=anc.device) < counts.unsqueeze(-1)
            Pc = torch.full(filled.shape, (a - 1) * a, dtype=small, device=anc.device)
            Sc = torch.full(filled.shape, nm, dtype=small, device=anc.device)
            chunks.append(
                (cols, Pc.masked_scatter_(filled, pos.to(small)), Sc.masked_scatter_(filled, store.to(small)))
            )
        else:
            P = torch.full((n, e), (a - 1) * a, dtype=small, device=anc.device)
            S = torch.full((n, e), nm, dtype=small, device=anc.device)
            for cols, Pc, Sc in chunks:
                P[cols[0] : cols[-1] + 1, : Pc.shape[-1]] = Pc
                S[cols[0] : cols[-1] + 1, : Sc.shape[-1]] = Sc
            spos, found = pattern_positions(anc, self.index)
            plan = (spos, found, P, S)
        self._plan = (key, plan)
        return plan

    def column_terms(self, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Marginal means, variances and KL terms ``KL_j`` of the columns ``j`` (each ``b``).

        With the cached index maps (:meth:`_block_plan`) all columns go in one batch; otherwise they are
        processed in groups of similar ancestor-set size, each trimmed to its own width."""
        plan = self._block_plan()
        if plan is not None:
            return self._column_terms(columns, plan)
        if columns.numel() <= self.group_size or self.ancestors.shape[-1] <= 64:
            return self._column_terms(columns)
        perm = (self.ancestors[columns] >= 0).sum(-1).argsort()
        parts = [self._column_terms(columns[p]) for p in perm.split(self.group_size)]
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        return tuple(torch.cat(t)[inverse] for t in zip(*parts))

    def _column_terms(self, columns: Tensor, plan: tuple | None = None) -> tuple[Tensor, Tensor, Tensor]:
        q = self.variational_distribution
        sets = trim_padding(self.index.index_select(0, columns))  # shape: (b, w)
        u, mu = self._prior_columns(columns, sets)
        if plan is None:
            anc = trim_padding(self.ancestors[columns])  # shape: (b, a)
            pos, found = pattern_positions(anc, sets)
            entries = None
        else:
            spos, sfound, P, S = plan
            anc = self.ancestors.index_select(0, columns)  # shape: (b, a), untrimmed (the maps' width)
            (b, a), w = anc.shape, sets.shape[-1]
            pos, found = spos.index_select(0, columns)[:, -w:], sfound.index_select(0, columns)[:, -w:]
            offset = torch.arange(b, device=P.device).unsqueeze(-1) * (a * a)
            entries = (P.index_select(0, columns) + offset, S.index_select(0, columns).long())  # int64
        rhs = torch.zeros(*anc.shape, 2, dtype=u.dtype, device=u.device)
        rhs[..., 0] = rhs[..., 0].scatter_add(-1, torch.where(found, pos, 0), u * found)
        rhs[..., -1, 1] = 1.0
        z = (
            block_solve(q.index, q.entry_values, anc, rhs, entries=entries, stored_values=q.stored_values)
            .square()
            .sum(-2)
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
