"""Dual memory GP (Chang et al., ICML 2023): continual learning on streams, and fantasy updates in a BO loop.

Part 1, streams (``gpkit.datasets``; inputs and targets standardised on the training split):
- UCI elevators and bike: the training split in a random order (seeded) cut into 50 batches; M = 100
  inducing points, 10 memory points per batch (memory capped at 500). Test NLPD (full Gaussian NLL of the
  noisy targets incl. 0.5 log 2π, original scale) and RMSE after the last batch; seconds per update.
- magnetometer (trial 1, a walk streamed in time order, 20 batches; tested on 3000 points of trials 2-5).
- streaming banana (Bernoulli, Matérn-5/2, M = 25, 4 batches of 100, memory 5 per batch): test accuracy
  and NLPD of the labels.
Methods: ``DualMemoryGP`` with its defaults for streaming (the default ``gpkit.fit`` on the first batch, then 30
hyperparameter epochs per batch on batch + memory, full batch, Adam lr 0.1; ``memory_weighting="unit"``: each memory point weight 1), the same with
``memory_weighting="uniform"`` (memory weights N_old/|memory|, the spec's choice), the same model with
``memory_size=0`` ("no memory"), and the upper bound
offline GPyTorch SVGP (M = 100, whitened, inducing points learned) trained on all training data with
``gpkit.fit`` (Adam lr 0.01, batch 256) until the epoch loss improves by less than 1e-4 (relative) over 3
epochs (at most 60 epochs). Time per update is the wall time of ``update`` per batch.

Part 2, BO (Branin on the unit square, noise std 0.1, maximising -Branin): 10 Sobol points, then q = 1
``qLogExpectedImprovement`` (``optimize_acqf``, 4 restarts, 64 raw samples) per step. Surrogates: the dual
memory GP fitted once on the initial design and then updated by one dual step per observation
(``update(x, y, epochs=0)``: exact conditioning at fixed hyperparameters, inducing points growing up to
100), or by ``update(x, y, epochs=5)`` (five hyperparameter steps on batch + memory); BoTorch ``SingleTaskGP`` refitted from scratch each step (``fit_gpytorch_mll``); GPyTorch's OVC
(``get_fantasy_model`` of an SVGP fitted on the initial design, M = 10, all new points conditioned in).
Simple regret of the best observed true value; seconds of the surrogate update per step (median,
``update_seconds``: the dual model's ``update``, the refit's construction and fit, OVC's ``get_fantasy_model`` and
wrapper) and ``ready_seconds``, the same plus one posterior call right after it, in which each method builds the
prediction caches it computes lazily (so the comparison holds the same work); the acquisition optimisation is not
timed.

Selecting what runs (default: everything): ``GPKIT_DUAL_CASES`` (comma-separated, from elevators, bike,
magnetic, banana, bo), ``GPKIT_DUAL_VARIANTS`` (UCI/magnetometer rows, from unit, uniform, none, svgp),
``GPKIT_DUAL_SEEDS`` (comma-separated UCI stream seeds: order of the data and model seed; default 0).
With ``GPKIT_BENCH_KEEP=1`` (any benchmark) the rows of the results file being replaced are kept for the (case,
method) pairs not rerun, marked in a ``run`` column with the run they come from; the file's notes say which
earlier runs used other defaults.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time

import gpytorch
import torch
from botorch.models.gpytorch import GPyTorchModel

import gpkit
from gpkit.baselines import SVGPBaseline
from gpkit.datasets import load, standardize
from gpkit.models import DualMemoryGP
from gpkit.variational.inducing_points import init_inducing_points


CASES = ("elevators", "bike", "magnetic", "banana", "bo")
VARIANTS = ("unit", "uniform", "none", "svgp")


def _selected(env: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The comma-separated names in ``$env`` (default: all of ``allowed``)."""
    names = tuple(n.strip() for n in os.environ.get(env, ",".join(allowed)).split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{env} names unknown {unknown}; choose from {allowed}")
    return names


def _config(bench) -> dict:
    cfg = _defaults(bench)
    env_seeds = [int(t) for t in os.environ.get("GPKIT_DUAL_SEEDS", "").split(",") if t.strip()]
    return {**cfg, "uci_seeds": tuple(env_seeds) or cfg["seeds"]}  # UCI streams only; magnetometer keeps "seeds"


def _defaults(bench) -> dict:
    if bench.quick:
        return {"uci": ("elevators",), "batches": 10, "max_train": 3000, "seeds": (0,), "magnetic": False,
                "magnetic_batches": 5, "bo_steps": 5, "bo_seeds": (0,), "banana_seeds": (0,), "svgp_epochs": 10}
    return {"uci": ("elevators", "bike"), "batches": 50, "max_train": None, "seeds": (0,), "magnetic": True,
            "magnetic_batches": 20, "bo_steps": 20, "bo_seeds": (0, 1, 2), "banana_seeds": (0, 1, 2),
            "svgp_epochs": 60}


def _log(text: str) -> None:
    print(f"[dual_memory bench] {text}", file=sys.stderr, flush=True)


def _nlpd_rmse(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor, y_std: float) -> dict:
    nll = (0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mean).pow(2) / var).mean().item() + math.log(y_std)
    return {"nlpd": nll, "rmse": (mean - y).pow(2).mean().sqrt().item() * y_std}


