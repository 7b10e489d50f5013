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
# # Sparse-within-sparse GPs (SWSGP): many inducing points, each input using its nearest few
#
# A stochastic variational GP (SVGP) with $M$ inducing points costs $O(BM^2 + M^3)$ per minibatch of $B$
# inputs, so $M$ stays in the hundreds or low thousands. SWSGP (Tran, Milios, Michiardi & Filippone,
# ICML 2021) lets each input $\mathbf x_i$ depend only on its $H$ nearest inducing points $N_i$:
#
# $$q(f_i) = \mathcal N\big(\mathbf k_{iN_i}\mathbf K_{N_iN_i}^{-1}\mathbf m_{N_i},\;
#   k_{ii} - \mathbf k_{iN_i}\mathbf K_{N_iN_i}^{-1}(\mathbf K_{N_iN_i} - \mathbf S_{N_i})
#   \mathbf K_{N_iN_i}^{-1}\mathbf k_{N_ii}\big),$$
#
# and the KL term is the average of the per-input $\mathrm{KL}(q(\mathbf u_{N_i})\,\|\,p(\mathbf u_{N_i}))$.
# A step then costs $O(BH^3)$ whatever $M$ is, and the variational parameters take $O(MH)$ memory, so
# $M$ can reach $10^4$–$10^5$.
#
# In gpkit the model is `gpkit.models.SWSGP`; its parts are the GPyTorch components
# `gpkit.variational.NearestInducingVariationalStrategy` and `LocalCholeskyVariationalDistribution`.
# We fit it on the UCI *elevators* set and compare it with GPyTorch's SVGP, then use it in BoTorch.

# %%
import os
import time

import gpytorch
import matplotlib.pyplot as plt
import torch

import gpkit
from gpkit.baselines import SVGPBaseline
from gpkit.datasets import load, standardize
from gpkit.metrics import gaussian_metrics
from gpkit.models import SWSGP
from gpkit.variational.inducing_points import init_inducing_points

SMOKE_TEST = os.environ.get("SMOKE_TEST")
torch.manual_seed(0)

# %% [markdown]
# ## Data
# Split 0 of elevators (16,599 rows, 18 inputs), standardised on the training part.

# %%
ds = load("elevators", split=0)
Xtr, ytr, Xte, yte, (y_mean, y_std) = standardize(ds.train_X, ds.train_y, ds.test_X, ds.test_y)
y_std = float(y_std)
if SMOKE_TEST:
    Xtr, ytr, Xte, yte = Xtr[:2000], ytr[:2000], Xte[:1000], yte[:1000]
print(f"train {tuple(Xtr.shape)}, test {tuple(Xte.shape)}")

H = 16 if SMOKE_TEST else 32
EPOCHS = 2 if SMOKE_TEST else 5

# %% [markdown]
# ## Fit one SWSGP
# `gpkit.fit` runs minibatch Adam on the per-datum negative ELBO (defaults: batch 100, lr 0.01). The
# neighbours of the training inputs are cached and refreshed after every epoch, because the inducing
# locations move. With `sparse_grad=True` the per-inducing-point parameters (mean, local factor rows,
# locations) get sparse gradients over the rows a minibatch touches and `gpkit.fit` updates them with
# `torch.optim.SparseAdam`, so a step does not pay an $O(M)$ dense optimizer update (on a CPU this is
# invisible up to $M \approx 10^4$ and 3x faster steps at $M = 10^5$; the ELBO values are the same).

# %%
M = 256 if SMOKE_TEST else 2048
model = SWSGP(Xtr, ytr.unsqueeze(-1), num_inducing=M, num_neighbors=H)
start = time.perf_counter()
gpkit.fit(model, epochs=EPOCHS, seed=0)
print(f"SWSGP M={M}, H={H}: {time.perf_counter() - start:.1f} s,", gaussian_metrics(model, model.likelihood, Xte, yte, y_std))

