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
# # Getting started with gpkit
#
# This notebook shows the machinery every gpkit method shares:
#
# 1. `gpkit.datasets` — real data with fixed splits (here the UCI *elevators* set),
# 2. `gpkit.fit` — one trainer for exact GPs, plain GPyTorch SVGPs and every gpkit model,
# 3. `gpkit.neighbors` — the maximin ordering and sparsity sets behind DKLGP, SWSGP and VNNGP,
# 4. `gpkit.benchmarking` — timing a model against its baseline in one process.
#
# `SMOKE_TEST=1` shrinks everything so that CI can run the notebook in seconds.

# %%
import math
import os

import gpytorch
import matplotlib.pyplot as plt
import torch

import gpkit
from gpkit import datasets, neighbors
from gpkit.benchmarking import Benchmark

SMOKE_TEST = os.environ.get("SMOKE_TEST")
torch.set_default_dtype(torch.float64)
torch.manual_seed(0)

# %% [markdown]
# ## 1. Data
# `load` returns a record with `X`, `y` and the split's `train`/`test` indices. The UCI files are only
# mean-centred, so we standardise on the training split.

# %%
ds = datasets.load("elevators", split=0)
print(ds)
train_X, train_y, test_X, test_y, (y_mean, y_std) = datasets.standardize(
    ds.train_X, ds.train_y, ds.test_X, ds.test_y
)
n_exact = 300 if SMOKE_TEST else 2000
n_train = 1000 if SMOKE_TEST else len(train_y)
train_X, train_y = train_X[:n_train], train_y[:n_train]
print(f"training on {n_train} points (exact GP on the first {n_exact}), testing on {len(test_y)}")


# %% [markdown]
# ## 2. One trainer: an exact GP and an SVGP
# `gpkit.fit` picks full-batch optimisation for an `ExactGP` and minibatch Adam on the ELBO (with the
# correct `num_data` scaling) for an `ApproximateGP`. A progress bar appears when running in a terminal.

# %%
class ExactGP(gpytorch.models.ExactGP):
    def __init__(self, X, y, likelihood):
        super().__init__(X, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(1.5, ard_num_dims=X.shape[-1]))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class SVGP(gpytorch.models.ApproximateGP):
    def __init__(self, inducing_points):
        q = gpytorch.variational.CholeskyVariationalDistribution(inducing_points.shape[0])
        strategy = gpytorch.variational.VariationalStrategy(self, inducing_points, q, learn_inducing_locations=True)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(1.5, ard_num_dims=inducing_points.shape[-1])
        )

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def evaluate(model, likelihood):
    """Test RMSE and full Gaussian NLL (incl. 0.5 log 2 pi) in the standardised units."""
    model.eval()
    likelihood.eval()
    with torch.no_grad():
        pred = likelihood(model(test_X))
    rmse = (pred.mean - test_y).pow(2).mean().sqrt().item()
    nll = (0.5 * math.log(2 * math.pi) + 0.5 * pred.variance.log() + 0.5 * (test_y - pred.mean) ** 2 / pred.variance)
    return rmse, nll.mean().item()


exact_likelihood = gpytorch.likelihoods.GaussianLikelihood()
exact = ExactGP(train_X[:n_exact], train_y[:n_exact], exact_likelihood)
gpkit.fit(exact, max_iter=20 if SMOKE_TEST else 150, lr=0.05)

svgp_likelihood = gpytorch.likelihoods.GaussianLikelihood()
svgp = SVGP(train_X[torch.randperm(n_train)[:128]].clone())
gpkit.fit(svgp, train_X=train_X, train_Y=train_y, likelihood=svgp_likelihood,
          epochs=2 if SMOKE_TEST else 20, batch_size=256, lr=0.01, seed=0)

results = {"exact GP (subset)": evaluate(exact, exact_likelihood), "SVGP (M=128, all data)": evaluate(svgp, svgp_likelihood)}
for name, (rmse, nll) in results.items():
    print(f"{name:24s} RMSE {rmse:.3f}   NLL {nll:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].plot(exact.fit_history, label="exact GP (per iteration)")
axes[0].plot(svgp.fit_history, label="SVGP (per epoch)")
axes[0].set(xlabel="iteration / epoch", ylabel="loss (negative MLL / ELBO per datum)", title="fit_history")
axes[0].legend()
with torch.no_grad():
    svgp_mean = svgp(test_X).mean
axes[1].scatter(test_y, svgp_mean, s=4, alpha=0.5)
axes[1].plot([-3, 3], [-3, 3], "k--", lw=1)
axes[1].set(xlabel="true y (standardised)", ylabel="SVGP mean", title="elevators test split 0")
fig.tight_layout()

# %% [markdown]
# ## 3. Ordering and neighbours
# DKLGP and VNNGP order the points by *maximin*: each next point is the one farthest from all points
# before it, so early points cover the space coarsely and later ones fill it in. `dist[k]` is that
# farthest distance; it shrinks as the ordering proceeds. The sparsity set of point j holds the earlier
# points within `rho * dist[j]`.

# %%
X2 = torch.rand(400 if SMOKE_TEST else 2000, 2)
order, dist = neighbors.maximin_order(X2)
X_ordered = X2[order]
pattern = neighbors.sparsity_pattern(X_ordered, dist, rho=1.5)
print(f"average sparsity-set size m = {pattern.mask.sum(-1).double().mean():.1f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].scatter(*X_ordered[:50].T, c=range(50), cmap="viridis")
axes[0].set(title="first 50 points of the maximin ordering", aspect="equal")
axes[1].loglog(range(2, len(dist) + 1), dist[1:])
axes[1].set(xlabel="position in the ordering", ylabel="dist (distance to earlier points)", title="length scales shrink ~ n^(-1/d)")
fig.tight_layout()

# %% [markdown]
# ## 4. Benchmarking
# `gpkit bench NAME` runs `benchmarks/NAME.py` with this harness and writes `benchmarks/results/NAME.{json,md}`.
# The same object can be used interactively: medians over repeats, peak memory and ratios to a baseline.

# %%
bench = Benchmark("getting-started", repeats=3)
for name, model in [("SVGP", svgp), ("exact GP", exact)]:
    m = bench.measure(lambda model=model: model(test_X).mean)
    bench.add("elevators predict", name, seconds=m.seconds, peak_memory_mb=m.peak_memory_mb)
bench.compare("SVGP", ["exact GP"], ["seconds"])
print(bench.markdown())
