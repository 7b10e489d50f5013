"""Double-KL variational strategy: sparse inverse Cholesky prior and posterior (Cao et al., ICML 2023)."""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.utils.errors import CachingError
from gpytorch.utils.memoize import add_to_cache, cached, get_from_cache
from gpytorch.variational import _VariationalStrategy
from linear_operator.operators import DiagLinearOperator
from torch import Tensor

from gpkit.neighbors.structure import MaximinStructure
from gpkit.operators.incomplete_cholesky import gram_on_pattern, incomplete_reverse_cholesky
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


class DKLVariationalStrategy(_VariationalStrategy):
    r"""Variational strategy of DKLGP: prior :math:`\mathcal N(\mu, (UU^\top)^{-1})` with ``U`` the KL-optimal
    sparse inverse Cholesky factor, posterior :math:`q = \mathcal N(\nu, (VV^\top)^{-1})`.

    The inducing points are the ``n`` (distinct) training inputs. The strategy owns their neighbour
    structure (:class:`gpkit.neighbors.MaximinStructure`: maximin ordering, patterns ``S_j``, ancestor sets
    ``A_j``, test-time sets); ``inducing_points`` holds them in that ordering and ``order`` maps back.

    Training (``strategy(None, index=J)``, ``J`` a minibatch of columns in the strategy's ordering, or
    ``strategy(train_X[batch])``) returns the marginals :math:`q(f_j)` and caches the unbiased column-sum KL
    estimate :math:`\frac{n}{b}\sum_{j\in J}\mathrm{KL}_j` for :meth:`kl_divergence` (GPyTorch's memo, as
    ``NNVariationalStrategy`` does), so ``gpytorch.mlls.VariationalELBO(num_data=n)`` is an unbiased ELBO/n
    estimate. Solves with ``V`` use only the block ``V[A_j, A_j]``. Outside training :meth:`kl_divergence` is
    the full column sum.

    Evaluation (``strategy(x)``) orders test points after the training points: each q-batch is conditioned
    jointly on the union of its members' training sets (exact joint covariance at any ``q``; a clear error
    when the union exceeds ``max_joint`` points). Points near the edge of a test point's set are faded out
    smoothly, so the predictive mean is continuous in ``x``.

    :param model: the ``ApproximateGP``; its ``forward(x)`` gives the prior mean and covariance.
    :param inducing_points: ``n x d`` distinct training inputs.
    :param variational_distribution: a :class:`SparseCholeskyVariationalDistribution` over ``n`` values.
    :param learn_inducing_locations: must be False (the inducing points are the data).
    :param jitter_val: nugget added to the kernel diagonal.
    :param rho: pattern radius factor (see :class:`~gpkit.neighbors.MaximinStructure`).
    :param lengthscale: ARD lengthscales the ordering and sets are computed with.
    :param max_size: cap on ``|S_j|`` (``"auto"``, an int >= 2, or ``None``).
    :param ancestor_size: cap on ``|A_j|`` (``"auto"``, an int >= 2, or ``None``).
    :param exact_size: up to this many inducing points the sets are full (the exact factor).
    :param max_joint: largest number of training points a q-batch may be conditioned on jointly.
    :param chunk_size: columns per chunk of the full KL.
    :param group_size: training columns per group of similar ancestor-set size (used only when the widest
        ancestor set exceeds 64 and the block index maps are not cached).
    :param prior_groups: a minibatch's prior factor columns are computed in this many groups of similar
        ``|S_j|`` (each padded to its own widest set).
    :param cache_bytes: memory allowed for the per-column index maps of the blocks ``V[A_j, A_j]``.
    :param structure: a ready neighbour structure to use instead of building one (e.g.
        :meth:`~gpkit.neighbors.MaximinStructure.from_sets`).
    """

    def __init__(
        self,
        model,
        inducing_points: Tensor,
        variational_distribution: SparseCholeskyVariationalDistribution,
        learn_inducing_locations: bool = False,
        jitter_val: float = 1e-4,
        rho: float = 1.5,
        lengthscale: Tensor | None = None,
        max_size: int | str | None = "auto",
        ancestor_size: int | str | None = "auto",
        exact_size: int | None = None,
        max_joint: int = 4096,
        chunk_size: int = 256,
        group_size: int = 32,
        prior_groups: int = 2,
        cache_bytes: int = 2**28,
        structure: MaximinStructure | None = None,
    ):
        if learn_inducing_locations:
            raise ValueError(
                "learn_inducing_locations: DKLVariationalStrategy's inducing points are the data"
            )
        if not isinstance(variational_distribution, SparseCholeskyVariationalDistribution):
            raise TypeError(
                "variational_distribution must be a SparseCholeskyVariationalDistribution, "
                f"got {type(variational_distribution).__name__}"
            )
        if inducing_points.dim() != 2:
            raise ValueError(f"inducing_points must be n x d, got shape {tuple(inducing_points.shape)}")
        if variational_distribution.num_data != inducing_points.shape[0]:
            raise ValueError(
                f"variational_distribution has {variational_distribution.num_data} values but there are "
                f"{inducing_points.shape[0]} inducing points"
            )
        if not (isinstance(max_joint, int) and max_joint >= 1):
            raise ValueError(f"max_joint must be a positive int, got {max_joint!r}")
        self.rho, self.max_size, self.ancestor_size = rho, max_size, ancestor_size
        self.exact_size = exact_size
        if structure is None:
            structure = MaximinStructure(
                inducing_points, rho, lengthscale, max_size, ancestor_size, exact_size
            )
        super().__init__(
            model,
            structure.inputs,
            variational_distribution,
            learn_inducing_locations=False,
            jitter_val=jitter_val,
        )
        self.max_joint = max_joint
        self.chunk_size = chunk_size
        self.group_size = group_size
        self.prior_groups = prior_groups
        self.cache_bytes = cache_bytes
        self.register_buffer("unordered_points", inducing_points.detach().clone())
        self.register_buffer("order", structure.order)
        self.register_buffer("order_lengthscale", _as_buffer(lengthscale, inducing_points))
        # the sets move with the model (.to) but are not saved: they are rebuilt from order_lengthscale
        self.register_buffer("index", structure.index, persistent=False)
        self.register_buffer("ancestors", structure.ancestors, persistent=False)
        self._set_structure(structure)

    # ------------------------------------------------------------------------------ neighbour structure
    def _set_structure(self, structure: MaximinStructure) -> None:
        self.structure = structure
        self.inducing_points = structure.inputs
        self.order = structure.order
        self.index, self.ancestors = structure.index, structure.ancestors
        q = self._variational_distribution
        q.set_pattern(structure.index.to(q.index.device))
        self._plan = None
        self._lookup = None

    @property
    def inputs(self) -> Tensor:
        """``n x d`` inducing points in the ordering."""
        return self.inducing_points

    @property
    def num_data(self) -> int:
        return self.inducing_points.shape[-2]

    @property
    def variational_mean(self) -> Tensor:
        """``nu`` in the ordering (``n``)."""
        return self._variational_distribution.variational_mean

    def sparse_parameters(self) -> list[torch.nn.Parameter]:
        """``q``'s per-column parameters if it gathers them with sparse gradients (``sparse_grad``), else ``[]``."""
        q = self._variational_distribution
        return [q.raw_values, q.raw_mean] if q.sparse_grad else []

    @torch.no_grad()
    def reorder(self, lengthscale: Tensor | None) -> None:
        """Re-order with new lengthscales and rebuild the sets; ``q`` is reset to ``V = U`` with each point's
        variational mean kept."""
        nu_by_point = torch.empty_like(self.variational_mean)
        nu_by_point[self.order] = self.variational_mean
        structure = MaximinStructure(
            self.unordered_points, self.rho, lengthscale, self.max_size, self.ancestor_size, self.exact_size
        )
        self.order_lengthscale = _as_buffer(lengthscale, self.unordered_points)
        self._set_structure(structure)
        self.initialize_from_prior(nu_by_point[self.order])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the sets are not stored: rebuild them from the lengthscales the saved model was ordered with
        key = prefix + "order_lengthscale"
        if key in state_dict:
            saved = state_dict[key].to(self.order_lengthscale)
            if saved.shape != self.order_lengthscale.shape or not torch.equal(saved, self.order_lengthscale):
                with torch.no_grad():
                    self.reorder(None if saved.numel() == 0 else saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._plan = None

    # ----------------------------------------------------------------------------------------- prior
    @property
    @cached(name="prior_distribution_memo")
    def prior_distribution(self) -> MultivariateNormal:
        """The dense prior at the inducing points (O(n^2); the strategy itself uses the sparse factor)."""
        out = self.model.forward(self.inducing_points)
        return MultivariateNormal(out.mean, out.lazy_covariance_matrix.add_jitter(self.jitter_val))

    def _prior_mean_covar(self, x: Tensor, covar: bool = True) -> tuple[Tensor, Tensor | None]:
        """Prior mean and (if ``covar``) dense covariance at ``x`` (``b x m x d``) from the model's forward."""
        prior = self.model.forward(x)  # the covariance of a gpytorch forward is lazy: evaluated only if used
        return prior.mean, prior.lazy_covariance_matrix.to_dense() if covar else None

    def _prior_blocks(self, sets: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Prior mean and masked covariance over ``inputs[sets]`` (then ``extra`` points, if given)."""
        Xs = self.inputs[sets.clamp_min(0)]  # shape: (b, m, d)
        valid = sets >= 0
        if extra is not None:
            Xs = torch.cat([Xs.to(extra), extra], dim=-2)
            valid = torch.cat(
                [valid, torch.ones(extra.shape[:-1], dtype=torch.bool, device=valid.device)], -1
            )
        mean, K = self._prior_mean_covar(Xs)
        return mean.expand(valid.shape), masked_blocks(K, valid, self.jitter_val)

    def prior_factor_columns(self, columns: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Values of ``U[S_j, j]`` (``b x m``) and the prior mean on ``S_j`` (``b x m``) for ``columns``."""
        return self._prior_factor(self.index if columns is None else self.index[columns])

    @torch.no_grad()
    def prior_factor(self, chunk_size: int = 1024) -> Tensor:
        """Values of ``U`` for all columns (``n x m`` aligned with :attr:`index`, no gradient), in chunks of
        similar ``|S_j|``, each trimmed to its widest set."""
        n, m = self.index.shape
        if self.structure.full:
            cols = torch.arange(n, device=self.index.device).unsqueeze(-1)
            U = self._dense_prior_factor()[0]
            return torch.where(self.index >= 0, U[self.index.clamp_min(0), cols], torch.zeros_like(U))
        u = torch.zeros(n, m, dtype=self.inputs.dtype, device=self.inputs.device)
        for c in (self.index >= 0).sum(-1).argsort().split(chunk_size):
            sets = trim_padding(self.index[c])
            u[c, m - sets.shape[-1] :] = self._prior_factor(sets)[0]
        return u

    def _prior_factor(self, sets: Tensor) -> tuple[Tensor, Tensor]:
        mean, K = self._prior_blocks(sets)
        u = inverse_cholesky_last_column(K)
        return u * (sets >= 0).to(u.dtype), mean

    def _prior_columns(self, columns: Tensor, sets: Tensor) -> tuple[Tensor, Tensor]:
        """``U[S_j, j]`` and the prior mean on ``S_j`` (``b x w`` each) for the training ``columns`` with
        trimmed ``sets`` (``b x w``), computed in ``prior_groups`` groups of similar ``|S_j|``."""
        w = sets.shape[-1]
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
        q = self._variational_distribution
        if self._plan is not None:  # reset whenever the sets change
            return self._plan[0]
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
        self._plan = (plan,)
        return plan

    def column_terms(self, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Marginal means, variances and KL terms ``KL_j`` of the columns ``j`` (each ``b``).

        With the cached index maps (:meth:`_block_plan`) all columns go in one batch; otherwise they are
        processed in groups of similar ancestor-set size, each trimmed to its own width."""
        if self.structure.full:  # small n: dense algebra, the same terms
            return tuple(t.index_select(0, columns) for t in self._dense_terms())
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

    def _dense_prior_factor(self) -> tuple[Tensor, Tensor]:
        """Full pattern: ``U = L^{-T}`` (``K + jitter = L L^T``, the exact inverse Cholesky factor, ``n x n``
        upper triangular) and the prior mean (``n``)."""
        mean, K = self._prior_mean_covar(self.inputs)
        K = K + self.jitter_val * torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
        L = torch.linalg.cholesky(K)
        eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
        return torch.linalg.solve_triangular(L, eye, upper=False).mT, mean.expand(K.shape[-1])

    def _dense_terms(self) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`column_terms` of every column for a full pattern, densely: with ``W = V^{-1}``,
        ``var_j = ||W e_j||^2`` and ``KL_j`` from ``||W U e_j||^2`` and ``(U^T (nu - mu))_j``."""
        q = self._variational_distribution
        U, mu = self._dense_prior_factor()
        V = dense_factor(self.index, q.values())
        eye = torch.eye(V.shape[-1], dtype=V.dtype, device=V.device)
        W = torch.linalg.solve_triangular(V, eye, upper=True)  # V^{-1}, upper triangular
        nu = q.mean_at(torch.arange(V.shape[-1], device=V.device))
        resid = U.mT @ (nu - mu)
        z_u, var = (W @ U).square().sum(-2), W.square().sum(-2)
        kl = -(U.diagonal().log() - V.diagonal().log() - 0.5 * resid.square() - 0.5 * z_u + 0.5)
        return nu, var, kl

    def _column_terms(self, columns: Tensor, plan: tuple | None = None) -> tuple[Tensor, Tensor, Tensor]:
        q = self._variational_distribution
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

    def get_fantasy_model(self, inputs: Tensor, targets: Tensor, **kwargs):
        raise NotImplementedError(
            "DKLVariationalStrategy has no GPyTorch fantasy model; use DKLGP.condition_on_observations / fantasize "
            "(the new points are ordered after the training points)"
        )

    # --------------------------------------------------------------------------------- initialisation
    @torch.no_grad()
    def initialize_from_prior(self, mean: Tensor | None = None, u: Tensor | None = None) -> None:
        """``V = U`` (the prior factor; ``u``: its values if already computed) and ``nu = mean`` (default: the
        prior mean), in the ordering."""
        q = self._variational_distribution
        u = self.prior_factor() if u is None else u
        mu = self._prior_mean_covar(self.inputs, covar=False)[0] if mean is None else mean
        q.initialize_from_prior(self.index, u, mean=mu.expand(self.num_data))
        self.variational_params_initialized.fill_(1)

    @torch.no_grad()
    def initialize_laplace(self, mode: Tensor, curvature: Tensor, u: Tensor | None = None) -> None:
        """``nu = mode`` and ``V = IC0(U U^T + diag(curvature))`` on the pattern (a diagonal ``V``: the
        mean-field optimum ``V_jj^2 = (U U^T)_jj + curvature_j``): the Laplace approximation at ``mode``.

        :param mode: ``n`` latent values in the ordering.
        :param curvature: ``n`` non-negative ``-d^2 log p(y_j | f_j) / df_j^2`` at ``mode``.
        :param u: the prior factor's values (:meth:`prior_factor`), if already computed.
        """
        q = self._variational_distribution
        u = self.prior_factor() if u is None else u
        if q.diagonal:
            diag_uut = torch.zeros_like(mode).index_add(
                0, self.index.clamp_min(0).reshape(-1), u.square().reshape(-1)
            )
            q.initialize_from_factor((diag_uut + curvature).sqrt().unsqueeze(-1), mode)
        elif self.structure.full:  # full pattern: IC0 is the exact reverse Cholesky factor, done densely
            U = dense_factor(self.index, u)
            P = U @ U.mT + torch.diag_embed(curvature)
            V = torch.linalg.cholesky(P.flip(-1, -2)).flip(-1, -2)  # upper triangular, V V^T = P
            cols = torch.arange(self.num_data, device=u.device).unsqueeze(-1)
            values = torch.where(self.index >= 0, V[self.index.clamp_min(0), cols], torch.zeros_like(u))
            q.initialize_from_factor(values, mode)
        else:
            P = gram_on_pattern(self.index, u, curvature)
            q.initialize_from_factor(incomplete_reverse_cholesky(self.index, P), mode)
        self.variational_params_initialized.fill_(1)

    # ------------------------------------------------------------------------------------------ KL
    def kl_divergence(self) -> Tensor:
        """In training: the unbiased estimate from the last minibatch (GPyTorch's memo); otherwise (or before
        any minibatch) the full column sum."""
        if self.training:
            try:
                return get_from_cache(self, "kl_divergence_memo")
            except CachingError:
                pass
        cols = torch.arange(self.num_data, device=self.index.device)
        return sum(self.column_terms(c)[2].sum() for c in cols.split(self.chunk_size))

    # ----------------------------------------------------------------------------------- prediction
    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Joint predictive mean ``b x t`` and covariance ``b x t x t`` for test points ``x`` (``b x t x d``)."""
        q = self._variational_distribution
        b, t = x.shape[:2]
        sets, w, anc = self.structure.test_sets(x.reshape(b * t, -1))
        sets, w = sets.reshape(b, -1), w.reshape(b, -1)
        C = union_sets(sets)  # shape: (b, c)
        c = C.shape[-1]
        if c > self.max_joint:
            raise ValueError(
                f"x: the joint posterior of these {t} points conditions on {c} training points, more than "
                f"max_joint={self.max_joint}; for pointwise marginals pass x.unsqueeze(-2) (a batch of single "
                "points), or raise the strategy's max_joint"
            )
        pos, found = pattern_positions(C, sets)
        # each conditioning point's weight: the largest over the q-batch (a continuous function of x)
        wC = torch.zeros(C.shape, dtype=x.dtype, device=x.device).scatter_reduce(
            -1, torch.where(found, pos, 0), torch.where(found, w, 0.0), reduce="amax"
        )
        mean, K = self._prior_blocks(C, extra=x)
        Kcc = K[..., :c, :c]
        # fading: a point of weight w enters as an observation with noise K_ii (1 / w - 1), so it leaves the
        # set (w -> 0) with zero influence on the prediction
        valid = C >= 0
        fade = torch.where(valid, (1.0 / wC.clamp_min(1e-10) - 1.0), torch.zeros_like(wC))
        Kcc = Kcc + torch.diag_embed(fade * Kcc.diagonal(dim1=-2, dim2=-1))
        L = torch.linalg.cholesky(Kcc)
        W = torch.linalg.solve_triangular(L, K[..., :c, c:], upper=False)  # shape: (b, c, t)
        B = torch.linalg.solve_triangular(L.mT, W, upper=True)  # (K_CC + T)^{-1} K_Cx
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

    # -------------------------------------------------------------------------------------- gpytorch
    def forward(
        self,
        x: Tensor | None,
        inducing_points: Tensor,
        inducing_values: Tensor | None = None,
        variational_inducing_covar=None,
        index: Tensor | None = None,
        **kwargs,
    ) -> MultivariateNormal:
        """Training: the marginals ``q(f_j)`` of the columns ``index`` (or of training rows ``x``), caching
        the KL estimate. Evaluation: the joint predictive distribution of each q-batch of ``x``."""
        if self.training and (index is not None or x is not None):
            index = self.training_positions(x) if index is None else index
            mean, var, kl = self.column_terms(index)
            add_to_cache(self, "kl_divergence_memo", kl.sum() * (self.num_data / index.numel()))
            return MultivariateNormal(mean, DiagLinearOperator(var))
        if x is None:
            raise ValueError("x: test inputs are required (or pass index=... in training mode)")
        if x.shape[-1] != self.inputs.shape[-1]:
            raise ValueError(
                f"x: expected {self.inputs.shape[-1]} input dimensions, got shape {tuple(x.shape)}"
            )
        batch, (t, d) = x.shape[:-2], x.shape[-2:]
        xf = x.reshape(-1, t, d)
        outs = [self._predict(xc) for xc in xf.split(max(1, self.chunk_size // t))]
        mean, cov = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        return MultivariateNormal(mean.reshape(*batch, t), cov.reshape(*batch, t, t))

    def __call__(self, x: Tensor | None = None, prior: bool = False, index: Tensor | None = None, **kwargs):
        if prior:
            return self.model.forward(x)
        if self.training:
            self._clear_cache()
        if not self.variational_params_initialized.item():
            self.initialize_from_prior()
        return self.forward(x, self.inducing_points, index=index, **kwargs)


def dense_factor(index: Tensor, values: Tensor) -> Tensor:
    """The dense ``n x n`` upper-triangular matrix with ``F[index[j, s], j] = values[j, s]`` (small ``n``)."""
    n = index.shape[0]
    F = values.new_zeros(n, n)
    valid = index >= 0
    cols = torch.arange(n, device=index.device).unsqueeze(-1).expand_as(index)
    F[index[valid], cols[valid]] = values[valid]
    return F


def _as_buffer(lengthscale: Tensor | None, like: Tensor) -> Tensor:
    """Lengthscales as a 1-D buffer (empty for ``None``)."""
    if lengthscale is None:
        return like.new_zeros(0)
    return lengthscale.detach().reshape(-1).to(like).clone()