@torch.no_grad()
def _dual_metrics(model, X, y, y_std):
    post = model.posterior(X, observation_noise=True)
    return _nlpd_rmse(post.mean.squeeze(-1), post.variance.squeeze(-1), y, y_std)


def _stream(bench, case, Xtr, ytr, Xte, yte, y_std, batches, seed, memory_size, memory_per_batch, M, likelihood=None,
            metrics=None, memory_weighting="unit"):
    """Stream the batches through a DualMemoryGP; return (final metrics, seconds per update list)."""
    metrics = metrics or _dual_metrics
    chunks = list(zip(Xtr.tensor_split(batches), ytr.tensor_split(batches)))
    torch.manual_seed(seed)
    model = DualMemoryGP(chunks[0][0], chunks[0][1], likelihood=likelihood, num_inducing=M, memory_size=memory_size,
                         memory_per_batch=memory_per_batch, seed=seed, memory_weighting=memory_weighting)
    gpkit.fit(model, progress=False)  # the default fit on the first batch
    times, curve = [], [metrics(model, Xte, yte, y_std)]
    for X, y in chunks[1:]:
        start = time.perf_counter()
        model.update(X, y, progress=False)
        times.append(time.perf_counter() - start)
        curve.append(metrics(model, Xte, yte, y_std))
    return curve, times


def _offline_svgp(Xtr, ytr, Xte, yte, y_std, M, seed, epochs):
    torch.manual_seed(seed)
    svgp = SVGPBaseline(init_inducing_points(Xtr, M, "random", seed))
    lik = gpytorch.likelihoods.GaussianLikelihood().to(Xtr)
    start = time.perf_counter()
    gpkit.fit(svgp, train_X=Xtr, train_Y=ytr, likelihood=lik, epochs=epochs, lr=0.01, batch_size=256, seed=seed,
              tol=1e-4, patience=3, progress=False)
    seconds = time.perf_counter() - start
    svgp.eval(), lik.eval()
    with torch.no_grad():
        pred = lik(svgp(Xte))
    return _nlpd_rmse(pred.mean, pred.variance, yte, y_std), seconds, len(svgp.fit_history)


