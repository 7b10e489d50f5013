"""``gpkit demo`` entry for ETGP: one GP and C flows vs GPyTorch's C-GP SVGP on scikit-learn's digits."""

from __future__ import annotations

import time
from pathlib import Path

import torch

__all__ = ["demo"]


def demo(out_dir: Path, quick: bool = False) -> list[dict]:
    """ETGP vs the C-GP SVGP baseline (``IndependentMultitaskVariationalStrategy`` + ``SoftmaxLikelihood``),
    both with M = 50 inducing points, on the 10-class digits (1617 train / 180 test, 8 x 8 images).

    :param out_dir: folder for ``etgp.png`` (the learned flows at two test inputs).
    :param quick: fewer epochs.
    :return: rows for test accuracy, test NLL and training seconds, each with the baseline's, and ETGP's
        accuracy with the GP ablated (the flow network alone; how much the GP contributes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gpkit
    from gpkit.baselines import MulticlassSVGPBaseline
    from gpkit.datasets import load
    from gpkit.models import ETGP
    from gpkit.variational.inducing_points import init_inducing_points

    epochs, M = (12, 50) if quick else (60, 50)
    ds = load("digits")
    Xtr, ytr, Xte, yte = ds.train_X, ds.train_y, ds.test_X, ds.test_y
    C = ds.extras["num_classes"]

    def metrics(probs):
        return ((probs.argmax(-1) == yte).double().mean().item(),
                -probs.gather(-1, yte[:, None]).clamp_min(1e-300).log().mean().item())

    torch.manual_seed(0)
    start = time.perf_counter()
    model = ETGP(Xtr, ytr, C, num_inducing=M, warmup_epochs=epochs // 4)
    gpkit.fit(model, epochs=epochs, seed=0)
    etgp_seconds = time.perf_counter() - start
    acc, nll = metrics(model.predict_proba(Xte))
    ablated_acc, _ = metrics(model.predict_proba(Xte, ablate="gp"))  # the flow network alone

    Xs, Xts = model.standardize(Xtr), model.standardize(Xte)
    start = time.perf_counter()
    svgp = MulticlassSVGPBaseline(init_inducing_points(Xs, M, "kmeans"), C)
    gpkit.fit(svgp, train_X=Xs, train_Y=ytr, likelihood=svgp.likelihood, epochs=epochs, seed=0)
    svgp_seconds = time.perf_counter() - start
    base_acc, base_nll = metrics(svgp.predict_proba(Xts))

    # the C flows G_c(f0) at two test inputs: input-dependent, hence non-stationary
    f0 = torch.linspace(-3, 3, 200, dtype=Xtr.dtype)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True, sharey=True)
    model.eval()
    with torch.no_grad():
        for ax, i in zip(axes, (0, 1)):
            raw = model.likelihood.flow_parameters(Xts[i : i + 1])  # 1 x C x P
            logits = model.likelihood.logits(f0.unsqueeze(-1), raw)  # 200 x 1 x C
            for c in range(C):
                ax.plot(f0, logits[:, 0, c], label=str(c))
            ax.set_title(f"flows at test digit {i} (label {int(yte[i])})")
            ax.set_xlabel("f0")
    axes[0].set_ylabel("class logit G_c(f0)")
    axes[1].legend(ncol=2, fontsize=7)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "etgp.png", dpi=110)
    plt.close(fig)
    data = f"sklearn digits (10 classes), n={Xtr.size(0)}"
    base = f"SVGP, {C} GPs"
    name = f"ETGP (M={M}, 1 GP)"
    return [
        {"method": name, "data": data, "metric": "test accuracy", "value": acc, "baseline": base,
         "baseline_value": base_acc, "seconds": etgp_seconds},
        {"method": name, "data": data, "metric": "test NLL", "value": nll, "baseline": base,
         "baseline_value": base_nll, "seconds": etgp_seconds},
        {"method": name, "data": data, "metric": "test accuracy, q(f0) ablated to 0", "value": ablated_acc,
         "seconds": etgp_seconds},
        {"method": name, "data": data, "metric": "training seconds", "value": etgp_seconds, "baseline": base,
         "baseline_value": svgp_seconds, "seconds": etgp_seconds},
    ]
