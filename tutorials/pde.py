# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solving high-frequency PDEs with Kronecker GPs (GP-HM)
#
# GP-HM (Fang et al., ICLR 2024) puts a GP prior with a learned **spectral mixture** kernel on the
# solution's values on a grid. Derivatives are GP conditional means (`K'' K^{-1} U` along one grid axis),
# and the grid values, kernel, and noise precisions are fitted jointly by minimising the negative log
# joint (prior + boundary + PDE residual). The Kronecker structure `K = K_1 ⊗ K_2` keeps every step
# per-factor, so a grid with N points costs O(N^1.5), not O(N^3).
#
# This notebook solves a 1-D and a 2-D high-frequency Poisson problem, compares the spectral mixture
# ("gm") and Student-t mixture kernels against a GP with an SE kernel (the GPyTorch-style baseline), and
# looks at the learned spectrum: the log-domain weights (a Jeffreys prior on `w`) shrink superfluous
# components. `gpkit.fit(solver)` runs the whole method: Adam on the joint, then a residual-only finish
# (collocation with the learned kernel: zero PDE residual at every interior grid point, the limit of the
# joint as the noise precisions grow) that makes the final iterate accurate; no step looks at the exact
# solution. `predict(X, return_std=True)` adds the posterior standard deviation.

# %%
import math
import os

import matplotlib.pyplot as plt
import torch

import gpkit
from gpkit.pde import KroneckerPDESolver, Poisson

SMOKE_TEST = os.environ.get("SMOKE_TEST")
torch.set_default_dtype(torch.float64)
torch.manual_seed(0)
ITERS = 200 if SMOKE_TEST else 1500

# %% [markdown]
# ## 1-D: `u'' = f` with `u = sin 60x + 0.2 sin 3x` on [0, 1]
# `from_solution` derives the source `f = u''` and the boundary data by autodiff. `max_frequency`
# (cycles per unit) must exceed the solution's top frequency (60 / 2π ≈ 9.5) and stay below the grid's
# Nyquist frequency, otherwise the solver warns.

# %%
problem = Poisson.from_solution(
    lambda X: torch.sin(60 * X[:, 0]) + 0.2 * torch.sin(3 * X[:, 0]), torch.tensor([[0.0], [1.0]])
)
X = torch.linspace(0, 1, 1000).unsqueeze(-1)
u = problem.solution(X)
solvers, errors = {}, {}
for kernel in ("gm", "student-t", "se"):
    solver = KroneckerPDESolver(problem, 100, num_components=30, max_frequency=15.0, kernel=kernel)
    gpkit.fit(solver, max_iter=ITERS, progress=False)  # Adam (lr 1e-2, cosine schedule), then the finish
    solvers[kernel] = solver
    errors[kernel] = float((solver.predict(X) - u).norm() / u.norm())
    print(
        f"{kernel:10s} final relative L2 = {errors[kernel]:.2e}, "
        f"residual between grid points = {solver.finish_info['midpoint_residual']:.1e}"
    )

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
axes[0].plot(X, u, "k", lw=2, label="exact")
for kernel, solver in solvers.items():
    pred = solver.predict(X)
    axes[0].plot(X, pred, "--", label=f"{kernel} ({errors[kernel]:.1e})")
    axes[1].semilogy(X, (pred - u).abs().clamp_min(1e-16), label=kernel)
axes[0].legend()
axes[0].set_title("solution")
axes[1].legend()
axes[1].set_title("|error|")
k = solvers["gm"].kernels[0]
w = k.weights.detach().squeeze(0)
axes[2].stem(k.frequencies.detach().squeeze(0) / solvers["gm"].widths[0], w / w.sum())  # cycles per unit of x
axes[2].axvline(60 / (2 * math.pi), color="r", ls=":", label="true frequency 60/2π")
axes[2].set_yscale("log")
axes[2].set_xlabel("frequency (cycles per unit)")
axes[2].set_title("learned spectrum (normalised weights)")
axes[2].legend()
fig.tight_layout()

# %% [markdown]
# The log-domain weights (flat prior on log w = Jeffreys prior on w) let superfluous components shrink;
# count the components that hold 99% of the weight (short smoke runs prune little).

# %%
order = w.argsort(descending=True)
active = int((w[order].cumsum(0) / w.sum() < 0.99).sum()) + 1
print(f"{active} of {w.numel()} components carry 99% of the weight")

# %% [markdown]
# ## 2-D: `Δu = f` with `u = sin 20x sin 20y` on [0, 1]²
# A product kernel per axis; the solver never forms the 4096 x 4096 covariance. For a linear PDE with
# constant coefficients the finish is one Newton step whose linear system (a Kronecker sum, a Sylvester
# equation in 2-D) is solved mode by mode, at per-factor cost.

# %%
problem2 = Poisson.from_solution(
    lambda X: torch.sin(20 * X[:, 0]) * torch.sin(20 * X[:, 1]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
)
grid = 32 if SMOKE_TEST else 64
solver2 = KroneckerPDESolver(problem2, grid, num_components=10, max_frequency=6.0, kernel="gm")
gpkit.fit(solver2, max_iter=ITERS // 2 if SMOKE_TEST else ITERS, progress=False)
g = torch.linspace(0, 1, 80)
XY = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
u2, pred2 = problem2.solution(XY), solver2.predict(XY)
print(f"2-D final relative L2 = {float((pred2 - u2).norm() / u2.norm()):.2e}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
im = axes[0].imshow(pred2.reshape(80, 80).T, origin="lower", extent=(0, 1, 0, 1))
fig.colorbar(im, ax=axes[0])
axes[0].set_title("GP-HM solution")
im = axes[1].imshow((pred2 - u2).abs().reshape(80, 80).T, origin="lower", extent=(0, 1, 0, 1))
fig.colorbar(im, ax=axes[1])
axes[1].set_title("|error|")
fig.tight_layout()

# %% [markdown]
# ## Posterior standard deviation
# `predict(X, return_std=True)` gives the Laplace (Gauss–Newton) posterior of `u(X)` under the fitted joint
# (dense in the grid size, so small grids only): the 1-D solver's uncertainty next to its actual error.

# %%
mean, std = solvers["gm"].predict(X[::10], return_std=True)
plt.figure(figsize=(6, 3))
plt.semilogy(X[::10], std, label="posterior std")
plt.semilogy(X[::10], (mean - u[::10]).abs().clamp_min(1e-16), label="|error|")
plt.legend()
plt.title("GP-HM (gm): uncertainty and error")
plt.tight_layout()
