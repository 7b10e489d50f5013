"""Streaming data from ``sequential/``: the streaming banana split and magnetometer walks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._io import data_file, read_numeric
from .dataset import Dataset, as_long

MAGNETIC_TRIALS = {1: 8875, 2: 9105, 3: 9404, 4: 7332, 5: 8313, 6: 7119, 7: 8394, 8: 8928, 9: 8557}


def sequential_files(name: str) -> list[str]:
    if name == "streaming-banana":
        return [f"sequential/banana/banana_{s}_{v}.txt" for s in ("train", "test") for v in ("x", "y")]
    return [
        f"sequential/magnetic/invensense/{k}-{p}.csv" for k in MAGNETIC_TRIALS for p in ("time", "loc", "mag")
    ]


def load_streaming_banana(split: int = 0, dtype: torch.dtype = torch.float64) -> Dataset:
    """The streaming-banana classification data (Bui et al. 2017): fixed 400 train / 4900 test split.

    ``X`` ``5300 x 2`` (train rows first, in file order), ``y`` long labels (file ``-1`` -> 0, ``1`` -> 1).
    Stream the training rows in order (e.g. 4 batches of 100).
    """
    parts = {}
    for s in ("train", "test"):
        x = read_numeric(data_file(f"sequential/banana/banana_{s}_x.txt"))
        y = read_numeric(data_file(f"sequential/banana/banana_{s}_y.txt"))[:, 0]
        parts[s] = (x, (y > 0).astype(np.int64))
    n_tr = len(parts["train"][1])
    X = np.concatenate([parts["train"][0], parts["test"][0]])
    y = np.concatenate([parts["train"][1], parts["test"][1]])
    splits = {"train": as_long(np.arange(n_tr)), "test": as_long(np.arange(n_tr, len(y)))}
    desc = "Streaming banana (AaltoML/sequential-gp, from Bui et al. 2017): 400 train, 4900 test, labels 0/1."
    return Dataset(
        "streaming-banana", torch.tensor(X, dtype=dtype), torch.tensor(y), splits, {"num_classes": 2}, desc
    )


def load_magnetic(
    split: int = 0,
    dtype: torch.dtype = torch.float64,
    trials: Sequence[int] = (1, 2, 3, 4, 5),
    target: str = "norm",
) -> Dataset:
    """Indoor magnetic-field walks (Solin et al. 2018; Invensense IMU on a robot, 50 Hz).

    The selected trials are concatenated in time order. ``X`` is the location ``n x 2`` (m), ``y`` the
    field norm ``n`` (``target="norm"``) or the 3-axis reading ``n x 3`` (``target="vector"``).
    Split ``train`` is trial ``trials[split]`` (a walk to stream in order), ``test`` the other
    selected trials. Only trials 1-5 are stationary (the default). ``extras``: ``time`` (s since
    the trial start), ``trial`` (n, long), ``mag`` (``n x 3``).

    :param trials: trial numbers in 1..9.
    :param target: ``"norm"`` or ``"vector"``.
    """
    trials = tuple(int(k) for k in trials)
    if not trials or any(k not in MAGNETIC_TRIALS for k in trials):
        raise ValueError(f"trials must be a non-empty subset of 1..9, got {trials}")
    if not 0 <= split < len(trials):
        raise ValueError(f"split must index trials (0..{len(trials) - 1}), got {split}")
    if target not in ("norm", "vector"):
        raise ValueError(f"target must be 'norm' or 'vector', got {target!r}")
    loc, mag, time, trial = [], [], [], []
    for k in trials:
        base = f"sequential/magnetic/invensense/{k}-"
        loc.append(read_numeric(data_file(base + "loc.csv")))
        mag.append(read_numeric(data_file(base + "mag.csv")))
        time.append(read_numeric(data_file(base + "time.csv"))[:, 0])
        trial.append(np.full(len(time[-1]), k))
    loc, mag, time, trial = map(np.concatenate, (loc, mag, time, trial))
    y = np.linalg.norm(mag, axis=1) if target == "norm" else mag
    train = trial == trials[split]
    splits = {"train": as_long(np.flatnonzero(train)), "test": as_long(np.flatnonzero(~train))}
    extras = {
        "time": torch.tensor(time, dtype=dtype),
        "trial": torch.tensor(trial),
        "split": split,
        "mag": torch.tensor(mag, dtype=dtype),
        "trials": trials,
    }
    desc = (
        f"Magnetometer walks (AaltoML/magnetic-data, invensense) trials {list(trials)}; "
        f"train = trial {trials[split]}, test = the others; y = field {target}."
    )
    return Dataset(
        "magnetic", torch.tensor(loc, dtype=dtype), torch.tensor(y, dtype=dtype), splits, extras, desc
    )
