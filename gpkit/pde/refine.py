"""Residual-only finishing steps for :class:`~gpkit.pde.KroneckerPDESolver`: Gauss–Newton polish and collocation."""

from __future__ import annotations

import torch
from torch import Tensor

from ..operators.kronecker_grid import KroneckerCholesky, mode_product


def _conjugate_gradients(matvec, b: Tensor, max_iter: int, tol: float = 1e-12) -> Tensor:
    """Plain conjugate gradients for a symmetric positive definite operator given as ``matvec``."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rs = (r * r).sum()
    stop = tol**2 * rs
    for _ in range(max_iter):
        Ap = matvec(p)
        alpha = rs / (p * Ap).sum()
        x.add_(alpha * p)
        r.sub_(alpha * Ap)
        rs_new = (r * r).sum()
        if rs_new <= stop:
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def _preconditioned_gmres(A: Tensor, B: Tensor, c: Tensor, rhs: Tensor, max_iter: int) -> Tensor:
    """Solve A X + X B + c * X = rhs by GMRES, preconditioned with the Sylvester solve of A X + X B = Q."""
    import numpy as np
    import scipy.sparse.linalg

    la, Va = torch.linalg.eig(A)
    lb, Vb = torch.linalg.eig(B)
    Va_inv, Vb_inv = torch.linalg.inv(Va), torch.linalg.inv(Vb)
    denom = la.unsqueeze(-1) + lb
    shape = rhs.shape

    def sylvester(q):
        Q = torch.as_tensor(np.asarray(q)).reshape(shape).to(Va)
        return (Va @ ((Va_inv @ Q @ Vb) / denom) @ Vb_inv).real.reshape(-1).cpu().numpy()

    def matvec(x):
        Xm = torch.as_tensor(np.asarray(x)).reshape(shape).to(A)
        return (A @ Xm + Xm @ B + c * Xm).reshape(-1).cpu().numpy()

    n = rhs.numel()
    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    pre = scipy.sparse.linalg.LinearOperator((n, n), matvec=sylvester, dtype=np.float64)
    x, _ = scipy.sparse.linalg.gmres(
        op, rhs.reshape(-1).cpu().numpy(), M=pre, rtol=1e-12, restart=max_iter, maxiter=1
    )
    return torch.as_tensor(x).reshape(shape).to(rhs)


class ResidualFinishMixin:
    """
    Steps that lower the same negative log joint with the kernel fixed, using only the PDE residual and the
    boundary data (never the exact solution). Mixed into :class:`~gpkit.pde.KroneckerPDESolver`.
    """

    def _set_optimal_precisions(self, chol: KroneckerCholesky) -> None:
        """tau, v <- their closed-form minimisers of the negative log joint given the grid values."""
        res = self._stacked_residuals(self.W, chol)
        n_b = self.boundary_values.numel()
        # mean squares floored at (1e-10 x the data's scale)^2 so exact fits do not give infinite precisions
        b_floor = (1e-10 * self.boundary_values.pow(2).mean().sqrt().clamp_min(1e-30)) ** 2
        r_floor = (1e-10 * self.source_values.pow(2).mean().sqrt().clamp_min(1.0)) ** 2
        self.log_tau.fill_(-res[:n_b].pow(2).mean().clamp_min(b_floor).log().item())
        self.log_v.fill_(-res[n_b:].pow(2).mean().clamp_min(r_floor).log().item())

    def _stacked_residuals(self, W: Tensor, chol: KroneckerCholesky) -> Tensor:
        """Boundary misfits then PDE residuals (flattened) of the whitened grid values ``W``."""
        U = chol.unwhiten(W)
        r = self.problem.residual(self.grid_derivatives(U, chol), self.grid_points, self.source_values)
        return torch.cat([U[self.boundary_mask] - self.boundary_values, r.reshape(-1)])

    @torch.no_grad()
    def polish(
        self, rounds: int = 2, method: str = "auto", max_dense: int = 4096, cg_iters: int = 500
    ) -> ResidualFinishMixin:
        r"""
        Block-coordinate polish of the same negative log joint with the kernel fixed: a Gauss–Newton step on
        the whitened grid values :math:`W` (the exact minimiser for linear PDEs),

        .. math::
            \min_{\Delta} \tfrac12\|W + \Delta\|^2 + \tfrac12 \|D^{1/2}(\rho + J\Delta)\|^2,

        with :math:`\rho` the stacked boundary misfits and residuals, :math:`J` their Jacobian and
        :math:`D = \operatorname{diag}(\lambda_b\tau, \dots, v, \dots)`, followed by the closed-form optimal
        :math:`\tau = N_b / \sum_b (U_b - g_b)^2` and :math:`v = N_c / \sum_c r_c^2`. Uses only the residual.

        :param rounds: Number of (grid values, precisions) updates.
        :param method: ``"dense"`` (least squares with the dense Jacobian), ``"cg"`` (matrix-free conjugate
            gradients with Jacobian-vector products; Kronecker cost per iteration) or ``"auto"`` (dense up to
            ``max_dense`` grid points).
        :param max_dense: Largest grid for the dense method under ``"auto"``.
        :param cg_iters: Conjugate-gradient iterations per round.
        :return: ``self``.
        """
        if method not in ("auto", "dense", "cg"):
            raise ValueError(f"method must be 'auto', 'dense' or 'cg', got {method!r}.")
        n = self.W.numel()
        if method == "auto":
            method = "dense" if n <= max_dense else "cg"
        chol = self.factorization()
        n_b = self.boundary_values.numel()

        def stacked(W: Tensor) -> Tensor:
            return self._stacked_residuals(W, chol)

        for _ in range(rounds):
            W0 = self.W.detach().clone()
            res0 = stacked(W0)
            tau, v = self.log_tau.exp(), self.log_v.exp()
            weights = torch.cat(
                [(self.problem.boundary_weight * tau).expand(n_b), v.expand(res0.numel() - n_b)]
            )
            if method == "dense":
                J = torch.func.jacrev(stacked)(W0).reshape(res0.numel(), n)
                A = torch.cat(
                    [torch.eye(n, dtype=W0.dtype, device=W0.device), weights.sqrt().unsqueeze(-1) * J]
                )
                c = torch.cat([-W0.reshape(-1), -weights.sqrt() * res0])
                step = torch.linalg.lstsq(A.cpu(), c.cpu().unsqueeze(-1), driver="gelsd").solution
                step = step.to(W0).reshape(W0.shape)
            else:
                _, vjp = torch.func.vjp(stacked, W0)

                def normal_matvec(x: Tensor, W0=W0, weights=weights, vjp=vjp) -> Tensor:
                    return x + vjp(weights * torch.func.jvp(stacked, (W0,), (x,))[1])[0]

                rhs = -(W0 + vjp(weights * res0)[0])
                step = _conjugate_gradients(normal_matvec, rhs, cg_iters)
            self.W.add_(step)
            self._set_optimal_precisions(chol)
        self.loss()  # refresh relative_residual
        return self

    def _constant_linear_terms(self) -> dict | None:
        """Coefficients ``{key: c}`` when the operator is sum_key c * derivs[key] with constant c, else None."""
        keys = self.problem.derivatives
        X = self.grid_points
        zero = {k: torch.zeros(self.sizes, dtype=X.dtype, device=X.device) for k in keys}
        if self.problem.operator(zero, X).abs().max() > 0:
            return None
        coefs = {}
        for key in keys:
            for scale in (1.0, 2.0):
                field = dict(zero)
                field[key] = torch.full(self.sizes, scale, dtype=X.dtype, device=X.device)
                value = self.problem.operator(field, X) / scale
                if (value - value.reshape(-1)[0]).abs().max() > 1e-12 * value.abs().max().clamp_min(1.0):
                    return None
                if scale == 2.0 and abs(value.reshape(-1)[0] - coefs[key]) > 1e-12 * abs(coefs[key]) + 1e-300:
                    return None
                coefs[key] = value.reshape(-1)[0].item()
            if len(set(key)) > 1:
                return None
        return coefs

    @torch.no_grad()
    def solve_collocation(self, newton_steps: int = 20) -> ResidualFinishMixin:
        r"""
        Set the grid values to the collocation solution with the kernel fixed: :math:`U = g` on the boundary and
        zero PDE residual at every interior grid point — the :math:`\tau, v \to \infty` limit of the Gauss–Newton
        step of :meth:`polish`. For linear operators with constant coefficients on 1-D (a linear solve) and 2-D
        grids (a Sylvester equation :math:`A U + U B = F`, Bartels–Stewart, :math:`O(N_1^3 + N_2^3)`). Nonlinear
        operators whose derivative terms have constant coefficients (e.g. Allen–Cahn) take Newton steps; each
        linearised system is solved by Richardson iterations preconditioned with the Sylvester solve of its
        constant-coefficient part. Then :math:`\tau, v` are set to their closed-form optima. Uses only the residual.

        :param newton_steps: Newton steps for nonlinear operators.
        :return: ``self``.
        """
        coefs = self._constant_linear_terms()
        d = self.problem.dim
        if d > 2:
            raise NotImplementedError("solve_collocation supports 1-D and 2-D grids.")
        if coefs is None:
            return self._newton_collocation(newton_steps)
        import scipy.linalg

        chol = self.factorization()
        mats = []
        for i in range(d):
            A = torch.zeros(self.sizes[i], self.sizes[i], dtype=self.W.dtype, device=self.W.device)
            for key, c in coefs.items():
                if key and key[0] == i:
                    cross = self.kernels[i].grid_covariance(self.sizes[i], self.spacings[i], len(key))
                    A = A + c * chol.conditional_operator(cross, i)
            mats.append(A)
        mats[0] = mats[0] + coefs.get((), 0.0) * torch.eye(
            self.sizes[0], dtype=self.W.dtype, device=self.W.device
        )
        U = torch.zeros(self.sizes, dtype=self.W.dtype, device=self.W.device)
        U[self.boundary_mask] = self.boundary_values
        interior = [torch.arange(1, n - 1, device=U.device) for n in self.sizes]
        F = self.source_values - sum(
            mode_product(U, A, i) for i, A in enumerate(mats)
        )  # boundary contributions
        if d == 1:
            I = interior[0]
            U[I] = torch.linalg.solve(mats[0][I][:, I], F[I])
        else:
            I, J = interior
            A, B = mats[0][I][:, I], mats[1][J][:, J].mT
            rhs = F[I][:, J]
            X = scipy.linalg.solve_sylvester(A.cpu().numpy(), B.cpu().numpy(), rhs.cpu().numpy())
            U[1:-1, 1:-1] = torch.as_tensor(X).to(U)
        self.W.copy_(chol.whiten(U))
        self._set_optimal_precisions(chol)
        self.loss()  # refresh relative_residual
        return self

    def _newton_collocation(self, newton_steps: int, inner_steps: int = 50, tol: float = 1e-12):

        problem, X, d = self.problem, self.grid_points, self.problem.dim
        if any(len(set(key)) > 1 for key in problem.derivatives):
            raise NotImplementedError("solve_collocation does not support mixed derivatives.")
        chol = self.factorization()
        ops = {}
        for key in problem.derivatives:
            if key:
                i, order = key[0], len(key)
                cross = self.kernels[i].grid_covariance(self.sizes[i], self.spacings[i], order)
                ops[key] = chol.conditional_operator(cross, i)  # shape: (N_i, N_i)
        U = chol.unwhiten(self.W).clone()
        U[self.boundary_mask] = self.boundary_values
        inner = ~self.boundary_mask
        interior = (slice(1, -1),) * d
        f_scale = self.source_values.abs().max().clamp_min(1.0)
        for _ in range(newton_steps):
            derivs = self.grid_derivatives(U, chol)
            R = problem.residual(derivs, X, self.source_values)
            if R[inner].abs().max() <= tol * f_scale:
                break
            coef = {}
            for key in problem.derivatives:  # pointwise d operator / d derivs[key] at the current fields
                tangent = {k: torch.zeros_like(v) for k, v in derivs.items()}
                tangent[key] = torch.ones_like(derivs[key])
                coef[key] = torch.func.jvp(lambda dv: problem.operator(dv, X), (derivs,), (tangent,))[1]
            mats = [torch.zeros(n, n, dtype=U.dtype, device=U.device) for n in self.sizes]
            for key, op in ops.items():
                c = coef[key][inner]
                if (c - c.mean()).abs().max() > 1e-8 * c.abs().max().clamp_min(1e-300):
                    raise NotImplementedError(
                        "solve_collocation needs constant coefficients on the derivative terms."
                    )
                mats[key[0]] = mats[key[0]] + c.mean() * op
            c0 = coef.get((), torch.zeros_like(U))
            c0_mean = c0[inner].mean()
            c0_var = (c0 - c0_mean)[interior]
            A = mats[0][1:-1, 1:-1] + c0_mean * torch.eye(self.sizes[0] - 2, dtype=U.dtype, device=U.device)
            rhs = -R[interior]
            if d == 1:
                delta = torch.linalg.solve(A + torch.diag(c0_var), rhs)
            else:
                delta = _preconditioned_gmres(A, mats[1][1:-1, 1:-1].mT, c0_var, rhs, inner_steps)
            # damped step: halve until the interior residual decreases
            base = R[inner].norm()
            for _ in range(20):
                trial = U.clone()
                trial[interior] += delta
                r_trial = problem.residual(self.grid_derivatives(trial, chol), X, self.source_values)[
                    inner
                ].norm()
                if r_trial < base:
                    break
                delta = 0.5 * delta
            else:
                break
            U = trial
        self.W.copy_(chol.whiten(U))
        self._set_optimal_precisions(chol)
        self.loss()  # refresh relative_residual
        return self
