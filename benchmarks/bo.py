"""Real BoTorch loops with gpkit's models against SingleTaskGP and GPyTorch's SVGP / VNNGP.

Part 1 (small n, the BO regime): Branin (2-D), Hartmann6, Ackley-10 (all maximised as ``negate=True``),
inputs scaled to the unit cube, 20 scrambled-Sobol points, then ``steps`` rounds of an acquisition
(qLogEI, qLogNEI, qUCB with beta = 2, at q = 1 and q = 4, optimised by ``optimize_acqf`` with 4 restarts and
64 raw samples; qKG once at q = 1). Every round refits every model from scratch on all data:

- SingleTaskGP + ``fit_gpytorch_mll`` (BoTorch defaults: Standardize, L-BFGS-B to convergence);
- gpkit SWSGP and DKLGP with their defaults and ``gpkit.fit`` defaults (minimum steps + convergence test);
- GPyTorch's SVGP (``gpkit.baselines.SVGPBaseline``, the distinct inputs up to 64 as learned inducing points) and
  VNNGP (``VNNGPBaseline``, k = 8), Matérn-5/2 ARD on standardised targets, trained by ``gpkit.fit`` on the
  full-batch ELBO under :data:`gpkit.benchmarking.CONVERGENCE`, inside BoTorch's ``ApproximateGPyTorchModel``;
- Random (q uniform points per step, no model).

``GPKIT_BO_PROBLEMS``, ``GPKIT_BO_ACQFS`` (``name:q,...``), ``GPKIT_BO_SEEDS``, ``GPKIT_BO_STEPS``, ``GPKIT_BO_METHODS``
and ``GPKIT_BO_KG`` (``0``: no qKG case) override these; seeds run seed-major (every case and method at seed s
before seed s + 1) and ``GPKIT_BO_DEADLINE`` stops starting new seeds.

Metrics per method: final simple regret (f* - best observed f), its mean and standard deviation over
seeds, seconds per BO step (fit + acquisition optimisation, median over steps), crashes (any exception
ends that loop and is counted) and the number of warnings emitted in the loop.

Part 2 (large batch, where SingleTaskGP's cubic fit is the bottleneck): Ackley-10, n0 Sobol points, rounds of q
points chosen by UCB (beta = 2, marginal posteriors) among a cheap candidate set (fresh Sobol points plus
perturbations of the best points) until n_max evaluations; SingleTaskGP, DKLGP and SWSGP (and Random, the same
candidates picked at random, to show what the models add), rounds interleaved across methods. Each fit has a
wall-time budget (``GPKIT_BO_BUDGET`` seconds, default 120): BoTorch's ``timeout_sec`` for SingleTaskGP, a
``gpkit.fit`` callback (which also logs progress) for the gpkit models; the fits that hit it are counted, and a loop
whose fit takes over ``GPKIT_BO_STOP_FACTOR`` (2) times the budget ends there. ``GPKIT_BO_LARGE_SEEDS`` (10) and
``GPKIT_BO_DEADLINE`` (a Unix time after which no new seed starts) bound the seeds; ``GPKIT_BO_PARTS`` (default
``small,large``) picks the parts; without ``small``, the small-n rows are copied from the latest 10-seed
``dklgp_bo`` / ``swsgp_bo`` results and marked as such; without ``large``, the large-batch rows and notes of the
previous ``results/bo.json`` are carried over unchanged.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import gpytorch
import torch
from botorch.acquisition import qKnowledgeGradient, qUpperConfidenceBound
from botorch.acquisition.logei import qLogExpectedImprovement, qLogNoisyExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.approximate_gp import ApproximateGPyTorchModel, SingleTaskVariationalGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from botorch.test_functions import Ackley, Branin, Hartmann
from botorch.utils.sampling import draw_sobol_samples

import gpkit
from gpkit.baselines import SVGPBaseline, VNNGPBaseline
from gpkit.benchmarking import CONVERGENCE, CONVERGENCE_RULE
from gpkit.models import SWSGP
from gpkit.variational import init_inducing_points

try:
    from gpkit.models import DKLGP
except ImportError:  # pragma: no cover
    DKLGP = None


def _log(text: str) -> None:
    print(f"[bo bench] {text}", file=sys.stderr, flush=True)


def _config(bench) -> dict:
    env = os.environ.get
    parts = tuple(env("GPKIT_BO_PARTS", "small,large").split(","))
    large = {"budget": float(env("GPKIT_BO_BUDGET", 120)), "large_seeds": int(env("GPKIT_BO_LARGE_SEEDS", 10)),
             "large_methods": tuple(env("GPKIT_BO_LARGE_METHODS", "SingleTaskGP,DKLGP,SWSGP,Random").split(",")),
             "stop_factor": float(env("GPKIT_BO_STOP_FACTOR", 2))}
    if bench.quick:
        return {"problems": ("branin",), "acqfs": (("qLogEI", 1),), "seeds": 1, "steps": 2, "kg": False,
                "methods": ("SingleTaskGP", "SWSGP", "SVGP"), "parts": parts,
                "large": {**large, "n0": 300, "q": 150, "n_max": 600, "large_seeds": 1,
                          "large_methods": ("SingleTaskGP", "DKLGP", "SWSGP", "Random")}}
    acqfs = env("GPKIT_BO_ACQFS", "qLogEI:1,qLogEI:4,qLogNEI:1,qLogNEI:4,qUCB:1,qUCB:4")
    return {"problems": tuple(env("GPKIT_BO_PROBLEMS", "branin,hartmann6,ackley10").split(",")),
            "acqfs": tuple((a, int(q)) for a, q in (x.split(":") for x in acqfs.split(","))),
            "seeds": int(env("GPKIT_BO_SEEDS", 10)), "steps": int(env("GPKIT_BO_STEPS", 20)),
            "kg": env("GPKIT_BO_KG", "1") == "1", "parts": parts,
            "methods": tuple(env("GPKIT_BO_METHODS", "SingleTaskGP,SWSGP,DKLGP,SVGP,VNNGP,Random").split(",")),
            "large": {**large, "n0": 2000, "q": 1000, "n_max": 10000}}


def _problem(name: str, dtype):
    f = {"branin": lambda: Branin(negate=True), "hartmann6": lambda: Hartmann(dim=6, negate=True),
         "ackley10": lambda: Ackley(dim=10, negate=True)}[name]()
    f = f.to(dtype=dtype)
    lo, hi = f.bounds

    def objective(X):  # unit cube -> the problem's box
        return f(lo + (hi - lo) * X).unsqueeze(-1)

    return objective, f.dim, float(f.optimal_value)


def _approximate_baseline(method: str, X, Y):
    """GPyTorch's SVGP or VNNGP (gpkit.baselines) on the standardised targets, trained by gpkit.fit on the ELBO to
    convergence under :data:`gpkit.benchmarking.CONVERGENCE` (full batch, all hyperparameters learned), then
    wrapped as BoTorch's ``ApproximateGPyTorchModel`` with the ``Standardize`` transform that undoes the scaling.

    :return: the BoTorch model and the optimizer steps its fit ran.
    """
    n, d = X.shape
    transform = Standardize(1)
    Yt, _ = transform(Y)
    transform.eval()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(X)
    covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d)).to(X)
    options = {**CONVERGENCE, "batch_size": n, "progress": False, "seed": 0}
    if method == "SVGP":  # inducing points: all (distinct) inputs up to 64, learned
        inner = SVGPBaseline(init_inducing_points(X, min(64, torch.unique(X, dim=0).size(0))), covar_module=covar)
        gpkit.fit(inner, train_X=X, train_Y=Yt, likelihood=likelihood, **options)
    else:  # VNNGP: every input is an inducing point, k = 8 neighbours
        inner = VNNGPBaseline(X, Yt.squeeze(-1), covar, likelihood, k=min(8, n - 1), batch_size=n)
        gpkit.fit(inner, **options)
    model = ApproximateGPyTorchModel(inner, likelihood, num_outputs=1)
    model.outcome_transform = transform
    return model.eval(), len(inner.fit_history)


def _fit(method: str, X, Y, seed: int | None = None):
    """Fit ``method`` on ``(X, Y)`` from scratch with its defaults (``seed``: gpkit.fit's seed, gpkit models).

    :return: the model and the optimizer steps of the fit where the convergence rule caps them (SVGP, VNNGP).
    """
    if method == "SingleTaskGP":
        model = SingleTaskGP(X, Y)
        fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model))
        return model, None
    if method == "SWSGP":
        return gpkit.fit(SWSGP(X, Y), progress=False, seed=seed), None
    if method == "DKLGP":
        return gpkit.fit(DKLGP(X, Y), progress=False, seed=seed), None
    if method in ("SVGP", "VNNGP"):
        return _approximate_baseline(method, X, Y)
    raise ValueError(f"method must be SingleTaskGP, SWSGP, DKLGP, SVGP, VNNGP or Random, got {method!r}")


def _acqf(name: str, model, X, Y, beta: float = 2.0):
    if name == "qLogEI":
        return qLogExpectedImprovement(model, best_f=Y.max())
    if name == "qLogNEI":
        return qLogNoisyExpectedImprovement(model, X_baseline=X, prune_baseline=True)
    if name == "qUCB":
        return qUpperConfidenceBound(model, beta=beta)
    if name == "qKG":
        return qKnowledgeGradient(model, num_fantasies=16)
    raise ValueError(name)


def _loop(problem: str, method: str, acqf: str, q: int, seed: int, steps: int, acq_options: dict | None = None,
          fit_seed: bool = False) -> dict:
    """One small-n BO loop: 20 Sobol points, then ``steps`` rounds of refit + ``optimize_acqf`` (``acq_options``
    replaces the default 4 restarts / 64 raw samples / maxiter 100; ``fit_seed`` seeds gpkit.fit with the step)."""
    objective, d, optimum = _problem(problem, torch.float64)
    bounds = torch.stack([torch.zeros(d), torch.ones(d)]).double()
    torch.manual_seed(seed)
    X = draw_sobol_samples(bounds, n=20, q=1, seed=seed).squeeze(-2)
    Y = objective(X)
    times, fit_times, fit_steps, crash = [], [], [], None
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(steps):
            start = time.perf_counter()
            try:
                if method == "Random":  # no model: q uniform points
                    cand = torch.rand(q, d, generator=gen, dtype=X.dtype)
                    fit_times.append(0.0)
                    times.append(time.perf_counter() - start)
                    X, Y = torch.cat([X, cand]), torch.cat([Y, objective(cand)])
                    continue
                model, nsteps = _fit(method, X, Y, seed=step if fit_seed else None)
                fit_times.append(time.perf_counter() - start)
                if nsteps is not None:
                    fit_steps.append(nsteps)
                opts = {"num_restarts": 4, "raw_samples": 64, "options": {"maxiter": 100}}
                if acqf == "qKG":
                    opts = {"num_restarts": 2, "raw_samples": 32, "options": {"maxiter": 30}}
                cand, _ = optimize_acqf(_acqf(acqf, model, X, Y), bounds=bounds, q=q, **(acq_options or opts))
            except Exception as error:  # noqa: BLE001 (a crash ends the loop and is reported)
                crash = f"{type(error).__name__}: {str(error)[:160]}"
                break
            times.append(time.perf_counter() - start)
            X, Y = torch.cat([X, cand.detach()]), torch.cat([Y, objective(cand.detach())])
    kinds = {}
    for w in caught:
        kinds[w.category.__name__] = kinds.get(w.category.__name__, 0) + 1
    return {"regret": optimum - Y.max().item(), "sec_per_step": statistics.median(times) if times else math.nan,
            "fit_seconds": statistics.median(fit_times) if fit_times else math.nan,
            "crash": crash, "warnings": len(caught), "warning_kinds": kinds, "fit_steps": fit_steps}


def _budget_callback(method: str, n: int, budget: float | None):
    """gpkit.fit callback: a progress line every 10 epochs; stop once the wall-time budget is spent."""

    def callback(state) -> bool:
        if state.epoch % 10 == 0:
            _log(f"  {method} n={n}: epoch {state.epoch}, step {state.iteration}, loss {state.loss:.4f}, "
                 f"{state.elapsed:.0f} s")
        return budget is not None and state.elapsed >= budget

    return callback


def _fit_budgeted(method: str, X, Y, budget: float | None):
    """``_fit`` under a wall-time budget (seconds): fit_gpytorch_mll's ``timeout_sec`` for the BoTorch fits (the
    L-BFGS-B run stops after the evaluation that crosses it), a stopping callback for gpkit.fit (checked after
    every epoch). Returns the model and the fit's epochs/iterations where known."""
    if method in ("DKLGP", "SWSGP"):
        cls = {"DKLGP": DKLGP, "SWSGP": SWSGP}[method]
        model = gpkit.fit(cls(X, Y), progress=False, callback=_budget_callback(method, X.size(0), budget))
        return model, len(model.fit_history)
    if method == "SingleTaskGP":
        model = SingleTaskGP(X, Y)
        kwargs = {} if budget is None else {"optimizer_kwargs": {"timeout_sec": budget}}
        fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model), **kwargs)
        return model, None
    raise ValueError(f"the large-batch part runs SingleTaskGP, DKLGP and SWSGP (under a fit budget), not {method}")


