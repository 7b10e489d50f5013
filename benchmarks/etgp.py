"""ETGP vs GPyTorch's multi-class GP classifiers on real sets, and the cost of each as the number of classes C grows.

Part 1 (accuracy, real data through ``gpkit.datasets``): letter (26 classes), satimage, segment, vowel,
optdigits, penbased and the MNIST test set (its own stratified split), on split 0 (letter and MNIST also on split 1); on a
CPU only letter, MNIST (vs the C-GP SVGP) and vowel (vs all three baselines), training sets subsampled to 1500.
Models, every one with M = 100 k-means inducing points on the training inputs standardised with the training
mean/std, RBF-ARD kernels starting at lengthscale sqrt(d), batch 256, Adam lr 0.01, trained by ``gpkit.fit``:
- ETGP with its defaults (input-dependent sinh-arcsinh-affine flows, MLP 50 tanh units, dropout 0.5, the
  flow network frozen for the first quarter of the epochs);
- "SVGP (C GPs)": C independent whitened SVGPs (``IndependentMultitaskVariationalStrategy``) with
  ``SoftmaxLikelihood(mixing_weights=False)``;
- "LMC (L GPs)": ``LMCVariationalStrategy`` with L = min(C, 8) latent GPs and the same likelihood;
- "Dirichlet SVGP": C whitened SVGP regressions on GPyTorch's ``DirichletClassificationLikelihood``
  transformed labels with their fixed per-label noise (sparse form of Milios et al. 2018).
Stopping rule, the same for every model: ``gpkit.fit``'s converging default (no ``epochs`` given): at least
1000 and at most ``max(fit_defaults epochs x batches per epoch, 3000)`` optimizer steps (3000 at n = 1500, i.e. 500
epochs of 6 batches, for ETGP and the baselines alike), stopping once the best epoch loss has improved by less than
0.1 % (``tol=1e-3``) over ``max(5, ceil(100 / batches per epoch))`` epochs (17 at n = 1500). ``converged`` says
whether a run stopped by that tolerance rule (True) or at the step cap (False); "seconds to convergence" is the
wall time either way. (Before 2026-12-03 evening the baselines used ``tol=1e-3, patience=3`` and a 60-epoch cap,
which every baseline hit.) Equal-time comparison: the C-GP SVGP is also trained from scratch for ETGP's wall time
(explicit epochs, no tolerance stop, stopped by a callback) and evaluated.

Metrics: test accuracy; mean NLL = mean over test points of -log p(y_true | x) (probabilities by Gauss-Hermite
for ETGP, 256 Monte Carlo samples of the latent marginals for the baselines); seconds per epoch = training wall
time / epochs run; peak memory = CUDA max allocated, or peak RSS growth on CPU; model_mb = parameters.

Part 2 (cost vs C, synthetic): n inputs uniform on [0, 1]^4, labels the Voronoi cell of C random centres,
C in {10, 100, 1000}: seconds per training step (median, batch 256) of ETGP and of the C-GP SVGP, the epoch
time that implies at n = 10^5, and peak memory of the steps; ETGP also trained for a few epochs at n = 10^5.

Part 2 also times ETGP's step and its GP part alone (q(f0) at the batch and the KL) at every C in interleaved
rounds, so that the machine's load hits every C alike; those medians are the cost-vs-C numbers.

Partial runs of part 1: ``GPKIT_ETGP_SETS=satimage,segment`` runs only those sets (in that order) and
``GPKIT_ETGP_SPLITS=0,1`` only those splits of each (replacing the default splits, extra ones included);
``GPKIT_ETGP_BASELINES="SVGP (C GPs),LMC (8 GPs)"`` runs those baselines on every set (default: on a CPU all three
on vowel, the C-GP SVGP elsewhere); ``GPKIT_ETGP_MAX_TRAIN=full`` trains on the whole training splits (cases
named "... full training set"; a number sets the subsample size). With the harness's ``GPKIT_BENCH_KEEP=1`` the rows of cases not rerun are kept
in ``results/etgp.*`` (marked with the run they come from), e.g.
``GPKIT_BENCH_KEEP=1 GPKIT_ETGP_PART=accuracy GPKIT_ETGP_SETS=satimage GPKIT_ETGP_SPLITS=0 gpkit bench etgp``.
The summary notes count only the cases of the invocation that wrote them.

``GPKIT_ETGP_PART=accuracy`` runs part 1 alone (``results/etgp.*``), ``GPKIT_ETGP_PART=cost`` part 2 alone
(``results/etgp-cost.*``, 10 steps per C, 3 at C = 1000; ``GPKIT_ETGP_SVGP_MAX_C`` caps the C of the SVGP
baseline). The default ``offset_penalty`` was chosen by ``benchmarks/_etgp_penalty_grid.py`` on a validation
split carved from the training sets, not on these test sets.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time

import gpytorch
import torch

import gpkit
from gpkit.baselines import DirichletSVGPBaseline, MulticlassSVGPBaseline
from gpkit.datasets import load
from gpkit.models import ETGP
from gpkit.training import _CONVERGE, make_optimizer
from gpkit.variational.inducing_points import init_inducing_points

SETS = ("letter", "satimage", "segment", "vowel", "optdigits", "penbased", "mnist")
M, BATCH, LR = 100, 256, 0.01
BASELINES = ("SVGP (C GPs)", "LMC (8 GPs)", "Dirichlet SVGP")


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name, "").strip()
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _partial(cfg: dict) -> dict:
    """GPKIT_ETGP_SETS / _SPLITS / _BASELINES / _MAX_TRAIN (see the module docstring)."""
    sets, splits, baselines = (_env_list(f"GPKIT_ETGP_{k}") for k in ("SETS", "SPLITS", "BASELINES"))
    if sets is not None:
        unknown = sorted(set(sets) - set(SETS))
        if unknown:
            raise ValueError(f"GPKIT_ETGP_SETS: unknown set(s) {unknown}; known: {list(SETS)}")
        cfg["sets"] = tuple(sets)
    if splits is not None:
        cfg["splits"], cfg["extra_splits"] = tuple(int(s) for s in splits), {}
    max_train = os.environ.get("GPKIT_ETGP_MAX_TRAIN", "").strip().lower()
    if max_train:  # "full": the whole training split
        if max_train != "full" and not max_train.isdigit():
            raise ValueError(f"GPKIT_ETGP_MAX_TRAIN: {max_train!r} is neither a number of points nor 'full'")
        cfg["max_train"] = None if max_train == "full" else int(max_train)
    if baselines is not None:
        unknown = sorted(set(baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"GPKIT_ETGP_BASELINES: unknown baseline(s) {unknown}; known: {list(BASELINES)}")
        cfg["baselines"], cfg["baselines_for"] = tuple(baselines), None
    return cfg


def _config(bench) -> dict:
    if bench.quick:
        return {"sets": ("letter", "vowel"), "splits": (0,), "max_train": 1500, "epoch_cap": 8, "etgp_epochs": 8,
                "baselines": ("SVGP (C GPs)",), "equal_time": (), "sweep_C": (10, 100), "sweep_n": 100000,
                "steps": 3, "train_n": 0, "train_epochs": 0}
    # CPU full run: the two target sets (letter, MNIST) against the C-GP SVGP, and vowel against all three
    # baselines; on a GPU every set, two splits of letter and MNIST, and ETGP trained at n = 10^5.
    gpu = bench.device.type == "cuda"
    return {"sets": SETS if gpu else ("letter", "mnist", "vowel"), "splits": (0,),
            "extra_splits": {"letter": (1,), "mnist": (1,)} if gpu else {}, "max_train": None if gpu else 1500,
            "epoch_cap": None, "etgp_epochs": None, "baselines": BASELINES,
            "baselines_for": None if gpu else {"vowel": ("SVGP (C GPs)", "LMC (8 GPs)", "Dirichlet SVGP")},
            "equal_time": ("SVGP (C GPs)",), "sweep_C": (10, 100, 1000), "sweep_n": 100000, "steps": 3,
            "train_n": 100000 if gpu else 0, "train_epochs": 3 if gpu else 0}


def _log(text: str) -> None:
    print(f"[etgp bench] {text}", file=sys.stderr, flush=True)


def _data(name, split, bench, max_train):
    ds = load(name, split=split, dtype=bench.dtype)
    Xtr, ytr, Xte, yte = ds.train_X, ds.train_y, ds.test_X, ds.test_y
    if max_train is not None and Xtr.size(0) > max_train:
        keep = torch.randperm(Xtr.size(0), generator=torch.Generator().manual_seed(split))[:max_train]
        Xtr, ytr = Xtr[keep], ytr[keep]
    to = {"device": bench.device}
    return Xtr.to(**to), ytr.to(**to), Xte.to(**to), yte.to(**to), int(ds.extras["num_classes"])


def _standardise(Xtr, Xte):
    mean, std = Xtr.mean(0), Xtr.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (Xtr - mean) / std, (Xte - mean) / std


def _metrics(probs, y) -> dict:
    p = probs.gather(-1, y[:, None]).squeeze(-1).clamp_min(1e-300)
    return {"accuracy": (probs.argmax(-1) == y).double().mean().item(), "nll": -p.log().mean().item()}


def _model_mb(module) -> float:
    tensors = {id(t): t for name, t in [*module.named_parameters(), *module.named_buffers()] if "train" not in name
               and "targets" not in name and "label_noise" not in name}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


def _baseline(label, Xs, ytr, C, Z):
    """A fresh baseline and its gpkit.fit options."""
    torch.manual_seed(0)
    if label == "Dirichlet SVGP":
        return DirichletSVGPBaseline(Z, Xs, ytr, C), {}
    model = MulticlassSVGPBaseline(Z, C, num_latents=None if label.startswith("SVGP") else min(C, 8))
    return model, {"train_X": Xs, "train_Y": ytr, "likelihood": model.likelihood}


def _train(bench, model, opts) -> tuple[float, float, int]:
    stop = opts.get("callback")

    def callback(state):  # progress on stderr every 50 epochs (a long baseline run can be watched)
        if state.epoch % 50 == 0:
            _log(f"  {type(model).__name__} epoch {state.epoch}: loss {state.loss:.5g}, {state.elapsed:.0f} s")
        return bool(stop is not None and stop(state))

    opts = {**opts, "callback": callback}
    m = bench.measure(lambda: gpkit.fit(model, progress=False, seed=0, **opts), repeats=1, warmup=0)
    return m.seconds, m.peak_memory_mb, len(model.fit_history)


def _converged(model, n: int, epochs: int, opts: dict) -> bool | None:
    """Whether a run of gpkit.fit's converging default stopped by its tolerance rule before its step cap
    (``None`` for an explicit epoch count, where there is no rule)."""
    if "epochs" in opts:
        return None
    batches = math.ceil(n / opts.get("batch_size", (getattr(model, "fit_defaults", None) or {}).get("batch_size", BATCH)))
    defaults = getattr(model, "fit_defaults", None) or {}
    cap_epochs = defaults.get("epochs", 20)
    max_steps = max(cap_epochs * batches, _CONVERGE["max_steps"], defaults.get("min_steps", _CONVERGE["min_steps"]))
    return epochs * batches < max_steps


def _accuracy_part(bench, cfg) -> dict:
    results = {}
    for name in cfg["sets"]:
        for split in (*cfg["splits"], *cfg.get("extra_splits", {}).get(name, ())):
            Xtr, ytr, Xte, yte, C = _data(name, split, bench, cfg["max_train"])
            case = f"{name} (split {split})" if cfg["max_train"] else f"{name} (split {split}, full training set)"
            common = {"n_train": Xtr.size(0), "n_test": Xte.size(0), "C": C, "split": split}
            torch.manual_seed(split)
            if cfg["etgp_epochs"] is None:  # gpkit's defaults
                etgp, opts = ETGP(Xtr, ytr, C, num_inducing=M, seed=split), {}
            else:
                etgp = ETGP(Xtr, ytr, C, num_inducing=M, seed=split, warmup_epochs=cfg["etgp_epochs"] // 4)
                opts = {"epochs": cfg["etgp_epochs"]}
            seconds, mem, epochs = _train(bench, etgp, opts)
            conv = _converged(etgp, Xtr.size(0), epochs, opts)
            res = {"ETGP": {**_metrics(etgp.predict_proba(Xte), yte), "seconds": seconds}}
            bench.add(case, "ETGP", **common, **res["ETGP"], epochs=epochs, converged=conv,
                      seconds_to_convergence=seconds, seconds_per_epoch=seconds / epochs, peak_memory_mb=mem,
                      model_mb=_model_mb(etgp),
                      accuracy_gp_ablated=_metrics(etgp.predict_proba(Xte, ablate="gp"), yte)["accuracy"])
            _log(f"{case}: ETGP {res['ETGP']} in {seconds:.1f} s ({epochs} epochs, converged {conv})")
            Xs, Xts = _standardise(Xtr, Xte)
            Z = init_inducing_points(Xs, M, "kmeans", seed=split)
            labels = cfg["baselines"]
            if cfg.get("baselines_for") is not None:
                labels = cfg["baselines_for"].get(name, ("SVGP (C GPs)",))
            for label in labels:
                model, extra = _baseline(label, Xs, ytr, C, Z)
                # the same converging rule as ETGP's default fit (quick mode: a fixed epoch count for both)
                fit_opts = {"lr": LR, "batch_size": BATCH}
                if cfg["epoch_cap"] is not None:
                    fit_opts["epochs"] = cfg["epoch_cap"]
                seconds, mem, epochs = _train(bench, model, {**fit_opts, **extra})
                conv = _converged(model, Xtr.size(0), epochs, fit_opts)
                res[label] = {**_metrics(model.predict_proba(Xts), yte), "seconds": seconds}
                bench.add(case, label, **common, accuracy=res[label]["accuracy"], nll=res[label]["nll"], epochs=epochs,
                          converged=conv, seconds_to_convergence=seconds, seconds_per_epoch=seconds / epochs,
                          peak_memory_mb=mem, model_mb=_model_mb(model))
                _log(f"{case}: {label} {res[label]} in {seconds:.1f} s ({epochs} epochs, converged {conv})")
                if label in cfg["equal_time"]:
                    budget = res["ETGP"]["seconds"]
                    model, extra = _baseline(label, Xs, ytr, C, Z)
                    stop = {"callback": lambda state, b=budget: state.elapsed >= b}
                    seconds, _, epochs = _train(bench, model, {**fit_opts, "epochs": 10**6, "tol": 0.0, **extra, **stop})
                    m = _metrics(model.predict_proba(Xts), yte)
                    bench.add(case, f"{label} @ ETGP time", **common, **m, epochs=epochs, seconds=seconds)
            results[case] = res
    return results


def _synthetic(n, C, d, seed, bench):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=bench.dtype)
    centres = torch.rand(C, d, generator=g, dtype=bench.dtype)
    y = torch.cat([torch.cdist(xb, centres).argmin(-1) for xb in X.split(20000)])
    return X.to(bench.device), y.to(bench.device)


def _timed_step(bench, opt, loss_fn, batch) -> float:
    """Seconds of one optimizer step on ``batch`` (CUDA synchronised)."""
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss_fn(batch).backward()
    opt.step()
    if bench.device.type == "cuda":
        torch.cuda.synchronize(bench.device)
    return time.perf_counter() - start


def _step_seconds(bench, module, loss_fn, n, steps):
    """Median seconds of one optimizer step (batch 256) over ``steps`` steps after one warm-up, and peak memory."""
    opt = make_optimizer(module, lr=LR)
    module.train()
    batches = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: (steps + 1) * BATCH].to(bench.device)
    batches = list(batches.split(BATCH))
    times = []

    def run():
        for b in batches:
            times.append(_timed_step(bench, opt, loss_fn, b))

    m = bench.measure(run, repeats=1, warmup=0)
    return statistics.median(times[1:]), m.peak_memory_mb


def _interleaved_steps(bench, jobs: dict, n: int, rounds: int, steps: int) -> dict:
    """Median seconds of one optimizer step (batch 256) for each ``key: (module, loss_fn)`` of ``jobs``, timed in
    ``rounds`` rounds that each run ``steps`` steps of every job in turn (after one warm-up step each), so that
    a change in the machine's load hits every job alike."""
    state = {}
    for key, (module, loss_fn) in jobs.items():
        module.train()
        state[key] = (make_optimizer(module, lr=LR), loss_fn, [])
    g = torch.Generator().manual_seed(1)

    def step(opt, loss_fn):
        return _timed_step(bench, opt, loss_fn, torch.randint(n, (BATCH,), generator=g).to(bench.device))

    for opt, loss_fn, _ in state.values():
        step(opt, loss_fn)
    for _ in range(rounds):
        for opt, loss_fn, times in state.values():
            times.extend(step(opt, loss_fn) for _ in range(steps))
    return {key: statistics.median(times) for key, (_, _, times) in state.items()}


