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
# # DKLGP: variational sparse inverse Cholesky latent GPs (double-KL)
#
# DKLGP (Cao, Kang, Jimenez, Sang, Schäfer & Katzfuss, ICML 2023) keeps all $n$ training inputs as
# "inducing" locations, like VNNGP, but approximates *both* the prior and the posterior by sparse inverse
# Cholesky factors on the same maximin-ordered pattern:
#
# $$p(\mathbf f) \approx \mathcal N(\boldsymbol\mu, (UU^\top)^{-1}), \qquad
#   q(\mathbf f) = \mathcal N(\boldsymbol\nu, (VV^\top)^{-1}),$$
#
# where $U$ is the KL-optimal factor (column $j$: $U_{S_j,j} = K_{S_jS_j}^{-1}\mathbf e / \sqrt{\mathbf e^\top
# K_{S_jS_j}^{-1}\mathbf e}$) and $V$ is learned. Unlike VNNGP's mean-field $q$, $V$ has off-diagonal
# entries, so $q$ captures posterior correlations between neighbours. The ELBO is a sum over columns, so
# it is minibatched over columns $j$; each costs a few small dense solves whose size depends on
# $m = $ average $|S_j|$ (set by `rho`), not on $n$.
#
# In gpkit: `gpkit.models.DKLGP` (a GPyTorch `ApproximateGP` and a BoTorch model), built from
# `gpkit.variational.DKLVariationalStrategy`, `SparseCholeskyVariationalDistribution` and
# `gpkit.operators.SparseTriangularLinearOperator`. We fit it on UCI *kin40k* against GPyTorch's SVGP and
# VNNGP, use it for classification, and run a BoTorch loop. (All five UCI sets of the paper, the simulations
# and the timings are in `benchmarks/dklgp.py`; there SVGP has the lower RMSE on *bike*, for example.)

# %%
import os
import time

import gpytorch
import matplotlib.pyplot as plt
import torch

import gpkit
from gpkit.baselines import SVGPBaseline, VNNGPBaseline
from gpkit.datasets import load, min_max, standardize
from gpkit.metrics import gaussian_metrics
from gpkit.models import DKLGP
from gpkit.variational.inducing_points import init_inducing_points

SMOKE_TEST = os.environ.get("SMOKE_TEST")
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## Regression on UCI kin40k
# Inputs are min–max scaled and targets standardised on the training split (test metrics are reported on
# the original scale). On a laptop CPU we subsample the training set; remove the cap to use all of it.

# %%
ds = load("kin40k")
X_train, X_test = min_max(ds.train_X, ds.test_X)
_, y_train, _, y_test, (y_mean, y_std) = standardize(ds.train_X, ds.train_y, ds.test_X, ds.test_y)
n_max = 1500 if SMOKE_TEST else 6000
keep = torch.randperm(X_train.shape[0])[:n_max]
X_train, y_train = X_train[keep], y_train[keep]
epochs = 3 if SMOKE_TEST else 15
print(f"n_train={X_train.shape[0]}, n_test={X_test.shape[0]}, d={X_train.shape[1]}")

# %% [markdown]
# `DKLGP` orders the inputs by maximin distance (scaled by the kernel's lengthscales), builds the pattern
# $S_j$ for the given `rho`, and initialises $q$ by Newton steps. `gpkit.fit` trains it over minibatches
# of columns; after `reorder_epoch` epochs the inputs are re-ordered with the learned lengthscales.

# %%
start = time.perf_counter()
# y is standardised above already (as for the baselines): no outcome transform
model = DKLGP(
    X_train, y_train.unsqueeze(-1), rho=1.25, reorder_epoch=min(5, epochs - 1), outcome_transform=None
)
gpkit.fit(model, epochs=epochs, progress=False, seed=0)
dkl_time = time.perf_counter() - start
m = round((model.variational_strategy.index >= 0).sum(-1).double().mean().item())
# model.pointwise(): each test point's own marginal (model.posterior(X) is joint over all of X)
results = {"DKLGP": gaussian_metrics(model.pointwise(), model.likelihood, X_test, y_test, float(y_std))}
print(f"m = {m}, {dkl_time:.1f}s", results["DKLGP"])

# %% [markdown]
# The GPyTorch baselines at the same complexity: SVGP with $M = m$ inducing points (k-means
# initialisation) and VNNGP with $k = m$ neighbours, same kernel family, optimiser and epochs.


# %%
def matern(d):
    return gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=d))


d = X_train.shape[1]
vnngp = VNNGPBaseline(X_train, y_train, matern(d), gpytorch.likelihoods.GaussianLikelihood(), k=m)
gpkit.fit(vnngp, epochs=epochs, lr=0.01, batch_size=128, progress=False, seed=0)
results["VNNGP"] = gaussian_metrics(vnngp, vnngp.likelihood, X_test, y_test, float(y_std))