def _ucb(model, cands, beta: float = 2.0, chunk: int = 1024):
    """UCB of each candidate from its marginal posterior (chunks keep the n x chunk cross-covariance small)."""
    out = []
    with torch.no_grad():
        for part in cands.split(chunk):
            post = model.posterior(part.unsqueeze(-2))
            out.append((post.mean + beta**0.5 * post.variance.clamp_min(0).sqrt()).flatten())
    return torch.cat(out)


def _candidates(X, Y, bounds, seed: int, num_sobol: int = 2048, num_top: int = 16, per_point: int = 512):
    """The cheap candidate set of one round: fresh Sobol points plus Gaussian perturbations of the ``num_top``
    best observed points, ``per_point`` each, at scales log-uniform in [0.005, 0.2] (clamped to the cube)."""
    gen = torch.Generator().manual_seed(seed)
    d = X.size(-1)
    top = X[Y.flatten().topk(min(num_top, X.size(0))).indices]  # shape: (num_top, d)
    scale = torch.exp(torch.empty(top.size(0), per_point, 1, dtype=X.dtype).uniform_(math.log(0.005), math.log(0.2),
                                                                                       generator=gen))
    local = (top.unsqueeze(1) + scale * torch.randn(top.size(0), per_point, d, generator=gen, dtype=X.dtype))
    sobol = draw_sobol_samples(bounds, n=num_sobol, q=1, seed=seed).squeeze(-2)
    return torch.cat([sobol, local.reshape(-1, d).clamp(0, 1)])


