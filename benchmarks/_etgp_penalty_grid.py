"""Choose ETGP's default ``offset_penalty`` on a validation split (not the test set).

Letter and MNIST, split 0, the benchmark's settings (training set subsampled to 1500 points with the same
seed as ``benchmarks/etgp.py``, ETGP with ``gpkit.fit`` defaults); the validation set is 2000 further
training points, disjoint from the 1500. For each ``offset_penalty`` in the grid: validation accuracy, mean NLL
and the accuracy with the GP ablated (``predict_proba(X, ablate="gp")``).

``PYTHONPATH=. python benchmarks/_etgp_penalty_grid.py [0,0.01,0.03,0.1]`` -> prints JSON lines.
"""

import json
import sys
import time

import torch

import gpkit
from gpkit.datasets import load
from gpkit.models import ETGP

grid = [float(v) for v in (sys.argv[1] if len(sys.argv) > 1 else "0,0.01,0.03,0.1").split(",")]
sets = sys.argv[2].split(",") if len(sys.argv) > 2 else ["letter", "mnist"]
for name in sets:
    ds = load(name, split=0)
    perm = torch.randperm(ds.train_X.size(0), generator=torch.Generator().manual_seed(0))
    keep, val = perm[:1500], perm[1500:3500]  # keep = the benchmark's subsample (same generator and seed)
    Xtr, ytr, Xva, yva = ds.train_X[keep], ds.train_y[keep], ds.train_X[val], ds.train_y[val]
    C = int(ds.extras["num_classes"])
    for gamma in grid:
        torch.manual_seed(0)
        model = ETGP(Xtr, ytr, C, num_inducing=100, seed=0, offset_penalty=gamma)
        start = time.perf_counter()
        gpkit.fit(model, progress=False, seed=0)
        seconds = time.perf_counter() - start
        probs = model.predict_proba(Xva)
        p = probs.gather(-1, yva[:, None]).squeeze(-1).clamp_min(1e-300)
        abl = (model.predict_proba(Xva, ablate="gp").argmax(-1) == yva).double().mean().item()
        acc = (probs.argmax(-1) == yva).double().mean().item()
        print(json.dumps({"set": name, "offset_penalty": gamma, "val_accuracy": round(acc, 4),
                          "val_nll": round(-p.log().mean().item(), 4), "val_accuracy_gp_ablated": round(abl, 4),
                          "ablation_drop": round(acc - abl, 4), "epochs": len(model.fit_history),
                          "seconds": round(seconds, 1)}), flush=True)