def _regression_streams(bench, cfg):
    M, per_batch = 100, 10
    cases, variants = _selected("GPKIT_DUAL_CASES", CASES), _selected("GPKIT_DUAL_VARIANTS", VARIANTS)
    sets = [name for name in cfg["uci"] if name in cases] + (["magnetic"] if cfg["magnetic"] and "magnetic" in cases else [])
    for name in sets:
        ds = load(name, split=0, dtype=bench.dtype)
        Xtr, ytr, Xte, yte, (_, y_std) = standardize(ds.train_X, ds.train_y, ds.test_X, ds.test_y)
        y_std = float(y_std)
        if name == "magnetic":  # the walk in time order; test on a fixed subsample of the other walks
            keep = torch.randperm(Xte.size(0), generator=torch.Generator().manual_seed(0))[:3000]
            Xte, yte = Xte[keep], yte[keep]
        for seed in cfg["seeds"] if name == "magnetic" else cfg["uci_seeds"]:
            if name != "magnetic":
                order = torch.randperm(Xtr.size(0), generator=torch.Generator().manual_seed(seed))
                if cfg["max_train"]:
                    order = order[: cfg["max_train"]]
                X_s, y_s = Xtr[order], ytr[order]
            else:
                X_s, y_s = Xtr, ytr
            case = f"{name} (seed {seed})"
            batches = cfg["magnetic_batches"] if name == "magnetic" else cfg["batches"]
            for label, mem, weighting in (("dual memory GP", 50 * per_batch, "unit"),
                                          ("dual memory GP (memory weight N_old/|memory|)", 50 * per_batch,
                                           "uniform"),
                                          ("no memory", 0, "unit")):
                if {"dual memory GP": "unit", "no memory": "none"}.get(label, "uniform") not in variants:
                    continue
                _log(f"{case}: {label}")
                curve, times = _stream(bench, case, X_s, y_s.unsqueeze(-1), Xte, yte, y_std, batches, seed,
                                       mem, per_batch if mem else 0, M, memory_weighting=weighting)
                half = len(times) // 2
                bench.add(case, label, nlpd=curve[-1]["nlpd"], rmse=curve[-1]["rmse"],
                          nlpd_after_first=curve[0]["nlpd"], update_seconds=statistics.median(times),
                          update_seconds_early=statistics.median(times[: max(half, 1)]),
                          update_seconds_late=statistics.median(times[half:]), batches=batches,
                          n_train=X_s.size(0))
            if "svgp" not in variants:
                continue
            _log(f"{case}: offline SVGP")
            res, seconds, epochs = _offline_svgp(X_s, y_s, Xte, yte, y_std, M, seed, cfg["svgp_epochs"])
            bench.add(case, "offline SVGP (all data)", nlpd=res["nlpd"], rmse=res["rmse"], fit_seconds=seconds,
                      epochs=epochs, n_train=X_s.size(0))


@torch.no_grad()
def _banana_metrics(model, X, y, _):
    p = model.likelihood(model.posterior(X).distribution).mean.clamp(1e-6, 1 - 1e-6)
    acc = ((p > 0.5).long() == y).double().mean().item()
    nlpd = -(y * p.log() + (1 - y) * (1 - p).log()).mean().item()
    return {"accuracy": acc, "nlpd": nlpd}