def _large_batch(bench, cfg: dict) -> None:
    """Part 2: every method runs its own loop from the same n0 Sobol points; the methods' rounds are interleaved
    (round r of every method, then round r + 1), so load changes on the machine hit all alike."""
    objective, d, optimum = _problem("ackley10", torch.float64)
    bounds = torch.stack([torch.zeros(d), torch.ones(d)]).double()
    n0, q, n_max, budget = cfg["n0"], cfg["q"], cfg["n_max"], cfg["budget"]
    methods = [m for m in cfg["large_methods"] if m != "DKLGP" or DKLGP is not None]
    deadline = float(os.environ.get("GPKIT_BO_DEADLINE", "inf"))  # a Unix time: start no new seed after it
    runs = {m: [] for m in methods}
    for seed in range(cfg["large_seeds"]):
        if seed and time.time() > deadline:
            break
        state = {}
        for m in methods:
            X = draw_sobol_samples(bounds, n=n0, q=1, seed=seed).squeeze(-2)
            state[m] = {"X": X, "Y": objective(X), "fit": [], "round": [], "over": [], "iters": [],
                        "regret": [], "crash": None, "stopped": None, "warnings": {}}
        def running(s):
            return s["X"].size(0) < n_max and s["crash"] is None and s["stopped"] is None

        while any(running(s) for s in state.values()):
            for m, s in state.items():
                if not running(s):
                    continue
                X, Y = s["X"], s["Y"]
                cands = _candidates(X, Y, bounds, 1000 * seed + X.size(0))
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    start = time.perf_counter()
                    try:
                        if m == "Random":  # no model: q of the same candidates at random
                            model, iters, fit_sec = None, None, 0.0
                            gen = torch.Generator().manual_seed(1000 * seed + X.size(0))
                            pick = cands[torch.randperm(cands.size(0), generator=gen)[:q]]
                        else:
                            model, iters = _fit_budgeted(m, X, Y, budget)
                            fit_sec = time.perf_counter() - start
                            pick = cands[_ucb(model, cands).topk(q).indices]
                    except Exception as error:  # noqa: BLE001 (a crash ends that loop and is reported)
                        s["crash"] = f"n={X.size(0)}: {type(error).__name__}: {str(error)[:160]}"
                        _log(f"large batch {m} seed {seed}: crash {s['crash']}")
                        continue
                    seconds = time.perf_counter() - start
                for w in caught:
                    s["warnings"][w.category.__name__] = s["warnings"].get(w.category.__name__, 0) + 1
                s["X"], s["Y"] = torch.cat([X, pick]), torch.cat([Y, objective(pick)])
                s["fit"].append(fit_sec)
                s["round"].append(seconds)
                s["iters"].append(iters)
                s["regret"].append(optimum - s["Y"].max().item())
                if budget is not None and fit_sec >= budget:
                    s["over"].append(X.size(0))
                if budget is not None and fit_sec >= cfg["stop_factor"] * budget:
                    s["stopped"] = s["X"].size(0)  # the next fit would only be slower: this loop ends here
                _log(f"large batch {m} seed {seed}: fit at n = {X.size(0)} {fit_sec:.1f} s"
                     f"{' (budget spent)' if X.size(0) in s['over'] else ''}, round {seconds:.1f} s, "
                     f"regret {s['regret'][-1]:.4g}, warnings {len(caught)}")
        for m, s in state.items():
            runs[m].append(s)
    case = f"ackley10 large batch n0={n0} q={q} to n={n_max}, UCB on 10240 candidates, fit budget {budget:g} s"
    for m, res in runs.items():
        crashes = [r["crash"] for r in res if r["crash"]]
        seeds, res = len(res), [r for r in res if r["round"]]  # statistics over the loops that ran a round
        if not res:
            bench.add(case, m, crashes=len(crashes), seeds=seeds, first_crash=crashes[0])
            continue
        regrets = [r["regret"][-1] if r["regret"] else math.nan for r in res]
        kinds = {}
        for r in res:
            for k, v in r["warnings"].items():
                kinds[k] = kinds.get(k, 0) + v
        bench.add(case, m, regret_mean=statistics.mean(regrets),
                  regret_std=statistics.pstdev(regrets) if len(regrets) > 1 else 0.0,
                  regrets=[round(r, 4) for r in regrets],
                  sec_per_round=statistics.median(t for r in res for t in r["round"]),
                  fit_sec_per_round=statistics.median(t for r in res for t in r["fit"]),
                  last_round_sec=statistics.median(r["round"][-1] for r in res if r["round"]),
                  total_sec=statistics.median(sum(r["round"]) for r in res),
                  fits_over_budget=sum(len(r["over"]) for r in res),
                  first_over_budget_n=min((r["over"][0] for r in res if r["over"]), default=None),
                  final_n=statistics.median(r["X"].size(0) for r in res),
                  stopped_at_n=min((r["stopped"] for r in res if r["stopped"]), default=None),
                  crashes=len(crashes), warnings=sum(kinds.values()), warning_kinds=kinds, seeds=seeds,
                  regret_by_round=[[round(x, 4) for x in r["regret"]] for r in res],
                  fit_sec_by_round=[[round(x, 1) for x in r["fit"]] for r in res],
                  round_sec_by_round=[[round(x, 1) for x in r["round"]] for r in res],
                  fit_epochs_by_round=[r["iters"] for r in res],
                  first_crash=crashes[0] if crashes else "")
    _common_rounds(bench, case, n0, q)


