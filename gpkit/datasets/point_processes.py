"""Event data from ``point_processes/`` (temporal, spatial and space-time patterns with windows)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._io import data_file, read_json, read_table
from .dataset import Dataset

#: name -> (spatial columns, time column or None, default space-time?, expected rows)
PP_SETS: dict[str, tuple[tuple[str, ...], str | None, bool, int]] = {
    "coal": ((), "time", True, 191),
    "aircraft": ((), "time", True, 1210),
    "redwood": (("x", "y"), None, False, 62),
    "japanesepines": (("x", "y"), None, False, 65),
    "bei": (("x", "y"), None, False, 3604),
    "longleaf": (("x", "y"), None, False, 584),
    "gorillas": (("x", "y"), "time", False, 647),
    "clmfires": (("x", "y"), "time", True, 8488),
    "nbfires": (("x", "y"), "dis_time", True, 7108),
    "japan_earthquakes": (("longitude", "latitude"), "time", True, 37581),
}


def pp_files(name: str) -> list[str]:
    files = [f"point_processes/{name}.csv.gz"]
    if PP_SETS[name][0]:
        files.append(f"point_processes/{name}_window.json")
    if name == "bei":
        files += ["point_processes/bei_extra_elev.csv.gz", "point_processes/bei_extra_grad.csv.gz"]
    return files


def _decimal_year(stamps: np.ndarray) -> np.ndarray:
    # "YYYY-MM-DD hh:mm:ss.fff" (UTC) -> year + elapsed share of that year
    t = np.asarray(stamps).astype("datetime64[ms]")
    year = t.astype("datetime64[Y]")
    start, end = year.astype("datetime64[ms]"), (year + 1).astype("datetime64[ms]")
    frac = (t - start).astype(np.float64) / (end - start).astype(np.float64)
    return year.astype(np.int64) + 1970 + frac


def _grid(name: str, dtype: torch.dtype) -> dict[str, Tensor]:
    table = read_table(data_file(f"point_processes/bei_extra_{name}.csv.gz"))
    cols = [c for c in table if c != "y"]
    values = np.stack([table[c] for c in cols], axis=1)  # shape: (101 y, 201 x)
    return {
        "x": torch.tensor([float(c) for c in cols], dtype=dtype),
        "y": torch.tensor(table["y"], dtype=dtype),
        "values": torch.tensor(values, dtype=dtype),
    }


def load_point_process(
    name: str, split: int = 0, dtype: torch.dtype = torch.float64, spacetime: bool | None = None
) -> Dataset:
    """Load an event pattern.

    ``X`` holds the events ``n x d``: time (decimal year) for ``coal``/``aircraft``; ``(x, y)`` for the
    spatial patterns (coordinates as spatstat stores them: ``redwood`` has y in [-1, 0]); ``(x, y, t)``
    for the space-time sets (``clmfires``, ``nbfires`` (fires without a discovery time dropped),
    ``japan_earthquakes`` as (longitude, latitude, t)). ``extras["bounds"]`` is the ``2 x d`` box
    (window bounding box; time rounded out to whole years), ``extras["polygons"]`` the polygonal
    window (list of ``k x 2``; test with :func:`gpkit.cox.window_contains`), ``extras["area"]`` the spatial
    window area, ``extras["marks"]`` the other columns (numeric as tensors, text as numpy arrays) and
    ``extras["covariates"]`` the ``bei`` elevation/gradient grids (``x`` 201, ``y`` 101, ``values``
    101 x 201, pixel centres). There are no splits; ``y`` is ``None``.

    :param spacetime: add the time column (default: True for fires and earthquakes, False for gorillas).
    """
    space, tcol, default_st, _ = PP_SETS[name]
    if spacetime is None:
        spacetime = default_st
    if spacetime and tcol is None:
        raise ValueError(f"spacetime: {name!r} has no time column")
    table = dict(read_table(data_file(f"point_processes/{name}.csv.gz")))
    if name == "japan_earthquakes":
        table["time_utc"], table["time"] = table["time"], _decimal_year(table["time"])
    cols = list(space) + ([tcol] if (spacetime or not space) else [])
    events = np.stack([table[c] for c in cols], axis=1)
    keep = ~np.isnan(events).any(1)
    events = events[keep]
    lower, upper, extras = [], [], {}
    if space:
        win = read_json(data_file(f"point_processes/{name}_window.json"))
        extras["window"] = win
        if name == "japan_earthquakes":
            xr, yr = win["lon_range"], win["lat_range"]
        else:
            xr, yr = win["xrange"], win["yrange"]
        lower, upper = [xr[0], yr[0]], [xr[1], yr[1]]
        polys = win.get("polygons") or []
        extras["polygons"] = [torch.tensor(np.stack([p["x"], p["y"]], 1), dtype=dtype) for p in polys]
        extras["area"] = (
            float(sum(p["signed_area"] for p in polys)) if polys else ((xr[1] - xr[0]) * (yr[1] - yr[0]))
        )
    if len(cols) > len(space):
        t = events[:, -1]
        lower.append(float(np.floor(t.min())))
        upper.append(float(np.floor(t.max())) + 1.0)
    extras["bounds"] = torch.tensor([lower, upper], dtype=dtype)
    extras["columns"] = cols
    marks = {}
    for c, v in table.items():
        if c in cols:
            continue
        v = v[keep]
        marks[c] = torch.tensor(v, dtype=dtype) if v.dtype.kind == "f" else v
    extras["marks"] = marks
    if name == "bei":
        extras["covariates"] = {"elev": _grid("elev", dtype), "grad": _grid("grad", dtype)}
    dropped = int((~keep).sum())
    desc = (
        f"Point pattern {name!r}: {len(events)} events with columns {cols}"
        + (f" ({dropped} rows without a value dropped)" if dropped else "")
        + "; window in extras['bounds'] (2 x d) and extras['polygons']."
    )
    return Dataset(name, torch.tensor(events, dtype=dtype), None, {}, extras, desc)
