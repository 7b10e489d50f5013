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
# # Dual memory GPs: sparse GPs that learn from a stream without forgetting
#
# A sparse variational GP usually stores $q(\mathbf u) = \mathcal N(\mathbf m, \mathbf S)$ on $M$ inducing
# points. The *dual* parameterisation (Adam et al., NeurIPS 2021) stores instead the data's site parameters
# projected on the inducing points,
#
# $$\boldsymbol\lambda_1 = \sum_i \mathbf k_{\mathbf Z}(\mathbf x_i)\,\tilde\lambda_{1,i},\qquad
#   \boldsymbol\Lambda_2 = \sum_i \mathbf k_{\mathbf Z}(\mathbf x_i)\,\beta_i\,\mathbf k_{\mathbf Z}(\mathbf x_i)^\top,$$
#
# so that $q(\mathbf u) = \mathcal N(\mathbf K\mathbf R^{-1}\boldsymbol\lambda_1, \mathbf K\mathbf R^{-1}\mathbf K)$
# with $\mathbf R = \mathbf K + \boldsymbol\Lambda_2$. A new batch simply *adds* its sites; old data need not
# be revisited. Chang et al. (ICML 2023) add a small **memory** of past points, chosen by Bayesian leverage
# score, that keeps the hyperparameters honest as the stream goes on.
#
# In gpkit: `gpkit.models.DualMemoryGP` (a BoTorch model) built from the GPyTorch components
# `gpkit.variational.DualVariationalStrategy`, `site_parameters`, `select_memory` and
# `select_inducing_points`. We stream the banana classification set and a magnetometer walk, and use the
# model in a BoTorch loop where new observations enter by one dual step instead of a refit.

# %%
import math
import os
import time

import gpytorch
import matplotlib.pyplot as plt
import torch

import gpkit
from gpkit.datasets import load, standardize
from gpkit.models import DualMemoryGP

SMOKE_TEST = os.environ.get("SMOKE_TEST")
torch.manual_seed(0)

# %% [markdown]
# ## Streaming banana (Bernoulli likelihood)
# 400 training points arrive in 4 batches of 100 (the protocol of Bui et al. 2017); M = 25 inducing points,
# 5 memory points per batch. Each `update` moves the inducing points by greedy pivoted Cholesky over the old
# inducing points and the new inputs, adds the batch's sites (damped E-steps), and refits the hyperparameters
# on the batch and the memory.

# %%
ds = load("streaming-banana")
tr, te = ds.splits["train"], ds.splits["test"]
X, y, Xt, yt = ds.X[tr], ds.y[tr].double(), ds.X[te], ds.y[te]
epochs = 5 if SMOKE_TEST else 30


def accuracy(model):
    p = model.likelihood(model.posterior(Xt).distribution).mean
    return ((p > 0.5).long() == yt).double().mean().item()


g = torch.linspace(-3, 3, 60 if not SMOKE_TEST else 25, dtype=torch.float64)
grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
model = DualMemoryGP(X[:100], y[:100], likelihood=gpytorch.likelihoods.BernoulliLikelihood(), num_inducing=25,
                     memory_size=20, memory_per_batch=5, update_epochs=epochs)
gpkit.fit(model, epochs=2 * epochs)
fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), constrained_layout=True)
for t in range(4):
    if t:
        model.update(X[100 * t : 100 * (t + 1)], y[100 * t : 100 * (t + 1)])
    with torch.no_grad():
        p = model.likelihood(model.posterior(grid).distribution).mean
    ax = axes[t]
    ax.contourf(g, g, p.reshape(len(g), len(g)).T, levels=20, cmap="RdBu_r", alpha=0.6)
    seen = X[: 100 * (t + 1)]
    ax.scatter(seen[:, 0], seen[:, 1], c=y[: 100 * (t + 1)], s=4, cmap="RdBu_r")
    z = model.variational_strategy.inducing_points.detach()
    ax.plot(z[:, 0], z[:, 1], "k+", ms=5)
    mem = model.memory[0]
    ax.plot(mem[:, 0], mem[:, 1], "o", mfc="none", mec="lime", ms=6)
    ax.set_title(f"after batch {t + 1}: test acc {accuracy(model):.3f}")
plt.show()

# %% [markdown]
# The baseline is the same model trained offline on all 400 points at once (the upper bound), and the
# stream without memory:

# %%
offline = DualMemoryGP(X, y, likelihood=gpytorch.likelihoods.BernoulliLikelihood(), num_inducing=25)
gpkit.fit(offline, epochs=4 * epochs)
no_mem = DualMemoryGP(X[:100], y[:100], likelihood=gpytorch.likelihoods.BernoulliLikelihood(), num_inducing=25,
                      memory_size=0, update_epochs=epochs)
gpkit.fit(no_mem, epochs=2 * epochs)
for t in range(1, 4):
    no_mem.update(X[100 * t : 100 * (t + 1)], y[100 * t : 100 * (t + 1)])