def _cost_part(bench, cfg) -> dict:
    n, d = cfg["sweep_n"], 4
    out, jobs = {}, {}
    for C in cfg["sweep_C"]:
        X, y = _synthetic(n, C, d, 0, bench)
        torch.manual_seed(0)
        etgp = ETGP(X, y, C, num_inducing=M, inducing_points="random", warmup_epochs=0)
        steps = cfg["steps"] if C <= 100 else cfg.get("steps_large", 3)
        e_step, e_mem = _step_seconds(bench, etgp, etgp.batch_loss, n, steps)
        # the GP part of the same step alone: q(f0) at the batch (kernel, Cholesky, whitening) and the KL
        Xs_ = etgp.standardize(X)

        def gp_part(b, m=etgp, X_=Xs_):
            q = m._latent(X_[b])
            return q.mean.pow(2).sum() + q.variance.sum() + m.variational_strategy.kl_divergence()

        jobs[f"ETGP {C}"], jobs[f"GP {C}"] = (etgp, etgp.batch_loss), (etgp, gp_part)
        # the same step before the fused kernel: plain autograd through the flows, Q = 20 (the old default)
        torch.manual_seed(0)
        before = ETGP(X, y, C, num_inducing=M, inducing_points="random", warmup_epochs=0, num_quadrature=20)
        before.likelihood.fused = False
        b_step, b_mem = _step_seconds(bench, before, before.batch_loss, n, steps)
        bench.add(f"synthetic C={C}", "ETGP before (autograd, Q=20)", C=C, n_train=n, seconds_per_step=b_step,
                  seconds_per_epoch=b_step * math.ceil(n / BATCH), peak_memory_mb=b_mem, model_mb=_model_mb(before))
        del before
        out.setdefault("before", {})[C] = b_step
        if C > cfg.get("svgp_max_C", C):
            out[C] = {"ETGP": e_step}
            bench.add(f"synthetic C={C}", "ETGP", C=C, n_train=n, seconds_per_step=e_step,
                      seconds_per_epoch=e_step * math.ceil(n / BATCH), peak_memory_mb=e_mem, model_mb=_model_mb(etgp))
            _log(f"C={C}: ETGP {e_step * 1e3:.1f} ms/step (before {b_step * 1e3:.1f}), SVGP skipped")
            continue
        Z = init_inducing_points(etgp.standardize(X), M, "random")
        svgp = MulticlassSVGPBaseline(Z, C)
        mll = gpytorch.mlls.VariationalELBO(svgp.likelihood, svgp, num_data=n)
        Xs = etgp.standardize(X)
        s_step, s_mem = _step_seconds(bench, svgp, lambda b, s=svgp, m=mll, X_=Xs, y_=y: -m(s(X_[b]), y_[b]), n, steps)
        per_epoch = math.ceil(n / BATCH)
        out[C] = {"ETGP": e_step, "SVGP": s_step}
        for label, step, mem, model in (("ETGP", e_step, e_mem, etgp), ("SVGP (C GPs)", s_step, s_mem, svgp)):
            bench.add(f"synthetic C={C}", label, C=C, n_train=n, seconds_per_step=step,
                      seconds_per_epoch=step * per_epoch, peak_memory_mb=mem, model_mb=_model_mb(model),
                      note="epoch time = median step x steps per epoch")
        _log(f"C={C}: ETGP {e_step * 1e3:.1f} ms/step (before {b_step * 1e3:.1f}), SVGP {s_step * 1e3:.1f} ms/step")
        del svgp
    # ETGP's step and its GP part alone at every C, interleaved (the ratios across C are the measurement)
    inter = _interleaved_steps(bench, jobs, n, cfg.get("rounds", 5), cfg.get("round_steps", 4))
    for C in cfg["sweep_C"]:
        out[C]["ETGP"], out.setdefault("gp", {})[C] = inter[f"ETGP {C}"], inter[f"GP {C}"]
        bench.add(f"synthetic C={C}", "ETGP (interleaved)", C=C, n_train=n, seconds_per_step=inter[f"ETGP {C}"],
                  seconds_per_epoch=inter[f"ETGP {C}"] * math.ceil(n / BATCH),
                  note="median over steps interleaved across C")
        bench.add(f"synthetic C={C}", "ETGP GP part only", C=C, n_train=n, seconds_per_step=inter[f"GP {C}"],
                  note="q(f0) and KL of the same step, interleaved; the rest is the flow network and flows")
    jobs.clear()
    if cfg["train_epochs"] > 0:
        for C in (10, 100):
            X, y = _synthetic(cfg["train_n"] + 10000, C, d, 1, bench)
            Xtr, ytr, Xte, yte = X[:-10000], y[:-10000], X[-10000:], y[-10000:]
            torch.manual_seed(0)
            etgp = ETGP(Xtr, ytr, C, warmup_epochs=1)
            seconds, mem, epochs = _train(bench, etgp, {"epochs": cfg["train_epochs"]})
            bench.add(f"synthetic C={C}, trained", "ETGP", C=C, n_train=Xtr.size(0), epochs=epochs,
                      **_metrics(etgp.predict_proba(Xte), yte), seconds_per_epoch=seconds / epochs, peak_memory_mb=mem)
            _log(f"synthetic C={C}, n={Xtr.size(0)} trained {epochs} epochs in {seconds:.0f} s")
    return out