def _banana(bench, cfg):
    if "banana" not in _selected("GPKIT_DUAL_CASES", CASES):
        return
    ds = load("streaming-banana", dtype=bench.dtype)
    tr, te = ds.splits["train"], ds.splits["test"]
    X, y, Xt, yt = ds.X[tr], ds.y[tr].to(bench.dtype), ds.X[te], ds.y[te]
    for seed in cfg["banana_seeds"]:
        case = f"streaming banana (seed {seed})"
        for label, mem, per in (("dual memory GP", 20, 5), ("no memory", 0, 0)):
            lik = gpytorch.likelihoods.BernoulliLikelihood()
            curve, times = _stream(bench, case, X, y, Xt, yt, 1.0, 4, seed, mem, per, 25, likelihood=lik,
                                   metrics=_banana_metrics)
            bench.add(case, label, accuracy=curve[-1]["accuracy"], nlpd=curve[-1]["nlpd"],
                      accuracy_per_batch=[round(c["accuracy"], 4) for c in curve],
                      update_seconds=statistics.median(times))
        torch.manual_seed(seed)
        model = DualMemoryGP(X, y, likelihood=gpytorch.likelihoods.BernoulliLikelihood(), num_inducing=25, seed=seed)
        start = time.perf_counter()
        gpkit.fit(model, progress=False)
        res = _banana_metrics(model, Xt, yt, 1.0)
        bench.add(case, "offline dual GP (all data)", accuracy=res["accuracy"], nlpd=res["nlpd"],
                  fit_seconds=time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ BO
def _branin(X: torch.Tensor) -> torch.Tensor:
    x1, x2 = 15 * X[..., 0] - 5, 15 * X[..., 1]
    return (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * torch.cos(x1) + 10


class _Wrapped(GPyTorchModel):
    """A GPyTorch model (OVC's ExactGP, or the SVGP itself) as a minimal BoTorch model for the acquisition."""

    _num_outputs = 1

    def __init__(self, gp):
        super().__init__()
        self.gp, self.likelihood = gp, gp.likelihood

    def forward(self, X):
        return self.gp(X)

    def __call__(self, X):
        return self.gp(X)


def _first_posterior_seconds(model, X) -> float:
    """Seconds of one posterior call right after the surrogate update: the prediction caches each method computes
    lazily (OVC's and SingleTaskGP's mean cache, the dual model's factors of q(u)) are built here."""
    start = time.perf_counter()
    with torch.no_grad():
        model.posterior(X).mean
    return time.perf_counter() - start


def _bo(bench, cfg):
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.optim import optimize_acqf
    from torch.quasirandom import SobolEngine

    if "bo" not in _selected("GPKIT_DUAL_CASES", CASES):
        return
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=bench.dtype)
    optimum = -0.397887
    for seed in cfg["bo_seeds"]:
        case = f"BO Branin (seed {seed})"
        g = torch.Generator().manual_seed(seed)
        X0 = SobolEngine(2, scramble=True, seed=seed).draw(10).to(bench.dtype)

        def observe(X, g=g):
            return (-_branin(X) + 0.1 * torch.randn(X.shape[:-1], generator=g, dtype=bench.dtype)).unsqueeze(-1)

        Y0 = observe(X0)
        for method in ("dual memory GP (one dual step)", "dual memory GP (update, 5 epochs)", "SingleTaskGP refit",
                       "OVC (SVGP fantasy)"):
            torch.manual_seed(seed)
            X, Y = X0.clone(), Y0.clone()
            update_times, ready_times = [], []
            if method.startswith("dual"):
                model = DualMemoryGP(X, Y, num_inducing=100, update_epochs=0)
                gpkit.fit(model, progress=False)
            elif method.startswith("OVC"):
                svgp = SVGPBaseline(X.clone())
                lik = gpytorch.likelihoods.GaussianLikelihood().to(X)
                gpkit.fit(svgp, train_X=X, train_Y=Y, likelihood=lik, epochs=300, lr=0.05, batch_size=10,
                          progress=False)
                svgp.likelihood = lik
                svgp.eval()
                start_n = X.size(0)
            for _ in range(cfg["bo_steps"]):
                start = time.perf_counter()
                if method.startswith("SingleTask"):
                    model = SingleTaskGP(X, Y)
                    fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model))
                elif method.startswith("OVC"):
                    gp = svgp.get_fantasy_model(X[start_n:], Y[start_n:, 0]) if X.size(0) > start_n else svgp
                    model = _Wrapped(gp)
                update_times.append(time.perf_counter() - start)
                if not method.startswith("dual"):
                    ready_times.append(update_times[-1] + _first_posterior_seconds(model, X[-1:]))
                acq = qLogExpectedImprovement(model, best_f=Y.max())
                cand, _ = optimize_acqf(acq, bounds, q=1, num_restarts=4, raw_samples=64)
                y_new = observe(cand)
                X, Y = torch.cat([X, cand]), torch.cat([Y, y_new])
                if method.startswith("dual"):
                    start = time.perf_counter()
                    model.update(cand, y_new, epochs=0 if "one dual step" in method else 5, progress=False)
                    update_times[-1] += time.perf_counter() - start
                    ready_times.append(update_times[-1] + _first_posterior_seconds(model, X[-1:]))
            best_true = (-_branin(X)).max().item()
            bench.add(case, method, regret=optimum - best_true, update_seconds=statistics.median(update_times),
                      ready_seconds=statistics.median(ready_times), steps=cfg["bo_steps"])


def main(bench) -> None:
    cfg = _config(bench)
    _regression_streams(bench, cfg)
    _banana(bench, cfg)
    _bo(bench, cfg)
    bench.compare("dual memory GP", ["offline SVGP (all data)", "no memory"], ["rmse", "update_seconds"],
                  differences=["nlpd"])
    bench.compare("dual memory GP (memory weight N_old/|memory|)", ["offline SVGP (all data)", "no memory"], ["rmse"],
                  differences=["nlpd"])
    bench.compare("dual memory GP", ["offline dual GP (all data)"], ["accuracy"], differences=["nlpd"])
    for variant in ("dual memory GP (one dual step)", "dual memory GP (update, 5 epochs)"):
        bench.compare(variant, ["SingleTaskGP refit", "OVC (SVGP fantasy)"], ["update_seconds", "ready_seconds"],
                      differences=["regret"])
    bench.note("Streams: the dual memory GP never revisits a retired batch (only its memory points); "
               "update_seconds_early / _late are the medians over the first and second half of the batches "
               "(flat cost). The offline SVGP sees all data at once (upper bound).")
    bench.note("Not run: a streaming sparse GP (Bui et al. 2017) and OVC on the UCI streams (OVC's exact "
               "conditioning grows with every batch); split-MNIST is not part of this benchmark.")