# %% [markdown]
# ## Accuracy and cost against SVGP
# The baseline is GPyTorch's SVGP (`VariationalStrategy` + `CholeskyVariationalDistribution`, Matérn-5/2
# ARD kernel, inducing points a random training subset), trained the same way. SVGP with $M = H$ has the
# same conditioning size per input; larger SVGPs quickly become expensive.


# %%
def fit_svgp(num_inducing):
    svgp = SVGPBaseline(init_inducing_points(Xtr, num_inducing, "random"))
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(Xtr)
    start = time.perf_counter()
    gpkit.fit(svgp, train_X=Xtr, train_Y=ytr, likelihood=likelihood, epochs=EPOCHS, batch_size=100, lr=0.01, seed=0)
    return (time.perf_counter() - start) / EPOCHS, gaussian_metrics(svgp, likelihood, Xte, yte, y_std)


def fit_swsgp(num_inducing):
    sws = SWSGP(Xtr, ytr.unsqueeze(-1), num_inducing=num_inducing, num_neighbors=H, sparse_grad=True)
    start = time.perf_counter()
    gpkit.fit(sws, epochs=EPOCHS, seed=0)
    return (time.perf_counter() - start) / EPOCHS, gaussian_metrics(sws, sws.likelihood, Xte, yte, y_std)


swsgp_M = [64, 256] if SMOKE_TEST else [256, 1024, 4096, 8192]
svgp_M = [H, 64] if SMOKE_TEST else [H, 128, 512]
results = {"SWSGP": [(m, *fit_swsgp(m)) for m in swsgp_M], "SVGP": [(m, *fit_svgp(m)) for m in svgp_M]}
for name, rows in results.items():
    for m, seconds, metrics in rows:
        print(f"{name:6s} M={m:5d}: {seconds:6.2f} s/epoch, RMSE {metrics['rmse']:.4f}, NLL {metrics['nll']:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
for name, marker in (("SWSGP", "o-"), ("SVGP", "s--")):
    ms = [r[0] for r in results[name]]
    axes[0].plot(ms, [r[2]["nll"] for r in results[name]], marker, label=name if name == "SVGP" else f"SWSGP (H={H})")
    axes[1].plot(ms, [r[1] for r in results[name]], marker, label=name if name == "SVGP" else f"SWSGP (H={H})")
axes[0].set(xscale="log", xlabel="inducing points M", ylabel="test NLL (lower is better)", title="accuracy vs M")
axes[1].set(xscale="log", yscale="log", xlabel="inducing points M", ylabel="seconds per epoch", title="cost vs M")
for ax in axes:
    ax.legend()
plt.show()

# %% [markdown]
# SWSGP's cost per epoch barely moves with $M$ (each step touches $B \times H$ inducing points, and with
# `sparse_grad=True` the optimizer updates only those), while
# SVGP's grows like $M^2$–$M^3$. Note that SWSGP's predictive mean is only piecewise smooth: it changes
# where an input's set of nearest inducing points changes.
#
# ## BoTorch
# `SWSGP` is a BoTorch `GPyTorchModel`: `posterior` gives the latent $f$ (add `observation_noise=True` for
# $y$), q-batches get a joint Gaussian conditioned on the union of the points' neighbour sets, and
# acquisition functions work as usual. Here we propose two new inputs near the best training input
# (a box of ±0.1 standard deviations around it) with `qLogExpectedImprovement`.

# %%
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.optim import optimize_acqf

best = ytr.argmax()
bounds = torch.stack([Xtr[best] - 0.1, Xtr[best] + 0.1])
acqf = qLogExpectedImprovement(model, best_f=ytr.max())
candidates, value = optimize_acqf(acqf, bounds=bounds, q=2, num_restarts=2, raw_samples=64, options={"maxiter": 30})
post = model.posterior(candidates, observation_noise=True)
print("best training target:", float(ytr.max() * y_std + y_mean))
print("candidates' predicted targets:", (post.mean.squeeze(-1) * y_std + y_mean).tolist())
print("joint predictive covariance over the q-batch (standardised scale):\n", post.distribution.covariance_matrix)