def _common_rounds(bench, case: str, n0: int, q: int) -> None:
    """Rows at equal n: each method's regret and fit time over the rounds every loop completed (a loop stopped
    by the budget rule makes the full-length rows incomparable in n)."""
    rows = [r for r in bench.rows if r["case"] == case and r.get("regret_by_round")]
    k = min((len(x) for r in rows for x in r["regret_by_round"]), default=0)
    if not rows or k == max(len(x) for r in rows for x in r["regret_by_round"]):
        return
    common = f"{case}: first {k} rounds (n = {n0 + k * q} evaluations, equal for all)"
    for r in rows:
        regrets = [x[k - 1] for x in r["regret_by_round"]]
        fits = [t for x in r["fit_sec_by_round"] for t in x[:k]]
        extra = {}
        if r.get("round_sec_by_round"):
            extra["sec_per_round"] = statistics.median(t for x in r["round_sec_by_round"] for t in x[:k])
        bench.add(common, r["method"], regret_mean=statistics.mean(regrets),
                  regret_std=statistics.pstdev(regrets) if len(regrets) > 1 else 0.0, **extra,
                  fit_sec_per_round=statistics.median(fits), fit_sec_by_round=[x[:k] for x in r["fit_sec_by_round"]],
                  seeds=len(regrets))


