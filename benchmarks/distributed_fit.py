"""Data-parallel fit of a DKLGP or SWSGP on 10^6 points: a ``torchrun`` script.

On N GPUs of one machine (NCCL)::

    torchrun --standalone --nproc_per_node=N benchmarks/distributed_fit.py --model swsgp

On CPUs (gloo, one thread per process), e.g. a quick check with 2 processes::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 benchmarks/distributed_fit.py --num-data 20000 --epochs 2

Every rank draws the same synthetic data set (a sum of sines in d dimensions plus noise, seeded), builds
the same model and calls plain ``gpkit.fit``: under the process group ``fit`` shards each epoch's batches
over the ranks and averages the gradients (see :mod:`gpkit.distributed`). ``--batch-size`` is the global
batch (all ranks together). Rank 0 prints the training throughput (points per second, epochs after the
first) and the test RMSE against the noise-free function.

Memory: every rank holds the full data and model (DKLGP's and SWSGP's neighbour structures are global):
at n = 10^6, d = 4 in float32 the data are ~20 MB; a DKLGP's variational factor with k neighbours holds
~n (k + 1) values per rank, an SWSGP's M (H + 2) (see each model's docstring).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.distributed as dist

import gpkit
from gpkit.models import DKLGP, SWSGP


def _data(n: int, d: int, seed: int, dtype, device):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    f = torch.sin(2 * math.pi * X).sum(-1) / math.sqrt(d)
    y = f + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X.to(device, dtype), y.unsqueeze(-1).to(device, dtype), f.to(device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("swsgp", "dklgp"), default="swsgp")
    parser.add_argument("--num-data", type=int, default=1_000_000, help="training points (default: %(default)s)")
    parser.add_argument("--d", type=int, default=4, help="input dimension (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch; default: the model's")
    parser.add_argument("--num-inducing", type=int, default=100_000, help="SWSGP's M (default: %(default)s)")
    parser.add_argument("--float64", action="store_true", help="float64 instead of float32")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if "RANK" in os.environ:  # started by torchrun
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dtype = torch.float64 if args.float64 else torch.float32

    X, Y, _ = _data(args.num_data, args.d, seed=0, dtype=dtype, device=device)
    Xt, _, ft = _data(10_000, args.d, seed=1, dtype=dtype, device=device)
    start = time.perf_counter()
    if args.model == "swsgp":
        model = SWSGP(X, Y, num_inducing=min(args.num_inducing, args.num_data), num_neighbors=32, sparse_grad=True, seed=0)
    else:
        model = DKLGP(X, Y, sparse_grad=True)
    model.to(device)
    built = time.perf_counter() - start

    ends = []
    options = {"epochs": args.epochs, "seed": 0, "callback": lambda state: ends.append(state.elapsed)}
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    gpkit.fit(model, **options)
    epoch_seconds = [b - a for a, b in zip([0.0, *ends[:-1]], ends)]
    steady = epoch_seconds[1:] or epoch_seconds
    with torch.no_grad():
        mean = torch.cat([model.posterior(x.unsqueeze(-2)).mean.reshape(-1) for x in Xt.split(2048)])
    rmse = (mean - ft).pow(2).mean().sqrt().item()
    if rank == 0:
        memory = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB/rank" if cuda else ""
        print(
            f"{args.model} n={args.num_data} d={args.d} on {world} {'GPU' if cuda else 'CPU process'}(es): "
            f"build {built:.1f} s, {sum(steady) / len(steady):.2f} s/epoch, "
            f"{args.num_data / (sum(steady) / len(steady)):.3g} points/s, test RMSE {rmse:.4f} (noise std 0.1){memory}"
        )
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