print(f"test accuracy: streamed with memory {accuracy(model):.3f}, without memory {accuracy(no_mem):.3f}, "
      f"offline {accuracy(offline):.3f}")

# %% [markdown]
# ## Magnetometer walk (Gaussian likelihood)
# The field norm along trial 1 of the indoor magnetometer data, streamed in time order (the robot explores
# the room), tested on points of the other walks. M = 100, 10 memory points per batch.

# %%
mag = load("magnetic")
Xtr, ytr, Xte, yte, (_, y_std) = standardize(mag.train_X, mag.train_y, mag.test_X, mag.test_y)
keep = torch.randperm(Xte.size(0), generator=torch.Generator().manual_seed(0))[: 500 if SMOKE_TEST else 3000]
Xte, yte = Xte[keep], yte[keep]
n_batches = 4 if SMOKE_TEST else 20
if SMOKE_TEST:
    Xtr, ytr = Xtr[:800], ytr[:800]
chunks = list(zip(Xtr.tensor_split(n_batches), ytr.unsqueeze(-1).tensor_split(n_batches)))


def nlpd(model):
    post = model.posterior(Xte, observation_noise=True)
    m, v = post.mean.squeeze(-1), post.variance.squeeze(-1)
    return (0.5 * torch.log(2 * math.pi * v) + 0.5 * (yte - m) ** 2 / v).mean().item() + math.log(float(y_std))


curves = {}
for label, memory in (("memory", 200), ("no memory", 0)):
    m = DualMemoryGP(*chunks[0], num_inducing=100, memory_size=memory, memory_per_batch=10 if memory else 0,
                     update_epochs=epochs)
    gpkit.fit(m, epochs=2 * epochs)
    curve, times = [nlpd(m)], []
    for Xb, yb in chunks[1:]:
        start = time.perf_counter()
        m.update(Xb, yb)
        times.append(time.perf_counter() - start)
        curve.append(nlpd(m))
    curves[label] = (curve, times)
    if memory:
        mag_model = m

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), constrained_layout=True)
for label, (curve, times) in curves.items():
    axes[0].plot(range(1, n_batches + 1), curve, "o-", label=label)
    axes[1].plot(range(2, n_batches + 1), times, "o-", label=label)
axes[0].set(xlabel="batch", ylabel="test NLPD", title="magnetometer stream")
axes[1].set(xlabel="batch", ylabel="seconds per update", title="cost stays flat")
axes[0].legend(), axes[1].legend()
with torch.no_grad():
    pred = mag_model.posterior(Xte).mean.squeeze(-1)
axes[2].scatter(Xte[:, 0], Xte[:, 1], c=pred, s=3, cmap="viridis")
axes[2].plot(Xtr[:, 0], Xtr[:, 1], "k-", lw=0.3, alpha=0.5)
axes[2].set_title("predicted field norm (walk in black)")
plt.show()

# %% [markdown]
# ## Bayesian optimisation: new points by one dual step
# `DualMemoryGP` is a BoTorch model. `condition_on_observations` (and so `fantasize`, used by
# qKnowledgeGradient) adds the new points' sites in one step, which for a Gaussian likelihood is the exact
# update at fixed inducing points; `update(x, y, epochs=0)` does the same and also grows the inducing set.
# Below: maximising the negative Branin function with qLogEI, against a `SingleTaskGP` refitted every step.

# %%
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf


def branin(X):
    x1, x2 = 15 * X[..., 0] - 5, 15 * X[..., 1]
    return (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * torch.cos(x1) + 10


bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
steps = 3 if SMOKE_TEST else 20
X0 = torch.rand(10, 2, dtype=torch.float64)
Y0 = -branin(X0).unsqueeze(-1)
results = {}
for method in ("dual step", "refit"):
    X, Y = X0.clone(), Y0.clone()
    if method == "dual step":
        surrogate = DualMemoryGP(X, Y, num_inducing=100, update_epochs=0)
        gpkit.fit(surrogate)
    seconds = 0.0
    for _ in range(steps):
        if method == "refit":
            start = time.perf_counter()
            surrogate = SingleTaskGP(X, Y)
            fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(surrogate.likelihood, surrogate))
            seconds += time.perf_counter() - start
        acq = qLogExpectedImprovement(surrogate, best_f=Y.max())
        x, _ = optimize_acqf(acq, bounds, q=1, num_restarts=4, raw_samples=64)
        y_new = -branin(x).unsqueeze(-1)
        X, Y = torch.cat([X, x]), torch.cat([Y, y_new])
        if method == "dual step":
            start = time.perf_counter()
            surrogate.update(x, y_new, epochs=0)
            seconds += time.perf_counter() - start
    results[method] = (Y.cummax(0).values.squeeze(-1), seconds / steps)

for method, (best, sec) in results.items():
    plt.plot(-0.397887 - best, label=f"{method} ({1000 * sec:.0f} ms per update)")
plt.yscale("log"), plt.xlabel("evaluation"), plt.ylabel("simple regret"), plt.legend()
plt.show()