# The 10-seed small-n runs of benchmarks/dklgp_bo.py and swsgp_bo.py (both built on this file's loop settings)
_CITED = ("dklgp_bo.json", "swsgp_bo-branin-q1.json", "swsgp_bo-hartmann6-q1.json", "swsgp_bo-hartmann6-q4.json")
_CITED_METRICS = ("regret_mean", "regret_std", "regret_sem", "regret_median", "sec_per_step", "crashes",
                  "warnings", "seeds")


def _cite_small_n(bench) -> None:
    """Part 1 not run here: copy the rows of the latest 10-seed small-n results, marked with their source file."""
    results = Path(__file__).with_name("results")
    for name in _CITED:
        path = results / name
        if not path.exists():
            continue
        payload = json.loads(path.read_text())
        date = payload["environment"]["date"][:10]
        for row in payload["rows"]:
            metrics = {k: row[k] for k in _CITED_METRICS if k in row}
            bench.published(row["case"], row["method"], source=f"results/{name} ({date})", **metrics)


def _small_n(bench, cfg: dict) -> None:
    """Part 1, seed-major: every case and method runs seed s before any runs seed s + 1 (methods interleaved, so
    load changes on the machine hit all alike, and a ``GPKIT_BO_DEADLINE`` cut leaves equal seeds everywhere)."""
    methods = [m for m in cfg["methods"] if m != "DKLGP" or DKLGP is not None]
    runs = [(a, q) for a, q in cfg["acqfs"]] + ([("qKG", 1)] if cfg["kg"] else [])
    cases = [(p, a, q) for p in cfg["problems"] for a, q in runs if a != "qKG" or p == "branin"]
    deadline = float(os.environ.get("GPKIT_BO_DEADLINE", "inf"))  # a Unix time: start no new seed after it
    results = {(c, m): [] for c in cases for m in methods}
    for seed in range(cfg["seeds"]):
        if seed and time.time() > deadline:
            break
        for problem, acqf, q in cases:
            if acqf == "qKG" and seed:  # one seed of qKG
                continue
            for method in methods:
                r = _loop(problem, method, acqf, q, seed, cfg["steps"])
                results[(problem, acqf, q), method].append(r)
                _log(f"{problem} {acqf} q={q} {method} seed {seed}: regret {r['regret']:.5g}, {r['sec_per_step']:.2f} "
                     f"s/step, fit steps {r['fit_steps']}, warnings {r['warning_kinds']}, crash {r['crash']}")
    for (problem, acqf, q), method in results:
        res = results[(problem, acqf, q), method]
        if not res:
            continue
        regrets = [r["regret"] for r in res]
        crashes = [r["crash"] for r in res if r["crash"]]
        kinds = {}
        for r in res:
            for k, v in r["warning_kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
        steps = [n for r in res for n in r["fit_steps"]]
        bench.add(f"{problem} {acqf} q={q}", method, regret_mean=statistics.mean(regrets),
                  regret_std=statistics.pstdev(regrets), regrets=[round(x, 5) for x in regrets],
                  sec_per_step=statistics.median(
                      [r["sec_per_step"] for r in res if not math.isnan(r["sec_per_step"])] or [math.nan]),
                  fit_sec_per_step=statistics.median(
                      [r["fit_seconds"] for r in res if not math.isnan(r["fit_seconds"])] or [math.nan]),
                  crashes=len(crashes), warnings=sum(kinds.values()), warning_kinds=kinds, seeds=len(res),
                  steps=cfg["steps"], fit_steps_max=max(steps) if steps else None,
                  fits_at_cap=sum(n >= CONVERGENCE["max_iter"] for n in steps) if steps else None,
                  first_crash=crashes[0] if crashes else "")
        base = results.get(((problem, acqf, q), "SingleTaskGP"))
        if method != "SingleTaskGP" and base and len(base) == len(res) > 1:
            diff = [r["regret"] - b["regret"] for r, b in zip(res, base, strict=True)]
            bench.note(f"{problem} {acqf} q={q}, {method} - SingleTaskGP regret, paired over {len(diff)} seeds (same "
                       f"Sobol start): {statistics.mean(diff):.4g} +- {statistics.stdev(diff) / len(diff) ** 0.5:.2g} "
                       f"(mean +- standard error); {method} lower on {sum(d < 0 for d in diff)}, higher on "
                       f"{sum(d > 0 for d in diff)}.")
    bench.note(
        f"Small n: {cfg['steps']} BO steps after 20 Sobol points; all methods refit from scratch every step on all "
        "data, hyperparameters learned each time: SingleTaskGP by fit_gpytorch_mll (BoTorch defaults, L-BFGS-B to "
        "convergence); SWSGP / DKLGP with their defaults and gpkit.fit's defaults; SVGP (inducing points: the distinct "
        "inputs, up to 64, learned) and VNNGP (all inputs inducing, k = 8) from gpkit.baselines, Matern-5/2 ARD, "
        f"Standardize, full-batch ELBO, {CONVERGENCE_RULE}; fit_steps_max / fits_at_cap: their longest fit and the fits "
        "that hit the cap. Random: q uniform points per step. regret = f* - best observed f (mean, population std over "
        "seeds); sec_per_step = median over steps of fit + optimize_acqf (4 restarts, 64 raw samples, maxiter 100), "
        "then median over seeds; warnings: every warning raised inside the loops (warning_kinds by category). "
        "VNNGP: GPyTorch's NNVariationalStrategy rejects test inputs with a batch shape (b x q x d, as optimize_acqf "
        "passes them); gpkit.baselines.VNNGPBaseline evaluates the flattened batch (exact: its predictive covariance "
        "is diagonal)."
    )


_LARGE = "ackley10 large batch"


def _carry_large(bench, previous: dict | None) -> None:
    """Part 2 not run here: keep the large-batch rows and notes of the previous bo.json, marked as carried."""
    if not previous:
        return
    if bench.carry_over(previous, keep=lambda row: row["case"].startswith(_LARGE), notes=False):
        bench.note(f"Large batch (part 2) not rerun here: its rows (marked `run`) and notes are carried over "
                   f"unchanged from the bo.json of {previous['environment']['date']}.")
    for note in previous["notes"]:
        if note.startswith(("Large batch:", "The full-length large-batch", "Run ")):
            bench.note(note)


def main(bench) -> None:
    cfg = _config(bench)
    previous = Path(__file__).with_name("results") / "bo.json"
    previous = json.loads(previous.read_text()) if previous.exists() and not bench.quick else None
    if "small" in cfg["parts"]:
        _small_n(bench, cfg)
    else:
        _cite_small_n(bench)
        bench.note("Small n (part 1) was not rerun here (GPKIT_BO_PARTS): its rows marked published are copied from "
                   "the latest 10-seed runs of benchmarks/dklgp_bo.py and swsgp_bo.py, named in the source column "
                   "with their dates; SVGP / VNNGP have no small-n rows there.")
        bench.note("dklgp_bo protocol: qLogEI q = 2, 20 Sobol points + 10 steps, 10 seeds; swsgp_bo: this file's "
                   "loop, qLogEI q = 1 or 4, 20 Sobol points + 20 steps, 10 seeds. regret = f* - best observed f.")
    if "large" not in cfg["parts"]:
        _carry_large(bench, previous)
    else:
        _large_batch(bench, cfg["large"])
        lg = cfg["large"]
        bench.note(
            f"Large batch: Ackley-10 (maximised, unit cube), {lg['n0']} Sobol points, then rounds of q = {lg['q']} "
            "points, the top-q UCB (beta = 2, marginal posteriors) among 10240 candidates (2048 fresh Sobol points "
            "and 512 Gaussian perturbations of each of the 16 best points, scales log-uniform in [0.005, 0.2]), until "
            f"{lg['n_max']} evaluations; Random picks q of the same candidates at random (no model). Every method is "
            f"refit from scratch each round with its defaults under a wall-time budget of {lg['budget']:g} s per fit "
            "(fit_gpytorch_mll's timeout_sec for SingleTaskGP, checked after each L-BFGS-B evaluation; a gpkit.fit "
            "callback for DKLGP / SWSGP, checked after each epoch); fits_over_budget counts the fits that hit it "
            "(used as they stand), first_over_budget_n the smallest n where one did. A loop whose fit took over "
            f"{lg['stop_factor']:g}x the budget ends after that round (stopped_at_n: its evaluations then; later fits "
            "would only be slower). sec_per_round = median over rounds of fit + candidate scoring; regret = f* - best "
            "observed after the loop's last round (f* = 0)."
        )
    for method in ("SWSGP", "DKLGP", "SVGP", "VNNGP"):
        bench.compare(method, ["SingleTaskGP"], ["regret_mean", "sec_per_step", "sec_per_round", "fit_sec_per_round"])
    bench.note(
        "Timings on a shared, loaded 2-core CPU (other jobs running): compare ratios within this run only."
    )
