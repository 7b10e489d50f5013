"""Locating the shared data folder and parsing its files (with an in-memory cache).

The folder is ``$GPKIT_DATA`` when that variable is set; otherwise ``../shared/data`` next to a source
checkout (``<checkout>/../shared/data``) or next to the current working directory.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from .catalog import candidate_dirs

ENV_VAR = "GPKIT_DATA"


def data_dir() -> Path:
    """The shared data folder.

    :return: the first existing folder of :func:`candidate_dirs`.
    :raises FileNotFoundError: if none exists; the message names the folders searched.
    """
    dirs = candidate_dirs()
    for d in dirs:
        if d.is_dir():
            return d
    searched = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"gpkit data folder not found (searched: {searched}). Set the environment variable "
        f"{ENV_VAR} to the folder that holds uci/, classification/, point_processes/, manifolds/ "
        "and sequential/ (the shared data folder)."
    )


def data_file(relative: str) -> Path:
    """Path of one file in the shared data folder.

    :param relative: path inside the data folder, e.g. ``"uci/elevators/data.csv.gz"``.
    :raises FileNotFoundError: if the folder or the file is missing.
    """
    root = data_dir()
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(
            f"gpkit data file {relative!r} not found in the data folder {root}. Point {ENV_VAR} at a "
            "complete copy of the shared data folder."
        )
    return path


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _key(path: Path) -> tuple[str, float]:
    # the modification time invalidates the cache if a file changes on disk
    return str(path), path.stat().st_mtime


def read_numeric(path: Path, skip_header: bool = False, dtype=np.float64) -> np.ndarray:
    """A headerless (or one-header-row) numeric CSV as a 2-D array (cached, read-only).

    :param path: ``.csv``/``.txt`` file, optionally gzip'd; comma-separated.
    :param skip_header: skip the first line.
    """
    return _read_numeric(*_key(path), skip_header, np.dtype(dtype).str)


@lru_cache(maxsize=64)
def _read_numeric(path: str, mtime: float, skip_header: bool, dtype: str) -> np.ndarray:
    with _open_text(Path(path)) as fh:
        arr = np.loadtxt(fh, delimiter=",", skiprows=int(skip_header), dtype=dtype, ndmin=2)
    arr.setflags(write=False)
    return arr


def read_table(path: Path) -> dict[str, np.ndarray]:
    """A CSV with one header row as ``{column: array}`` (cached, read-only).

    Columns that parse as numbers become float64 arrays (empty fields become NaN); the others stay
    arrays of ``str``.
    """
    return _read_table(*_key(path))


@lru_cache(maxsize=64)
def _read_table(path: str, mtime: float) -> dict[str, np.ndarray]:
    with _open_text(Path(path)) as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        col = [r[j] for r in body]
        try:
            arr = np.array([float(v) if v != "" else np.nan for v in col], dtype=np.float64)
        except ValueError:
            arr = np.array(col, dtype=str)
        arr.setflags(write=False)
        out[name] = arr
    return out


@lru_cache(maxsize=32)
def _read_json(path: str, mtime: float) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_json(path: Path) -> dict:
    """A JSON file (cached; do not modify the returned dict)."""
    return _read_json(*_key(path))


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A Wavefront OBJ triangle mesh (optionally gzip'd).

    :return: vertices ``N x 3`` float64 and 0-based triangles ``F x 3`` int64 (read-only).
    """
    return _read_obj(*_key(path))


@lru_cache(maxsize=16)
def _read_obj(path: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    verts, faces = [], []
    with _open_text(Path(path)) as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append(line[2:])
            elif line.startswith("f "):
                # "f i j k" or "f i/t/n ...": keep the vertex index, 1-based
                idx = [tok.split("/")[0] for tok in line[2:].split()]
                if len(idx) != 3:
                    raise ValueError(f"{path}: only triangle meshes are supported, got {line!r}")
                faces.append(" ".join(idx))
    v = np.loadtxt(verts, dtype=np.float64, ndmin=2)[:, :3]
    f = np.loadtxt(faces, dtype=np.int64, ndmin=2) - 1
    v.setflags(write=False)
    f.setflags(write=False)
    return v, f
