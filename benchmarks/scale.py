"""Data-parallel scaling of ``gpkit.fit``: seconds per epoch with 1 and 2 processes (gloo, one thread each).

Each configuration is run as separate rank processes (``python benchmarks/scale.py --rank R --world W ...``,
a file-store process group, as ``torchrun`` would start them; ``W = 1`` runs without a process group).
Every rank loads the training split (elevators, 8000 random training rows in the full run, 3000 in quick, standardised on the training split), builds the
same model and trains ``epochs`` epochs with ``gpkit.fit`` at the model's default learning rate and batch
size (under a process group ``batch_size`` is the global batch, so both runs take the same steps per epoch
on the same data). Reported per run: median seconds per epoch over the epochs after the first (from
``fit``'s callback), speed-up = t(1) / t(W), efficiency = speed-up / W, test RMSE and full Gaussian NLL
(incl. 0.5 log 2π, original target scale) after training, and each rank's peak RSS (every rank holds the
full data and model). 1- and 2-process runs are interleaved, ``repeats`` times, to spread machine load.

Honest caveat: the benchmark machine has 2 cores shared with other jobs, so two single-threaded ranks do
not get two free cores; timings are noisy and the ratio from one interleaved run is the figure to read.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("SWSGP", "DKLGP")


def _config(bench) -> dict:
    if bench.quick:
        return {"max_train": 3000, "epochs": 3, "repeats": 1, "worlds": (1, 2)}
    return {"max_train": 8000, "epochs": 3, "repeats": 2, "worlds": (1, 2)}


# ----------------------------------------------------------------------------------- one rank
def _worker(args: dict) -> None:
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist

    import gpkit
    from gpkit.datasets import load, standardize
    from gpkit.models import DKLGP, SWSGP

    rank, world = args["rank"], args["world"]
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{args['store']}", rank=rank, world_size=world)
    ds = load("elevators", split=0, dtype=torch.float64)
    Xtr, ytr, Xte, yte, (_, y_std) = standardize(ds.train_X, ds.train_y, ds.test_X, ds.test_y)
    y_std = float(y_std)
    if args["max_train"] is not None and Xtr.size(0) > args["max_train"]:
        keep = torch.randperm(Xtr.size(0), generator=torch.Generator().manual_seed(0))[: args["max_train"]]
        Xtr, ytr = Xtr[keep], ytr[keep]
    torch.manual_seed(0)
    if args["model"] == "SWSGP":
        model = SWSGP(Xtr, ytr.unsqueeze(-1), num_inducing=1024, num_neighbors=32, seed=0)
    else:
        model = DKLGP(Xtr, ytr.unsqueeze(-1))
    ends = []

    def callback(state) -> None:
        ends.append(state.elapsed)

    start = time.perf_counter()
    gpkit.fit(model, epochs=args["epochs"], seed=0, progress=False, callback=callback)
    wall = time.perf_counter() - start
    per_epoch = [b - a for a, b in zip([0.0] + ends[:-1], ends)]
    out = {"rank": rank, "world": world, "seconds_per_epoch": statistics.median(per_epoch[1:] or per_epoch),
           "epoch_seconds": per_epoch, "fit_seconds": wall, "n_train": Xtr.size(0),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if rank == 0:
        with torch.no_grad():  # pointwise predictive marginals (q = 1 batches), on the original target scale
            post = model.posterior(Xte.unsqueeze(-2), observation_noise=True)
        mean, var = post.mean.reshape(-1) * y_std, post.variance.reshape(-1) * y_std**2
        y = yte.reshape(-1) * y_std
        out["rmse"] = float((mean - y).pow(2).mean().sqrt())
        out["nll"] = float((0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mean) ** 2 / var).mean())
    if world > 1:
        dist.destroy_process_group()
    Path(args["out"]).write_text(json.dumps(out))


def _launch(model: str, world: int, cfg: dict, folder: Path, tag: str) -> list[dict]:
    """Start ``world`` rank processes (one torch thread each) and collect their results."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    store = folder / f"store-{tag}"
    procs, outs = [], []
    for rank in range(world):
        out = folder / f"{tag}-rank{rank}.json"
        args = {"rank": rank, "world": world, "store": str(store), "model": model, "out": str(out),
                "epochs": cfg["epochs"], "max_train": cfg["max_train"]}
        procs.append(subprocess.Popen([sys.executable, __file__, json.dumps(args)], env=env))
        outs.append(out)
    deadline = time.monotonic() + 900
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError(f"{model} with {world} process(es) did not finish in time") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{model} with {world} process(es): a rank exited with {proc.returncode}")
    return [json.loads(o.read_text()) for o in outs]


def main(bench) -> None:
    cfg = _config(bench)
    if bench.device.type != "cpu":
        bench.note("This benchmark measures CPU gloo processes only; the device option is ignored.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for model in MODELS:
            runs: dict[int, list[list[dict]]] = {w: [] for w in cfg["worlds"]}
            for repeat in range(cfg["repeats"]):
                for world in cfg["worlds"]:
                    print(f"[scale bench] {model}, {world} process(es), repeat {repeat + 1}", file=sys.stderr, flush=True)
                    runs[world].append(_launch(model, world, cfg, folder, f"{model}-{world}-{repeat}"))
            base = statistics.median(r[0]["seconds_per_epoch"] for r in runs[1])
            for world, results in runs.items():
                times = [max(rank["seconds_per_epoch"] for rank in r) for r in results]
                t = statistics.median(times)
                speedup = base / t
                bench.add(
                    f"elevators n={results[0][0]['n_train']}", f"{model} x{world}",
                    processes=world, seconds_per_epoch=t, seconds_per_epoch_all=times,
                    time_ratio=t / base, speedup=speedup, efficiency=speedup / world,
                    rmse=statistics.median(r[0]["rmse"] for r in results),
                    nll=statistics.median(r[0]["nll"] for r in results),
                    peak_rss_mb_per_rank=max(rank["peak_rss_mb"] for r in results for rank in r),
                    epochs=cfg["epochs"],
                )
            bench.compare(f"{model} x2", [f"{model} x1"], ["seconds_per_epoch", "rmse"], differences=["nll"])
    bench.note(
        "Processes: gloo on one machine, one torch thread each; 'x1' is one process without a process group. "
        "seconds_per_epoch: median over epochs 2.. (the slowest rank), then the median over repeats; "
        "time_ratio = t(x2) / t(x1) (target <= 0.65), efficiency = speed-up / processes."
    )
    bench.note(
        "The machine has 2 cores shared with other jobs while this ran (load well above 2), so two ranks do "
        "not get two free cores; treat the ratios as a lower bound on what an idle 2-core machine gives."
    )
    bench.note(
        "Memory: every rank holds the full data and model, so the data cost is processes x one process's "
        "(peak_rss_mb_per_rank is each rank's whole-process peak RSS, torch included)."
    )


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
