"""SWSGP in the BO regime: the SWSGP rows of ``gpkit bench bo`` (Branin, Hartmann6) with SingleTaskGP beside it.

Runs exactly ``benchmarks/bo.py``'s loop (``_loop``: 20 scrambled-Sobol points in the unit cube, then ``steps``
rounds of the acquisition optimised by ``optimize_acqf`` with 4 restarts and 64 raw samples, every model refit
from scratch each round with its defaults: SingleTaskGP + ``fit_gpytorch_mll``; ``gpkit.fit(SWSGP(X, Y))``)
for the cases that fit the machine's budget: qLogEI at q = 1 (20 -> 40 points) and q = 4 (20 -> 100 points).
Seeds: ``GPKIT_BO_SEEDS`` (default 10; 1 in quick mode; ``GPKIT_BO_DEADLINE``, a Unix time, stops starting
new seeds after it, and the ``seeds`` column says how many ran); ``GPKIT_BO_Q`` picks the q values (default ``1,4``) and ``GPKIT_BO_PROBLEMS`` the problems (default
``branin,hartmann6``).

Metrics: final simple regret (f* - best observed; mean, population std and the per-seed values), seconds per
BO step (fit + acquisition optimisation; median over steps, then over seeds), crashes, warnings.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path


def _bo_module():
    spec = importlib.util.spec_from_file_location("gpkit_benchmark_bo_loop", Path(__file__).with_name("bo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(bench) -> None:
    bo = _bo_module()
    seeds = 1 if bench.quick else int(os.environ.get("GPKIT_BO_SEEDS", 10))
    steps = 2 if bench.quick else 20
    deadline = float(os.environ.get("GPKIT_BO_DEADLINE", "inf"))  # a Unix time
    qs = [int(q) for q in os.environ.get("GPKIT_BO_Q", "1,4").split(",")]
    cases = [("branin", "qLogEI", 1)] if bench.quick else [
        (problem, "qLogEI", q) for q in qs for problem in os.environ.get("GPKIT_BO_PROBLEMS", "branin,hartmann6").split(",")]
    for problem, acqf, q in cases:
        case = f"{problem} {acqf} q={q}"
        results = {"SingleTaskGP": [], "SWSGP": []}
        for seed in range(seeds):  # methods interleaved per seed, so load changes on the machine hit both alike
            if seed and time.time() > deadline:  # GPKIT_BO_DEADLINE: start no new seed after it
                break
            for method, res in results.items():
                res.append(bo._loop(problem, method, acqf, q, seed, steps))
                print(f"[swsgp_bo] {case} {method} seed {seed}: regret {res[-1]['regret']:.4g}, "
                      f"{res[-1]['sec_per_step']:.2f} s/step", file=sys.stderr, flush=True)
        for method, res in results.items():
            regrets = [r["regret"] for r in res]
            crashes = [r["crash"] for r in res if r["crash"]]
            times = [r["sec_per_step"] for r in res if not math.isnan(r["sec_per_step"])]
            bench.add(case, method, regret_mean=statistics.mean(regrets), regret_std=statistics.pstdev(regrets),
                      regrets=[round(r, 5) for r in regrets], sec_per_step=statistics.median(times or [math.nan]),
                      crashes=len(crashes), warnings=sum(r["warnings"] for r in res), seeds=len(res),
                      first_crash=crashes[0] if crashes else "")
    bench.compare("SWSGP", ["SingleTaskGP"], ["regret_mean", "sec_per_step"])
    bench.note(
        f"Up to {seeds} seeds (column seeds: how many ran), {steps} BO steps after 20 Sobol points (q = 1: 20 -> {20 + steps} points; q = 4: 20 -> "
        f"{20 + 4 * steps}), every model refit from scratch each step with its defaults; the loop is bo.py's. "
        "sec_per_step = median over steps of fit + acquisition optimisation (then median over seeds). At these n "
        "SWSGP's defaults are its small-data regime (H = M = the distinct inputs, SingleTaskGP's kernel and priors, "
        "L-BFGS on the collapsed bound). Timings on a shared, loaded 2-core CPU: compare ratios within this run."
    )
