"""RVGP vs a scalar-Laplacian GP and a Euclidean RBF GP on tangent vector fields; RVGP's pre-processing cost.

Cases (all nodes known, vectors observed at some, predicted at the rest; transductive):
- ``sphere``: 2000 Fibonacci nodes, smooth tangent field (random Fourier ambient field projected), noise std
  0.05, 400 random training nodes (the issue's prototype setting); ``sphere sparse``: 40 training nodes.
- ``sphere inpainting``: rotation field e_z x x (zero at the poles), the polar cap z > 0.75 held out.
- ``torus``: 3000 random nodes (R = 1, r = 0.4), smooth field, 300 training nodes.
- ``folded sheet``: 3000 nodes on a U-folded sheet (layers 0.15 apart), field along the sheet (so opposite on
  the two layers at the same x, y), 300 training nodes: Euclidean short-cuts.
- ``bunny super-resolution``: the 2503-vertex Stanford bunny, smooth tangent field (noise 0.05); training
  = a furthest-point subsample (maximin order) with spacing >= 0.05 of the diameter; ``bunny inpainting``:
  the vertices within 0.15 diameters of the top of the ears held out, training = 30 % of the rest.
- ``wind``: NCEP 200 hPa January mean wind on the 2.5-degree grid (poles dropped), training = every 4th
  latitude/longitude, test = the rest (super-resolution of a real field).
Methods: RVGP with its defaults (eigenpairs chosen automatically from the spectrum); the scalar-Laplacian GP
(the same number of scalar eigenpairs, one Matérn spectral kernel shared by the D channels); a Euclidean RBF GP
per ambient coordinate (GPyTorch exact GPs). All hyperparameters and noises are learned by ``gpkit.fit`` with
the same rule: full-batch exact marginal likelihood, Adam lr 0.1, at most 200 steps, stop when the best loss
improves by less than 1e-6 (relative) over 20 steps.

Metrics on the test nodes: alignment = mean cosine between predicted and noise-free true vectors; MSE =
mean squared error per node (sum over coordinates) against the noise-free field; NLL = mean Gaussian NLL per
node of the noisy test vectors (D-dimensional, incl. 0.5 log 2 pi per coordinate; RVGP's D x D predictive
blocks, the baselines' diagonal); normal = median |v . n| / |v| of the predictions against the true normals
(not for the wind field: the sphere's normals are exact there too, so it is given); seconds = pre-processing
+ training + prediction in wall time, cpu_s the same in CPU time of this process (the machine is shared:
CPU time is what a dedicated core would take; everything runs single-threaded) (the pre-processing of a point set shared by several seeds or cases, sphere and
bunny, is done once and not counted). Seeds vary the field and the training subset (and the torus/sheet points).
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import torch
from torch import Tensor

import gpkit
from gpkit.baselines import EuclideanVectorGP, ScalarLaplacianVectorGP
from gpkit.benchmarking import benchmarks_dir
from gpkit.datasets import load, mesh_vector_field, sphere_vector_field, torus_vector_field
from gpkit.manifolds import ManifoldGeometry, fibonacci_sphere, folded_sheet, project_tangent
from gpkit.models import RVGP
from gpkit.neighbors import maximin_order


def _log(text: str) -> None:
    print(f"[rvgp bench] {text}", file=sys.stderr, flush=True)


def _config(bench) -> dict:
    if bench.quick:
        return {"seeds": (0,), "sphere_n": 600, "sphere_train": 120, "torus_n": 800, "torus_train": 120,
                "sheet_n": 1500, "sheet_train": 40, "wind_stride": 4, "wind_sub": 6, "max_k": 150,
                "k_sweep": (10, 50), "density": (40,), "scale_bunny": "bunny", "scale_sphere": 10000,
                "scale_fit_train": 300}
    return {"seeds": (0, 1), "sphere_n": 2000, "sphere_train": 400, "torus_n": 2000, "torus_train": 300,
            "sheet_n": 2500, "sheet_train": 60, "wind_stride": 4, "wind_sub": 1, "max_k": 500,
            "k_sweep": (10, 50, 100, 200, 500), "density": (25, 50, 100, 400), "scale_bunny": "bunny_fine",
            "scale_sphere": 100000, "scale_fit_train": 1500}


# ------------------------------------------------------------------------------------------- metrics
def _metrics(mean: Tensor, cov: Tensor, truth: Tensor, noisy: Tensor, normals: Tensor | None) -> dict:
    """``mean`` ``q x D``; ``cov`` ``q x D x D`` (or ``q x D`` variances) of the noisy vectors."""
    cos = torch.nn.functional.cosine_similarity(mean, truth, dim=-1)
    err = noisy - mean
    D = mean.shape[-1]
    if cov.dim() == 2:
        nll = 0.5 * (torch.log(2 * math.pi * cov) + err.square() / cov).sum(-1)
    else:
        L = torch.linalg.cholesky(cov)
        z = torch.linalg.solve_triangular(L, err.unsqueeze(-1), upper=False).squeeze(-1)
        nll = 0.5 * z.square().sum(-1) + torch.log(L.diagonal(dim1=-2, dim2=-1)).sum(-1) + 0.5 * D * math.log(2 * math.pi)
    out = {"alignment": cos.mean().item(), "mse": (mean - truth).square().sum(-1).mean().item(), "nll": nll.mean().item()}
    if normals is not None:
        out["normal"] = ((mean * normals).sum(-1).abs() / mean.norm(dim=-1).clamp_min(1e-300)).median().item()
    return out


_SCALAR = {}  # (id(geometry), k) -> scalar-Laplacian eigenpairs, shared by the seeds of one point set
MAX_K = [500]  # RVGP's max_eigenpairs (its default; smaller in quick mode)


def _run_all(points, train, test, y, truth, normals, geometry=None, num_eigenpairs=None, baselines=True) -> dict:
    """Fit RVGP (defaults; ``geometry`` reuses a point set's pre-processing) and the two baselines; return
    {method: metrics}. Seconds include RVGP's pre-processing when it is not reused."""
    out = {}
    normals = None if normals is None else normals[test]
    start, cpu = time.perf_counter(), time.process_time()
    model = RVGP(points, train, y[train], num_eigenpairs=num_eigenpairs, geometry=geometry, max_eigenpairs=MAX_K[0])
    gpkit.fit(model)
    mean, cov = model.marginals(test)
    out["RVGP"] = {**_metrics(mean, cov, truth[test], y[test], normals), "seconds": time.perf_counter() - start,
                   "cpu_s": time.process_time() - cpu, "k": model.num_eigenpairs, "steps": len(model.fit_history)}
    if not baselines:
        return out, model
    start, cpu = time.perf_counter(), time.process_time()
    key = (id(model.geometry), model.num_eigenpairs)
    if key not in _SCALAR:
        _SCALAR[key] = model.geometry.scalar_eigenpairs(model.num_eigenpairs, extra=0)
    lam, vec = _SCALAR[key]
    scalar = ScalarLaplacianVectorGP(lam, vec, train, y[train])
    gpkit.fit(scalar)
    mean, var = scalar.predict(test)
    out["scalar Laplacian GP"] = {**_metrics(mean, var, truth[test], y[test], normals),
                                  "seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                                  "k": lam.numel(), "steps": len(scalar.fit_history)}
    start, cpu = time.perf_counter(), time.process_time()
    rbf = EuclideanVectorGP(points[train], y[train])
    gpkit.fit(rbf)
    mean, var = rbf.predict(points[test])
    out["Euclidean RBF GP"] = {**_metrics(mean, var, truth[test], y[test], normals),
                               "seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                               "steps": len(rbf.fit_history)}
    return out, model


def _add_seeds(bench, case: str, per_seed: list[dict], **info) -> dict:
    """One row per method: medians over seeds, spread (min/max) of the alignment."""
    summary = {}
    for method in per_seed[0]:
        rows = [r[method] for r in per_seed]
        med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        align = [r["alignment"] for r in rows]
        bench.add(case, method, **med, alignment_min=min(align), alignment_max=max(align), seeds=len(rows), **info)
        summary[method] = med
        _log(f"{case}: {method} {med}")
    return summary


def _split(n: int, n_train: int, seed: int) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_train].sort().values, perm[n_train:].sort().values


# --------------------------------------------------------------------------------------------- cases
def _sphere(bench, cfg, results):
    # the Fibonacci nodes are the same for every seed: one pre-processing (RVGP takes the leading eigenpairs)
    geometry = ManifoldGeometry.from_points(fibonacci_sphere(cfg["sphere_n"]), 10)
    for case, n_train in (("sphere", cfg["sphere_train"]), ("sphere sparse", 40)):
        runs = []
        for seed in cfg["seeds"]:
            ds = sphere_vector_field(cfg["sphere_n"], noise=0.05, seed=seed)
            train, test = _split(cfg["sphere_n"], n_train, seed)
            runs.append(_run_all(ds.X, train, test, ds.y, ds.extras["f"], ds.extras["normals"], geometry)[0])
        results[case] = _add_seeds(bench, case, runs, n=cfg["sphere_n"], n_train=n_train)
    # inpainting near the singular points of the rotation field
    runs = []
    for seed in cfg["seeds"]:
        ds = sphere_vector_field(cfg["sphere_n"], kind="rotation", seed=seed)
        gen = torch.Generator().manual_seed(seed)
        y = ds.y + project_tangent(0.05 * torch.randn(ds.X.shape, generator=gen, dtype=ds.X.dtype), ds.X)
        cap = ds.X[:, 2] > 0.75
        rest = (~cap).nonzero().squeeze(-1)
        train = rest[torch.randperm(rest.numel(), generator=gen)[: cfg["sphere_train"]]].sort().values
        runs.append(_run_all(ds.X, train, cap.nonzero().squeeze(-1), y, ds.y, ds.X, geometry)[0])
    results["sphere inpainting"] = _add_seeds(bench, "sphere inpainting (cap z > 0.75)", runs,
                                              n=cfg["sphere_n"], n_train=cfg["sphere_train"])


def _torus(bench, cfg, results):
    runs = []
    for seed in cfg["seeds"]:
        ds = torus_vector_field(cfg["torus_n"], noise=0.05, seed=seed)
        train, test = _split(cfg["torus_n"], cfg["torus_train"], seed)
        runs.append(_run_all(ds.X, train, test, ds.y, ds.extras["f"], ds.extras["normals"])[0])
    results["torus"] = _add_seeds(bench, "torus", runs, n=cfg["torus_n"], n_train=cfg["torus_train"])


def _sheet_field(X: Tensor, normals: Tensor, s: Tensor) -> Tensor:
    # unit tangent along the sheet (+x on the lower layer, -x on the upper one) and across it (e_y)
    e_y = torch.zeros_like(X)
    e_y[:, 1] = 1.0
    e_s = torch.linalg.cross(e_y, normals)
    total = float(s.max())
    return e_s * (1 + 0.5 * torch.sin(2 * math.pi * X[:, 1:2])) + e_y * 0.5 * torch.cos(2 * math.pi * s[:, None] / total)


def _sheet(bench, cfg, results):
    runs = []
    for seed in cfg["seeds"]:
        X, normals, s = folded_sheet(cfg["sheet_n"], seed=seed)
        f = _sheet_field(X, normals, s)
        gen = torch.Generator().manual_seed(seed + 1)
        y = f + project_tangent(0.05 * torch.randn(X.shape, generator=gen, dtype=X.dtype), normals)
        train, test = _split(cfg["sheet_n"], cfg["sheet_train"], seed)
        runs.append(_run_all(X, train, test, y, f, normals)[0])
    results["folded sheet"] = _add_seeds(bench, "folded sheet", runs, n=cfg["sheet_n"], n_train=cfg["sheet_train"])


def _bunny(bench, cfg, results):
    geometry = ManifoldGeometry.from_points(load("bunny").X, 10)
    for case in ("bunny super-resolution", "bunny inpainting"):
        runs = []
        for seed in cfg["seeds"]:
            ds = mesh_vector_field("bunny", seed=seed, noise=0.05)
            X, f = ds.X, ds.extras["f"]
            diam = float((X.max(0).values - X.min(0).values).norm())
            if case == "bunny super-resolution":
                order, dist = maximin_order(X, duplicates="ignore")
                train = order[dist >= 0.05 * diam].sort().values
                mask = torch.ones(X.shape[0], dtype=torch.bool)
                mask[train] = False
                test = mask.nonzero().squeeze(-1)
            else:
                top = X[:, 1].argmax()  # the bunny stands along +y: the ear tip
                hole = (X - X[top]).norm(dim=-1) < 0.15 * diam
                rest = (~hole).nonzero().squeeze(-1)
                gen = torch.Generator().manual_seed(seed)
                train = rest[torch.randperm(rest.numel(), generator=gen)[: int(0.3 * rest.numel())]].sort().values
                test = hole.nonzero().squeeze(-1)
            runs.append(_run_all(X, train, test, ds.y, f, ds.extras["normals"], geometry)[0])
        results[case] = _add_seeds(bench, case, runs, n=X.shape[0], n_train=int(train.numel()), n_test=int(test.numel()))


def _wind(bench, cfg, results):
    ds = load("wind", stride=cfg["wind_stride"])
    X, y = ds.X, ds.y
    sub = torch.arange(0, X.shape[0], cfg["wind_sub"])  # quick mode: a thinned grid
    train_mask = torch.zeros(X.shape[0], dtype=torch.bool)
    train_mask[ds.splits["train"] if "train" in ds.splits else ~ds.splits["test"]] = True
    X, y, train_mask = X[sub], y[sub], train_mask[sub]
    train, test = train_mask.nonzero().squeeze(-1), (~train_mask).nonzero().squeeze(-1)
    run, _ = _run_all(X, train, test, y, y, X)
    results["wind"] = _add_seeds(bench, "wind (NCEP Jan, 200 hPa)", [run], n=X.shape[0], n_train=int(train.numel()))


def _ablations(bench, cfg, results):
    ds = sphere_vector_field(cfg["sphere_n"], noise=0.05, seed=0)
    train, test = _split(cfg["sphere_n"], cfg["sphere_train"], 0)
    geometry = ManifoldGeometry.from_points(ds.X, 10)
    geometry.compute_eigenpairs(max(cfg["k_sweep"]))
    for k in cfg["k_sweep"]:
        run, _ = _run_all(ds.X, train, test, ds.y, ds.extras["f"], ds.extras["normals"], geometry,
                              num_eigenpairs=k, baselines=False)
        bench.add(f"ablation: sphere, k={k}", "RVGP", **run["RVGP"], asked_k=k)
        _log(f"k={k}: {run['RVGP']}")
    for n_train in cfg["density"]:
        train, test = _split(cfg["sphere_n"], n_train, 0)
        run, _ = _run_all(ds.X, train, test, ds.y, ds.extras["f"], ds.extras["normals"], geometry)
        for method, metrics in run.items():
            bench.add(f"ablation: sphere, n_train={n_train}", method, **metrics)
        _log(f"n_train={n_train}: {run}")


def _scaling(bench, cfg, results):
    cases = [(cfg["scale_bunny"], load(cfg["scale_bunny"]).X)]
    cases.append((f"sphere {cfg['scale_sphere']}", fibonacci_sphere(cfg["scale_sphere"])))
    for name, X in cases:
        timings = {}

        def build(X=X, timings=timings):
            start, cpu = time.perf_counter(), time.process_time()
            g = ManifoldGeometry.from_points(X, 10)
            timings["graph_frames_laplacian_s"] = time.perf_counter() - start
            timings["graph_frames_laplacian_cpu_s"] = time.process_time() - cpu
            start, cpu = time.perf_counter(), time.process_time()
            g.compute_eigenpairs(100)
            timings["eigenpairs_s"] = time.perf_counter() - start
            timings["eigenpairs_cpu_s"] = time.process_time() - cpu
            return g

        m = bench.measure(build, repeats=1, warmup=0)
        g = m.value
        row = {"n": X.shape[0], "k": int(g.eigenvalues.numel()), **timings, "peak_memory_mb": m.peak_memory_mb,
               "laplacian_nnz": int(g.laplacian.nnz)}
        if name.startswith("bunny"):
            ds = mesh_vector_field(cfg["scale_bunny"], seed=0, noise=0.05)
            order, _ = maximin_order(X, duplicates="ignore")
            train = order[: cfg["scale_fit_train"]].sort().values
            start, cpu = time.perf_counter(), time.process_time()
            model = RVGP(X, train, ds.y[train], num_eigenpairs=100, geometry=g)
            gpkit.fit(model)
            mask = torch.ones(X.shape[0], dtype=torch.bool)
            mask[train] = False
            pred = model.predict(mask.nonzero().squeeze(-1))
            row["fit_predict_s"] = time.perf_counter() - start
            row["fit_predict_cpu_s"] = time.process_time() - cpu
            row["total_s"] = row["graph_frames_laplacian_s"] + row["eigenpairs_s"] + row["fit_predict_s"]
            row["total_cpu_s"] = row["graph_frames_laplacian_cpu_s"] + row["eigenpairs_cpu_s"] + row["fit_predict_cpu_s"]
            row["alignment"] = torch.nn.functional.cosine_similarity(pred, ds.extras["f"][mask], dim=-1).mean().item()
            row["n_train"] = int(train.numel())
        bench.add(f"scaling: {name}", "RVGP pre-processing", **row)
        _log(f"scaling {name}: {row}")
        results[f"scaling {name}"] = row
        bench.save(benchmarks_dir() / "results")  # partial results (rewritten at the end)
        del g


def main(bench) -> None:
    torch.manual_seed(0)
    cfg = _config(bench)
    MAX_K[0] = cfg["max_k"]
    results = {}
    t0 = time.perf_counter()
    for part in (_sphere, _torus, _sheet, _bunny, _wind, _ablations, _scaling):
        part(bench, cfg, results)
        _log(f"{part.__name__} done at {time.perf_counter() - t0:.0f} s")
        bench.save(benchmarks_dir() / "results")  # partial results (rewritten at the end)
    bench.compare("RVGP", ["scalar Laplacian GP", "Euclidean RBF GP"], ["mse", "seconds", "cpu_s"],
                  differences=["alignment", "nll"])
    surfaces = [c for c in results if not c.startswith("scaling")]
    beats_scalar = [c for c in surfaces if results[c]["RVGP"]["alignment"] > results[c]["scalar Laplacian GP"]["alignment"]]
    beats_rbf = [c for c in surfaces if results[c]["RVGP"]["alignment"] > results[c]["Euclidean RBF GP"]["alignment"]]
    rbf_wins = [c for c in surfaces if c not in beats_rbf]
    bench.note(f"Setup: {'quick' if bench.quick else 'full'} mode, seeds {cfg['seeds']}, CPU, float64. "
               "Every model trained by gpkit.fit (Adam lr 0.1, <= 200 full-batch steps, relative tol 1e-6 over 20 steps).")
    bench.note(f"RVGP alignment above the scalar-Laplacian GP on {len(beats_scalar)} of {len(surfaces)} cases "
               f"({', '.join(beats_scalar) or 'none'}).")
    bench.note(f"RVGP alignment above the Euclidean RBF GP on {len(beats_rbf)} of {len(surfaces)} cases "
               f"({', '.join(beats_rbf) or 'none'}); the RBF GP is better on {', '.join(rbf_wins) or 'none'}.")
    tangent = [c for c in surfaces if c != "wind" and "normal" in results[c]["RVGP"]]
    if tangent:
        bench.note("Median normal component |v.n|/|v| of the predictions (true normals), RVGP vs RBF: " + ", ".join(
            f"{c}: {results[c]['RVGP']['normal']:.1e} vs {results[c]['Euclidean RBF GP']['normal']:.1e}" for c in tangent)
            + ". RVGP's predictions lie exactly (1e-15) in its local-PCA tangent planes; what remains is the PCA "
            "frame error against the true normals.")
    bench.note(f"Parts took {time.perf_counter() - t0:.0f} s in all.")