def main(bench) -> None:
    cfg = _partial(_config(bench))
    if os.environ.get("GPKIT_ETGP_PART") == "cost":  # the cost-vs-C sweep alone, saved as etgp-cost.*
        bench.name = "etgp-cost"
        cfg.update(train_epochs=0, steps=10, steps_large=3, rounds=8, svgp_max_C=int(os.environ.get("GPKIT_ETGP_SVGP_MAX_C", "1000")))
        acc = {}
    elif os.environ.get("GPKIT_ETGP_PART") == "accuracy":  # the real-data part alone (the cost sweep: etgp-cost.*)
        cfg.update(sweep_C=(), train_epochs=0)
        acc = _accuracy_part(bench, cfg)
    else:
        acc = _accuracy_part(bench, cfg)
    cost = _cost_part(bench, cfg)
    before = cost.pop("before", {})
    gp = cost.pop("gp", {})
    bench.compare("ETGP", list(cfg["baselines"]), ["seconds_per_epoch", "seconds_to_convergence", "model_mb"],
                  differences=["accuracy", "nll"])
    bench.compare("ETGP", ["SVGP (C GPs)"], ["seconds_per_step", "seconds_per_epoch", "model_mb"])
    mode = "quick" if bench.quick else "full"
    etgp_epochs = "" if cfg["etgp_epochs"] is None else f" but {cfg['etgp_epochs']} epochs"
    rule = ("the same fixed epoch count" if cfg["epoch_cap"] is not None else
            "gpkit.fit's converging default, as ETGP (tolerance rule or step cap, see `converged`)")
    if acc:
        bench.note(
            f"Setup ({mode} mode, {bench.device}, {str(bench.dtype).replace('torch.', '')}): training sets subsampled "
            f"to at most {cfg['max_train']} points (test sets complete); cases {', '.join(acc)}. ETGP: gpkit.fit "
            f"defaults{etgp_epochs}. Baselines: {rule}. "
            "CPU peak_memory_mb is the growth of the process's peak RSS; model_mb counts parameters."
        )
    for label in cfg["baselines"]:
        rows = [(r["ETGP"], r[label]) for r in acc.values() if label in r]
        if rows:
            wins = sum(e["accuracy"] >= b["accuracy"] for e, b in rows)
            nll_ok = sum(e["nll"] <= b["nll"] for e, b in rows)
            speed = statistics.median(b["seconds"] / e["seconds"] for e, b in rows)
            cases = ", ".join(c for c, r in acc.items() if label in r)
            bench.note(f"vs {label} ({cases}): ETGP accuracy >= baseline on {wins}/{len(rows)} cases, NLL <= baseline "
                       f"on {nll_ok}/{len(rows)}; median time-to-convergence ratio baseline/ETGP {speed:.2g}.")
    cs = sorted(cost)
    if len(cs) >= 2:
        lo, hi = cs[0], cs[-1]
        bench.note(
            f"Cost vs C (batch {BATCH}, M={M}): ETGP step time x{cost[hi]['ETGP'] / cost[lo]['ETGP']:.2f} from C={lo} to "
            f"C={hi} (target < 2); C-GP SVGP x{cost[hi].get('SVGP', math.nan) / cost[lo]['SVGP']:.1f}. Per-step SVGP/ETGP: "
            + ", ".join(f"C={c}: {cost[c]['SVGP'] / cost[c]['ETGP']:.1f}" for c in cs if "SVGP" in cost[c]) + "."
        )
        bench.note(
            "Before the fused kernel (autograd through the flows, Q=20), same run: ETGP step "
            + ", ".join(f"C={c}: {before[c] * 1e3:.0f} -> {cost[c]['ETGP'] * 1e3:.0f} ms" for c in cs)
            + f"; growth C={lo}->{hi} x{before[hi] / before[lo]:.1f} before, x{cost[hi]['ETGP'] / cost[lo]['ETGP']:.1f} now."
        )
        bench.note(
            "GP part of the ETGP step alone (q(f0) at the batch and the KL), same run: "
            + ", ".join(f"C={c}: {gp[c] * 1e3:.0f} ms" for c in cs)
            + f" (x{gp[hi] / gp[lo]:.2f}); the rest (flow network and the B x Q x C flows): "
            + ", ".join(f"C={c}: {(cost[c]['ETGP'] - gp[c]) * 1e3:.0f} ms" for c in cs) + "."
        )