svgp = SVGPBaseline(init_inducing_points(X_train, m, "kmeans"))
svgp.covar_module = matern(d)
svgp_lik = gpytorch.likelihoods.GaussianLikelihood()
gpkit.fit(
    svgp,
    train_X=X_train,
    train_Y=y_train,
    likelihood=svgp_lik,
    epochs=epochs,
    lr=0.01,
    batch_size=128,
    progress=False,
    seed=0,
)
results["SVGP"] = gaussian_metrics(svgp, svgp_lik, X_test, y_test, float(y_std))

fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), constrained_layout=True)
names = list(results)
for ax, metric in zip(axes[:2], ["rmse", "nll"]):
    ax.bar(names, [results[k][metric] for k in names], color=["C0", "C1", "C2"])
    ax.set_title(f"kin40k test {metric.upper()} (m = {m})")
for name, obj in [("DKLGP", model), ("VNNGP", vnngp), ("SVGP", svgp)]:
    axes[2].plot(obj.fit_history, label=name)
axes[2].set_xlabel("epoch")
axes[2].set_title("training loss (-ELBO / n)")
axes[2].legend()
plt.show()
for k, v in results.items():
    print(f"{k:6s} RMSE {v['rmse']:.3f}  NLL {v['nll']:.3f}")

# %% [markdown]
# ## A non-Gaussian likelihood: classification on *banana*
# Any one-dimensional GPyTorch likelihood works; the expected log-likelihood is computed by Gauss–Hermite
# quadrature. Here a Bernoulli (probit) likelihood on the 2-D banana set.

# %%
banana = load("banana")
Xb, Xb_test = min_max(banana.train_X.double(), banana.test_X.double())
yb, yb_test = banana.train_y.double(), banana.test_y.double()
# repeated inputs (the set has a few) share one latent value in DKLGP, which keeps all their labels
if SMOKE_TEST:
    Xb, yb = Xb[:1000], yb[:1000]
clf = DKLGP(
    Xb, yb.unsqueeze(-1), likelihood=gpytorch.likelihoods.BernoulliLikelihood(), rho=2.0, reorder_epoch=None
)
gpkit.fit(clf, epochs=3 if SMOKE_TEST else 10, progress=False, seed=0)
with torch.no_grad():
    prob = clf.likelihood(clf.pointwise()(Xb_test)).mean
print(f"banana test accuracy: {((prob > 0.5).double() == yb_test).double().mean():.3f}")

g = torch.linspace(0, 1, 60)
grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
with torch.no_grad():
    pgrid = clf.likelihood(clf.pointwise()(grid)).mean.reshape(60, 60)
plt.figure(figsize=(4.5, 4))
plt.contourf(g, g, pgrid.T, levels=20, cmap="RdBu_r")
plt.scatter(Xb[:400, 0], Xb[:400, 1], c=yb[:400], s=4, cmap="RdBu_r", edgecolors="k", linewidths=0.2)
plt.title("DKLGP: P(y = 1 | x)")
plt.show()

# %% [markdown]
# ## BoTorch: Bayesian optimisation with a DKLGP surrogate
# `model.posterior(X)` returns a `GPyTorchPosterior` over the latent function with a *joint* covariance for
# each q-batch (test points are ordered after the training points and conditioned jointly), so q-batch
# acquisition functions such as `qLogExpectedImprovement` work. We maximise the (negated) 6-D Hartmann
# function. The predictive is smooth in $x$ only piecewise (the neighbour set of a test point changes as it
# moves), so BoTorch's L-BFGS may report an abnormal termination and restart; a larger `rho` smooths it.

# %%
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.optim import optimize_acqf
from botorch.test_functions import Hartmann

f = Hartmann(dim=6, negate=True)
bounds = torch.stack([torch.zeros(6), torch.ones(6)])
X_bo = torch.rand(20 if SMOKE_TEST else 60, 6)
Y_bo = f(X_bo).unsqueeze(-1)
best = [Y_bo.max().item()]
for it in range(2 if SMOKE_TEST else 10):
    Y_std = (Y_bo - Y_bo.mean()) / Y_bo.std()
    surrogate = DKLGP(X_bo, Y_std, rho=3.0, reorder_epoch=None)
    gpkit.fit(surrogate, epochs=30 if SMOKE_TEST else 80, batch_size=32, lr=0.02, progress=False, seed=it)
    acqf = qLogExpectedImprovement(surrogate, best_f=Y_std.max())
    cand, _ = optimize_acqf(
        acqf,
        bounds,
        q=2,
        num_restarts=2 if SMOKE_TEST else 4,
        raw_samples=32 if SMOKE_TEST else 128,
        options={"maxiter": 20 if SMOKE_TEST else 50},
    )
    X_bo, Y_bo = torch.cat([X_bo, cand]), torch.cat([Y_bo, f(cand).unsqueeze(-1)])
    best.append(Y_bo.max().item())
plt.figure(figsize=(4.5, 3))
plt.plot(best, marker="o")
plt.axhline(3.32237, ls="--", c="k", label="optimum")
plt.xlabel("BO iteration (q = 2)")
plt.ylabel("best value")
plt.legend()
plt.show()
print("best found:", best[-1])
