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
# # ETGP: one GP and C flows for multi-class classification
#
# The usual GP classifier with $C$ classes puts $C$ latent GPs under a softmax, so a training step costs $C$
# times an SVGP step. ETGP (Maroñas & Hernández-Lobato, ICML 2023) keeps **one** latent GP $f_0$ and maps it
# through $C$ element-wise invertible flows whose parameters come from a small neural network of the input:
#
# $$p(y \mid \mathbf x) = \mathrm{softmax}_y\big(G_{\theta_1(\mathbf x)}(f_0(\mathbf x)), \dots,
#   G_{\theta_C(\mathbf x)}(f_0(\mathbf x))\big).$$
#
# The $C$ processes $G_{\theta_c(\mathbf x)}(f_0)$ are non-stationary and dependent, and the ELBO's expectation
# is over the one-dimensional $q(f_0(\mathbf x))$ whatever $C$ is (Gauss–Hermite). The GP part of a step costs
# $O(BM^2 + M^3)$ once; the flows add $O(BQC)$ cheap element-wise operations.
#
# In gpkit the model is `gpkit.models.ETGP`; its parts are `gpkit.flows` (sinh-arcsinh, affine, Box-Cox,
# arcsinh, Tukey g-and-h, tanh; constant or `InputDependentFlow`) and `gpkit.likelihoods.ETGPLikelihood`.
# We fit it on the *letter* set (26 classes) and compare it with GPyTorch's multi-class SVGP.

# %%
import os
import time

import gpytorch
import matplotlib.pyplot as plt
import torch

import gpkit
from gpkit.baselines import MulticlassSVGPBaseline
from gpkit.datasets import load
from gpkit.models import ETGP
from gpkit.variational.inducing_points import init_inducing_points

SMOKE_TEST = os.environ.get("SMOKE_TEST")
torch.manual_seed(0)

# %% [markdown]
# ## Data
# Split 0 of letter: 20,000 images of capital letters summarised by 16 integer features; the test set is fold 0
# of a stratified 10-fold partition. ETGP standardises its inputs itself; the baseline gets the same scaling.

# %%
ds = load("letter", split=0)
Xtr, ytr, Xte, yte = ds.train_X, ds.train_y, ds.test_X, ds.test_y
n_train = 600 if SMOKE_TEST else 5000
keep = torch.randperm(Xtr.size(0), generator=torch.Generator().manual_seed(0))[:n_train]
Xtr, ytr = Xtr[keep], ytr[keep]
if SMOKE_TEST:
    Xte, yte = Xte[:500], yte[:500]
C = ds.extras["num_classes"]
epochs = 4 if SMOKE_TEST else 60
print(f"train {tuple(Xtr.shape)}, test {tuple(Xte.shape)}, C = {C}")


def metrics(probs):
    """Accuracy and mean negative log predictive probability of the true class."""
    p_true = probs.gather(-1, yte[:, None]).clamp_min(1e-300)
    return (probs.argmax(-1) == yte).double().mean().item(), -p_true.log().mean().item()


# %% [markdown]
# ## ETGP
# `gpkit.fit(model)` alone trains it with good defaults (at least 5,000 Adam steps); here we fix the number of
# epochs so that both models get the same budget. For the first quarter of the epochs the flow network is
# frozen (the flows use only their constant parameters): started at the identity, the flows give $f_0$ no
# gradient while the network's per-class biases have one, and the network would otherwise learn the labels
# alone and bypass the GP.

