"""``gpkit demo`` entry for the Gaussian Cox process: intensity recovery and window-revealing BO on a simulated
point pattern (no data folder needed)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

__all__ = ["demo"]


def demo(out_dir: Path, quick: bool = False) -> list[dict]:
    """GaussianCoxProcess (quadratic link, defaults) vs the GPyTorch LGCP (SVGP on binned counts) on the
    ``sine1d`` Poisson process, and the window search (expected arrivals) vs random search for its peak.

    :param out_dir: folder for ``cox.png``.
    :param quick: a coarser grid and fewer BO seeds.
    :return: rows for the integrated squared error and the windows needed to find the peak.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import gpkit
    from gpkit.baselines import LGCPBaseline
    from gpkit.cox import GaussianCoxProcess, reveal_windows, synthetic_point_process

    grid, marks, seeds = (100, 50, 2) if quick else (200, 128, 5)
    ds = synthetic_point_process("sine1d", seed=0)
    bounds, truth_fn = ds.extras["bounds"], ds.extras["intensity"]
    t = torch.linspace(0, 100, 400, dtype=torch.float64).unsqueeze(-1)
    truth = truth_fn(t)

    start = time.perf_counter()
    model = gpkit.fit(GaussianCoxProcess(ds.X, bounds, grid_size=grid, num_landmarks=marks), progress=False)
    gcp_seconds = time.perf_counter() - start
    mean, lower, upper = model.intensity(t)
    start = time.perf_counter()
    lgcp = LGCPBaseline(GaussianCoxProcess(ds.X, bounds, grid_size=grid, num_landmarks=marks, link="exp"), marks)
    lgcp.fit(epochs=400 if quick else 3000)
    lgcp_seconds = time.perf_counter() - start
    base_mean = lgcp.intensity(t)[0]
    ise = float(((mean - truth) ** 2).mean() * 100)
    base_ise = float(((base_mean - truth) ** 2).mean() * 100)
    coverage = float(((truth >= lower) & (truth <= upper)).double().mean())

    # BO: windows of half-width 2 until one holds the peak, expected arrivals vs random search (same start)
    cands = torch.arange(0.0, 100.5, 1.0, dtype=torch.float64).unsqueeze(-1)
    peak = float(cands[truth_fn(cands).argmax(), 0])
    arrival_steps, random_steps, last = [], [], None
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        begin = float(cands[rng.integers(len(cands)), 0])
        res = reveal_windows(
            ds.X, bounds, 2.0, 30, acquisition="arrivals", start=torch.tensor([[begin]]), candidates=cands,
            model_options={"grid_size": 100, "num_landmarks": 50}, fit_options={"max_iter": 20},
            stop=lambda c: abs(float(c[0]) - peak) <= 2.0,
        )
        arrival_steps.append(len(res.centres))
        last = res
        # random search over the unvisited centres, with the same +-2r exclusion as the loop
        visited, remaining = [begin], [float(c) for c in cands[:, 0] if abs(float(c) - begin) > 4.0]
        while remaining and abs(visited[-1] - peak) > 2.0:
            visited.append(remaining[rng.integers(len(remaining))])
            remaining = [c for c in remaining if abs(c - visited[-1]) > 4.0]
        random_steps.append(len(visited))

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    ax = axes[0]
    ax.plot(t[:, 0], truth, "k--", label="true intensity")
    ax.plot(t[:, 0], mean, "C0", label=f"gpkit GCP (ISE {ise:.1f})")
    ax.fill_between(t[:, 0], lower, upper, color="C0", alpha=0.25, label="95% band")
    ax.plot(t[:, 0], base_mean, "C1", label=f"GPyTorch LGCP (ISE {base_ise:.1f})")
    ax.plot(ds.X[:, 0], torch.zeros(len(ds.X)), "|", color="0.4", markersize=8, label="events")
    ax.set(xlabel="time", ylabel="events per unit time", title=f"sine1d Poisson process, n = {len(ds.X)}")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    ax = axes[1]
    seen_mean = last.model.intensity(t)[0]
    ax.plot(t[:, 0], truth, "k--", label="true intensity")
    ax.plot(t[:, 0], seen_mean, "C0", label="fit on revealed windows")
    for i, c in enumerate(last.centres[:, 0].tolist()):
        ax.axvspan(c - 2, c + 2, color="C2", alpha=0.3, label="revealed windows" if i == 0 else None)
        ax.annotate(str(i + 1), (c, 0), ha="center", fontsize=7)
    ax.set(xlabel="time", ylabel="events per unit time", title=f"window search (expected arrivals): peak found in {arrival_steps[-1]} windows")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "cox.png", dpi=110)
    plt.close(fig)
    data = f"sine1d Poisson process, n={len(ds.X)}"
    return [
        {"method": "GaussianCoxProcess", "data": data, "metric": "intensity ISE", "value": ise,
         "baseline": "LGCP SVGP", "baseline_value": base_ise, "seconds": gcp_seconds, "baseline_seconds": lgcp_seconds},
        {"method": "GaussianCoxProcess", "data": data, "metric": "95% band coverage", "value": coverage,
         "seconds": gcp_seconds},
        {"method": "Cox window search", "data": f"{data}, {seeds} starts", "metric": "windows to peak",
         "value": float(np.mean(arrival_steps)), "baseline": "random search", "baseline_value": float(np.mean(random_steps))},
    ]
