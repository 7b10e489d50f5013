"""Maximin ordering, sparsity patterns and kNN search of gpkit.neighbors against brute force and GPyTorch.

Cases (uniform points in [0, 1]^5, seed 0, rho = 1.5, k = 32):

* ``order n=N``: exact maximin ordering, gpkit (heap + kd-tree) vs a brute-force O(n^2) NumPy loop.
* ``order+S n=N``: ordering plus the sparsity pattern S_j (the DKLGP set-up cost), and the ancestor sets.
* ``kNN k=32 n=N``: min(N, 10^4) query points against N points: gpkit ``knn`` vs blocked
  ``torch.cdist`` + ``topk`` and GPyTorch's ``NNUtil`` (scikit-learn backend, faiss is not installed).
* ``previous kNN k=32 n=N``: VNNGP neighbours among earlier points, gpkit ``previous_knn`` vs
  ``NNUtil.build_sequential_nn_idx`` (refits a tree per point; run for N <= 10^4 only).

Run: ``gpkit bench neighbors [--quick] [--device cuda]`` (quick: N = 10^3, 10^4; full adds 10^5).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from gpkit.neighbors import ancestor_sets, knn, maximin_order, previous_knn, sparsity_pattern

RHO, K, D = 1.5, 32, 5


def brute_maximin(X: np.ndarray) -> np.ndarray:
    """O(n^2) maximin ordering, one distance row per step (no n x n matrix)."""
    n = X.shape[0]
    c = X - X.mean(0)
    first = int(np.argmin((c * c).sum(1)))
    order = [first]
    diff = X - X[first]
    cur = (diff * diff).sum(1)
    cur[first] = -1.0
    for _ in range(1, n):
        i = int(np.argmax(cur))
        order.append(i)
        diff = X - X[i]
        cur = np.minimum(cur, (diff * diff).sum(1))
        cur[i] = -1.0
    return np.array(order)


def brute_knn(Q: torch.Tensor, P: torch.Tensor, k: int) -> torch.Tensor:
    rows = max(1, 2**25 // P.shape[0])
    return torch.cat(
        [torch.cdist(Q[s : s + rows], P).topk(k, largest=False).indices for s in range(0, len(Q), rows)]
    )


def measure(bench, fn, **options):
    """``bench.measure`` plus the median CPU time of the timed calls (robust to a busy machine)."""
    cpu = []

    def timed():
        start = time.process_time()
        value = fn()
        cpu.append(time.process_time() - start)
        return value

    m = bench.measure(timed, **options)
    return m, float(np.median(cpu[-len(m.times) :]))


def slope(ns, seconds) -> float:
    """Least-squares slope of log(seconds) against log(n)."""
    return float(np.polyfit(np.log(ns), np.log(seconds), 1)[0])


def main(bench) -> None:
    sizes = [1_000, 10_000] if bench.quick else [1_000, 10_000, 100_000]
    growth = {"gpkit order+S": [], "gpkit order": [], "gpkit kNN": [], "cdist+topk kNN": []}
    for n in sizes:
        one_size(bench, n, growth)
    if not bench.quick:
        ordering_only(bench, 1_000_000)
    bench.compare(
        "gpkit", ["brute-force O(n^2)", "cdist+topk", "gpytorch NNUtil"], ["seconds", "cpu_seconds"]
    )
    slopes = ", ".join(f"{name} {slope(sizes, secs):.2f}" for name, secs in growth.items())
    bench.note(
        f"Uniform points in [0,1]^{D}, rho={RHO}, k={K}, {bench.dtype}, device {bench.device}; the ordering and "
        "patterns always run on the CPU (one thread per process in these runs). Log-log slope of CPU seconds "
        f"(CUDA: wall seconds for kNN) against n over n = {', '.join(map(str, sizes))}: {slopes} (1 = linear, 2 = quadratic). "
        "The brute-force maximin loop is O(n^2) by construction; kNN queries are min(n, 10^4) points, so the "
        "cdist baseline grows like n beyond 10^4 queries, not n^2. mean_S / mean_A: average |S_j| / |A_j|. "
        "CPU timings on a shared machine are noisy: read the ratios."
    )


def ordering_only(bench, n: int) -> None:
    """The ordering and the sparsity pattern alone at large ``n`` (one run each; no baselines)."""
    X = torch.rand(n, D, generator=torch.Generator().manual_seed(0), dtype=bench.dtype)
    m, cpu = measure(bench, lambda: maximin_order(X), repeats=1, warmup=0)
    order, dist = m.value
    bench.add(f"order n={n}", "gpkit", seconds=m.seconds, cpu_seconds=cpu, peak_memory_mb=m.peak_memory_mb)
    m, cpu_s = measure(bench, lambda: sparsity_pattern(X[order], dist, RHO), repeats=1, warmup=0)
    bench.add(
        f"order+S n={n}",
        "gpkit",
        seconds=None,
        cpu_seconds=cpu + cpu_s,
        pattern_cpu_seconds=cpu_s,
        mean_S=float(m.value.sizes.double().mean()),
        max_S=m.value.max_size,
        peak_memory_mb=m.peak_memory_mb,
    )
    bench.note(
        f"n = {n}: ordering and pattern only (one run each, CPU seconds; no baselines, not in the slopes above): "
        f"order {cpu:.1f} s, pattern {cpu_s:.1f} s."
    )


def one_size(bench, n: int, growth: dict) -> None:
    """All cases for ``n`` points; appends gpkit timings to ``growth``."""
    from gpytorch.utils.nearest_neighbors import NNUtil

    dev, dtype = bench.device, bench.dtype
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(n, D, generator=gen, dtype=dtype).to(dev)
    Q = torch.rand(min(n, 10_000), D, generator=gen, dtype=dtype).to(dev)
    big = n >= 100_000
    reps = {"repeats": 1, "warmup": 0} if big else {}

    # ordering alone, against the O(n^2) loop
    m, cpu = measure(bench, lambda: maximin_order(X), **reps)
    order, dist = m.value
    bench.add(f"order n={n}", "gpkit", seconds=m.seconds, cpu_seconds=cpu, peak_memory_mb=m.peak_memory_mb)
    growth["gpkit order"].append(cpu)
    if n <= 10_000:
        Xn = X.cpu().double().numpy()
        mb, cpu = measure(bench, lambda: brute_maximin(Xn), repeats=1, warmup=0)
        assert np.array_equal(mb.value, order.cpu().numpy()), "orderings differ"
        bench.add(f"order n={n}", "brute-force O(n^2)", seconds=mb.seconds, cpu_seconds=cpu)

    # ordering + sparsity pattern (the DKLGP set-up), and ancestor sets
    def order_and_pattern():
        o, ell = maximin_order(X)
        return sparsity_pattern(X[o], ell, RHO)

    m, cpu = measure(bench, order_and_pattern, **reps)
    S = m.value
    ma, cpu_a = measure(bench, lambda: ancestor_sets(X[order], dist, RHO), repeats=1, warmup=0)
    A = ma.value
    bench.add(
        f"order+S n={n}",
        "gpkit",
        seconds=m.seconds,
        cpu_seconds=cpu,
        mean_S=float(S.sizes.double().mean()),
        max_S=S.max_size,
        ancestor_seconds=ma.seconds,
        ancestor_cpu_seconds=cpu_a,
        mean_A=float(A.sizes.double().mean()),
        max_A=A.max_size,
        peak_memory_mb=m.peak_memory_mb,
    )
    growth["gpkit order+S"].append(cpu)
    del A

    # kNN of query points
    m, cpu = measure(bench, lambda: knn(Q, X, K), **reps)
    ours = m.value[1]
    bench.add(f"kNN k={K} n={n}", "gpkit", seconds=m.seconds, cpu_seconds=cpu, queries=len(Q))
    growth["gpkit kNN"].append(m.seconds if dev.type == "cuda" else cpu)
    mb, cpu = measure(bench, lambda: brute_knn(Q, X, K), **reps)
    agree = float((mb.value.sort(-1).values == ours.sort(-1).values).double().mean())
    bench.add(f"kNN k={K} n={n}", "cdist+topk", seconds=mb.seconds, cpu_seconds=cpu, index_agreement=agree)
    growth["cdist+topk kNN"].append(mb.seconds if dev.type == "cuda" else cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportWarning)
        util = NNUtil(K, D, preferred_nnlib="sklearn", device=X.device)

    def gpytorch_knn():
        util.set_nn_idx(X)
        return util.find_nn_idx(Q)

    m, cpu = measure(bench, gpytorch_knn, **reps)
    bench.add(f"kNN k={K} n={n}", "gpytorch NNUtil", seconds=m.seconds, cpu_seconds=cpu)

    # VNNGP neighbours among earlier points
    Xo = X[order]
    m, cpu = measure(bench, lambda: previous_knn(Xo, K), **reps)
    bench.add(f"previous kNN k={K} n={n}", "gpkit", seconds=m.seconds, cpu_seconds=cpu)
    if n <= (1_000 if bench.quick else 10_000):
        mb, cpu = measure(bench, lambda: util.build_sequential_nn_idx(Xo), repeats=1, warmup=0)
        same = float(
            (mb.value.sort(-1).values.to(m.value[0].device) == m.value[0][K:].sort(-1).values).double().mean()
        )
        bench.add(
            f"previous kNN k={K} n={n}",
            "gpytorch NNUtil",
            seconds=mb.seconds,
            cpu_seconds=cpu,
            index_agreement=same,
        )