# %%
model = ETGP(Xtr, ytr, num_classes=C, num_inducing=100, warmup_epochs=epochs // 4)
start = time.perf_counter()  # training time only (both models start from k-means inducing points)
gpkit.fit(model, epochs=epochs, seed=0)
etgp_time = time.perf_counter() - start
etgp_acc, etgp_nll = metrics(model.predict_proba(Xte))
ablated_acc, _ = metrics(model.predict_proba(Xte, ablate="gp"))
print(f"ETGP: accuracy {etgp_acc:.3f}, NLL {etgp_nll:.3f}, {etgp_time:.0f} s")
print(f"with q(f0) replaced by 0 (the network alone): accuracy {ablated_acc:.3f}")

# %% [markdown]
# ## Baseline: GPyTorch's multi-class SVGP (C independent GPs)
# `IndependentMultitaskVariationalStrategy` over 26 whitened SVGPs with the same $M$, kernel family and
# k-means start, and `SoftmaxLikelihood(mixing_weights=False)`.

# %%
Xs, Xts = model.standardize(Xtr), model.standardize(Xte)
svgp = MulticlassSVGPBaseline(init_inducing_points(Xs, 100, "kmeans"), C)
start = time.perf_counter()
gpkit.fit(svgp, train_X=Xs, train_Y=ytr, likelihood=svgp.likelihood, epochs=epochs, seed=0)
svgp_time = time.perf_counter() - start
svgp_acc, svgp_nll = metrics(svgp.predict_proba(Xts))
print(f"SVGP ({C} GPs): accuracy {svgp_acc:.3f}, NLL {svgp_nll:.3f}, {svgp_time:.0f} s")
print(f"time ratio ETGP / SVGP: {etgp_time / svgp_time:.2f}")

# %% [markdown]
# ## The learned flows are non-stationary
# Each class logit is $G_{\theta_c(\mathbf x)}(f_0)$: a monotone function of the one latent value whose shape
# depends on the input. Below, the 26 flows at two test inputs, with the posterior mean of $f_0$ marked.

# %%
f0 = torch.linspace(-3, 3, 200, dtype=Xtr.dtype)
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, constrained_layout=True)
with torch.no_grad():
    for ax, i in zip(axes, (0, 1)):
        raw = model.likelihood.flow_parameters(Xts[i : i + 1])
        logits = model.likelihood.logits(f0.unsqueeze(-1), raw)[:, 0]  # 200 x C
        for c in range(C):
            ax.plot(f0, logits[:, c], lw=2.5 if c == int(yte[i]) else 0.8)
        ax.axvline(model.posterior(Xte[i : i + 1]).mean.item(), color="k", ls="--")
        ax.set_title(f"test input {i}: true letter {chr(65 + int(yte[i]))} (thick)")
        ax.set_xlabel("$f_0$")
axes[0].set_ylabel("class logit $G_c(f_0)$")
plt.show()

# %% [markdown]
# ## Time per step as C grows
# One training step (batch 256, M = 100) on synthetic inputs with C classes: ETGP evaluates the kernel and
# its Cholesky factor once whatever C; the C-GP SVGP does it C times. ETGP's remaining growth is the
# $O(BQC)$ element-wise flow work (cheap on a GPU, visible on a CPU).

# %%
def step_seconds(module, loss, repeats=3):
    opt = gpkit.make_optimizer(module)
    module.train()
    times = []
    for r in range(repeats + 1):
        idx = torch.randint(0, 5000, (256,))
        start = time.perf_counter()
        opt.zero_grad()
        loss(idx).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


Cs = (10, 30) if SMOKE_TEST else (10, 30, 100, 300)
X = torch.rand(5000, 4)
etgp_t, svgp_t = [], []
for c in Cs:
    y = torch.randint(0, c, (5000,))
    m = ETGP(X, y, c, inducing_points="random", warmup_epochs=0)
    etgp_t.append(step_seconds(m, m.batch_loss))
    s = MulticlassSVGPBaseline(m.standardize(X[:100]).clone(), c)
    mll = gpytorch.mlls.VariationalELBO(s.likelihood, s, num_data=5000)
    Xs_ = m.standardize(X)
    svgp_t.append(step_seconds(s, lambda i, s=s, mll=mll, y=y, X_=Xs_: -mll(s(X_[i]), y[i])))
plt.figure(figsize=(5, 3.5))
plt.loglog(Cs, etgp_t, "o-", label="ETGP (1 GP + C flows)")
plt.loglog(Cs, svgp_t, "s-", label="SVGP (C GPs)")
plt.xlabel("number of classes C")
plt.ylabel("seconds per step")
plt.legend()
plt.show()
for c, a, b in zip(Cs, etgp_t, svgp_t):
    print(f"C = {c}: ETGP {a * 1e3:.0f} ms, SVGP {b * 1e3:.0f} ms per step")

# %% [markdown]
# ## BoTorch
# `model.posterior(X)` is a BoTorch posterior of the latent $f_0$ (one output), so BoTorch's tools apply to it,
# e.g. drawing joint samples of $f_0$ at a few inputs.

# %%
post = model.posterior(Xte[:5])
print(post.mean.shape, post.rsample(torch.Size([4])).shape)
