"""``gpkit demo`` entry for the dual memory GP: learning a function from a stream that moves left to right."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

__all__ = ["demo"]


def _f(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(3 * x) + 0.5 * torch.cos(7 * x)


def demo(out_dir: Path, quick: bool = False) -> list[dict]:
    """A 1-D stream sorted by x (each batch covers a new region): DualMemoryGP (M = 30, memory) vs the same
    model without memory and an offline GPyTorch SVGP trained on all the data.

    :param out_dir: folder for ``dual_memory.png``.
    :param quick: fewer batches.
    :return: rows (test NLL of the noisy targets on the whole range) with the baselines.
    """
    import gpytorch
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gpkit
    from gpkit.baselines import SVGPBaseline
    from gpkit.models import DualMemoryGP

    batches, per_batch, epochs = (5, 60, 10) if quick else (10, 80, 20)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batches * per_batch, 1, generator=g, dtype=torch.float64).sort(0).values * 4
    y = _f(x) + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    xt = torch.linspace(0, 4, 400, dtype=torch.float64).unsqueeze(-1)
    yt = (_f(xt) + 0.1 * torch.randn(xt.shape, generator=g, dtype=torch.float64)).squeeze(-1)

    def nll(mean, var):
        return (0.5 * torch.log(2 * math.pi * var) + 0.5 * (yt - mean).pow(2) / var).mean().item()

    results, curves = {}, {}
    for label, memory in (("dual memory GP", 100), ("no memory", 0)):
        torch.manual_seed(0)
        start = time.perf_counter()
        model = DualMemoryGP(x[:per_batch], y[:per_batch], num_inducing=30, memory_size=memory,
                             memory_per_batch=10 if memory else 0, update_epochs=epochs)
        gpkit.fit(model, epochs=3 * epochs, progress=False)
        for i in range(1, batches):
            model.update(x[i * per_batch : (i + 1) * per_batch], y[i * per_batch : (i + 1) * per_batch], progress=False)
        post = model.posterior(xt, observation_noise=True)
        mean, var = post.mean.squeeze(-1).detach(), post.variance.squeeze(-1).detach()
        results[label] = (nll(mean, var), time.perf_counter() - start)
        curves[label] = (mean, var, model.memory[0].squeeze(-1))

    torch.manual_seed(0)
    svgp = SVGPBaseline(x[torch.randperm(x.size(0), generator=g)[:30]].clone())
    lik = gpytorch.likelihoods.GaussianLikelihood().to(x)
    gpkit.fit(svgp, train_X=x, train_Y=y.squeeze(-1), likelihood=lik, epochs=100 if quick else 200, lr=0.02,
              batch_size=100, progress=False)
    with torch.no_grad():
        pred = lik(svgp(xt))
    results["offline SVGP"] = (nll(pred.mean, pred.variance), None)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True, sharey=True)
    for ax, label in zip(axes, ("dual memory GP", "no memory")):
        mean, var, mem = curves[label]
        ax.plot(x, y, ".", ms=2, color="0.6", label="stream (left to right)")
        ax.plot(xt, mean, "C0", label="posterior mean")
        ax.fill_between(xt.squeeze(-1), mean - 2 * var.sqrt(), mean + 2 * var.sqrt(), color="C0", alpha=0.2)
        if mem.numel():
            ax.plot(mem, torch.full_like(mem, -2.2), "|", color="C3", label="memory")
        ax.set_title(f"{label}: test NLL {results[label][0]:.2f}")
        ax.legend(loc="upper right", fontsize=7)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "dual_memory.png", dpi=110)
    plt.close(fig)
    data = f"1-D stream, {batches} batches of {per_batch} sorted by x"
    return [
        {"method": "DualMemoryGP (M=30, memory 10/batch)", "data": data, "metric": "test NLL",
         "value": results["dual memory GP"][0], "baseline": "no memory", "baseline_value": results["no memory"][0],
         "seconds": results["dual memory GP"][1]},
        {"method": "DualMemoryGP (M=30, memory 10/batch)", "data": data, "metric": "test NLL",
         "value": results["dual memory GP"][0], "baseline": "offline SVGP (M=30, all data)",
         "baseline_value": results["offline SVGP"][0], "seconds": results["dual memory GP"][1]},
    ]
