"""``load(name)`` and ``available()``: one registry of every shared and embedded data set."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

import torch

from . import classification, embedded, manifolds, point_processes, sequential, uci
from ._io import candidate_dirs, data_dir
from .dataset import Dataset, DatasetInfo
from .pde_solutions import PDE_SOLUTIONS, load_pde
from .synthetic import synthetic_classification, synthetic_gp
from .vector_fields import mesh_vector_field, sphere_vector_field, torus_vector_field


@dataclass(frozen=True)
class _Entry:
    kind: str
    loader: Callable[..., Dataset]  # loader(split=..., dtype=..., **kwargs)
    files: tuple[str, ...] | None  # files in the data folder; None: embedded


def _seeded(
    fn: Callable[..., Dataset], split: int = 0, dtype: torch.dtype = torch.float64, **kwargs
) -> Dataset:
    # synthetic generators: ``split`` is the default seed
    kwargs.setdefault("seed", split)
    return fn(dtype=dtype, **kwargs)


class _UniqueDict(dict):
    def __setitem__(self, key, value):
        if key in self:
            raise RuntimeError(f"duplicate data set name {key!r}")
        super().__setitem__(key, value)


def _build() -> tuple[dict[str, _Entry], dict[str, str]]:
    from gpkit.cox.simulation import INTENSITIES, synthetic_point_process  # simulation lives with the model

    reg: dict[str, _Entry] = _UniqueDict()
    for name in uci.UCI_SETS:
        reg[name] = _Entry("regression", partial(uci.load_uci, name), tuple(uci.uci_files(name)))
    for name in classification.CLASSIFICATION_SETS:
        loader = classification.load_mnist if name == "mnist" else partial(classification.load_keel, name)
        reg[name] = _Entry("classification", loader, tuple(classification.classification_files(name)))
    for name in point_processes.PP_SETS:
        reg[name] = _Entry(
            "point-process",
            partial(point_processes.load_point_process, name),
            tuple(point_processes.pp_files(name)),
        )
    for name in manifolds.MESHES:
        reg[name] = _Entry("mesh", partial(manifolds.load_mesh, name), tuple(manifolds.manifold_files(name)))
    for name in manifolds.EEG_POSITIONS:
        reg[name] = _Entry(
            "manifold", partial(manifolds.load_eeg_positions, name), tuple(manifolds.manifold_files(name))
        )
    reg["wind"] = _Entry("manifold", manifolds.load_wind, tuple(manifolds.manifold_files("wind")))
    reg["eeg-eye-state"] = _Entry(
        "classification", manifolds.load_eeg_eye_state, tuple(manifolds.manifold_files("eeg-eye-state"))
    )
    reg["streaming-banana"] = _Entry(
        "sequential", sequential.load_streaming_banana, tuple(sequential.sequential_files("streaming-banana"))
    )
    reg["magnetic"] = _Entry(
        "sequential", sequential.load_magnetic, tuple(sequential.sequential_files("magnetic"))
    )
    # embedded
    for name, (_, task, _) in embedded.SKLEARN_SETS.items():
        reg[name] = _Entry(task, partial(embedded.load_sklearn, name), None)
    reg["synthetic-gp"] = _Entry("synthetic", partial(_seeded, synthetic_gp), None)
    reg["synthetic-classification"] = _Entry("synthetic", partial(_seeded, synthetic_classification), None)
    reg["synthetic-point-process"] = _Entry("synthetic", partial(_seeded, synthetic_point_process), None)
    for name in INTENSITIES:
        reg[f"synthetic-{name}"] = _Entry(
            "synthetic", partial(_seeded, synthetic_point_process, intensity=name), None
        )
    reg["sphere-vector-field"] = _Entry("synthetic", partial(_seeded, sphere_vector_field), None)
    reg["torus-vector-field"] = _Entry("synthetic", partial(_seeded, torus_vector_field), None)
    for mesh in manifolds.MESHES:
        reg[f"{mesh}-mesh-field"] = _Entry(
            "manifold", partial(_seeded, mesh_vector_field, mesh=mesh), tuple(manifolds.manifold_files(mesh))
        )
    for name in PDE_SOLUTIONS:
        reg[f"pde-{name}"] = _Entry("pde", partial(load_pde, name), None)
    aliases = {}
    for mod in (uci, classification, point_processes, manifolds, sequential, embedded):
        aliases.update(mod.ALIASES)
    aliases.update(
        {
            "gp": "synthetic-gp",
            "poisson-process": "synthetic-point-process",
            "sphere-field": "sphere-vector-field",
            "torus-field": "torus-vector-field",
            "bunny-vector-field": "bunny-mesh-field",
        }
    )
    normalised = {k.lower().replace("_", "-") for k in reg}
    clash = [a for a in aliases if a.lower().replace("_", "-") in normalised]
    if clash or len(normalised) != len(reg):
        raise RuntimeError(f"data set names clash after normalisation: {clash}")
    return dict(reg), aliases


REGISTRY, ALIASES = _build()
_NORMALISED = {k.lower().replace("_", "-"): k for k in REGISTRY}
_NORMALISED.update({k.lower().replace("_", "-"): v for k, v in ALIASES.items()})


def canonical_name(name: str) -> str:
    """Registry name for ``name`` (case-insensitive, ``_`` and ``-`` interchangeable, aliases resolved).

    :raises ValueError: for an unknown name (with the closest matches).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key in _NORMALISED:
        return _NORMALISED[key]
    close = difflib.get_close_matches(key, list(_NORMALISED), n=3)
    hint = f" Did you mean {', '.join(repr(_NORMALISED[c]) for c in close)}?" if close else ""
    raise ValueError(f"unknown data set name {name!r}.{hint} gpkit.datasets.names() lists them all.")


def names(kind: str | None = None) -> list[str]:
    """Every registry name (optionally only those of one ``kind``)."""
    return [k for k, e in REGISTRY.items() if kind is None or e.kind == kind]


def load(name: str, split: int = 0, dtype: torch.dtype = torch.float64, **kwargs) -> Dataset:
    """Load a data set by name.

    Real data come from the shared data folder (``$GPKIT_DATA``, else ``../shared/data`` next to the
    source checkout or the working directory); parsed files are cached in memory. Embedded sets
    (scikit-learn toys, ``synthetic-*``, ``pde-*``, ``*-vector-field``) need no folder.

    :param name: e.g. ``"elevators"``, ``"letter"``, ``"coal"``, ``"bunny"``, ``"wind"``,
        ``"streaming-banana"``, ``"synthetic-gp"`` (see :func:`names` / :func:`available`).
    :param split: train/test split index (fixed folds for UCI/KEEL sets, a seed for random splits
        and for the synthetic generators).
    :param dtype: floating dtype of ``X`` and of float targets (labels stay ``long``).
    :param kwargs: options of the specific loader (e.g. ``target="quality"`` for ``wine``,
        ``month=7`` for ``wind``, ``n=2500, d=5`` for ``synthetic-gp``).
    :raises FileNotFoundError: when the data folder or file is missing (set ``GPKIT_DATA``).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if not isinstance(split, int) or isinstance(split, bool):
        raise TypeError(f"split must be an int, got {type(split).__name__}")
    key = canonical_name(name)
    entry = REGISTRY[key]
    allowed = options(key)
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise TypeError(f"load({key!r}) got unexpected option(s) {unknown}; accepted: {allowed}")
    return entry.loader(split=split, dtype=dtype, **kwargs)


def options(name: str) -> list[str]:
    """The keyword options that :func:`load` accepts for ``name`` (besides ``split`` and ``dtype``)."""
    loader = REGISTRY[canonical_name(name)].loader
    fn, bound = loader, set()
    if isinstance(loader, partial):
        bound = set(loader.keywords)
        fn = loader.args[0] if loader.func is _seeded else loader.func
        bound |= set(list(inspect.signature(fn).parameters)[: len(loader.args) - (loader.func is _seeded)])
    return [k for k in inspect.signature(fn).parameters if k not in bound | {"split", "dtype"}]


def _info(name: str, entry: _Entry, root: str | None) -> DatasetInfo:
    source = "embedded" if entry.files is None else root or "missing"
    present = entry.files is None or (root is not None and all(_exists(root, f) for f in entry.files))
    shape = None
    if present:
        try:
            shape = tuple(REGISTRY[name].loader().X.shape)
        except (OSError, ValueError) as exc:  # unreadable file: listed as absent
            present, source = False, f"{source} ({type(exc).__name__})"
    return DatasetInfo(name, entry.kind, shape[0] if shape else None, shape, source, present)


def _exists(root: str, rel: str) -> bool:
    from pathlib import Path

    return (Path(root) / rel).exists()


@lru_cache(maxsize=4)
def _available(root: str | None) -> tuple[DatasetInfo, ...]:
    return tuple(_info(name, entry, root) for name, entry in REGISTRY.items())


def available() -> list[DatasetInfo]:
    """Every registered data set with its kind, size, source folder and whether it can be loaded.

    Sizes are counted from the files (each set is parsed once and cached); missing files give
    ``present=False``. Used by the ``gpkit datasets`` command.
    """
    try:
        root = str(data_dir())
    except FileNotFoundError:
        root = None
    return list(_available(root))


def data_folder() -> str:
    """The data folder in use, or the folders searched when none exists (for messages)."""
    try:
        return str(data_dir())
    except FileNotFoundError:
        return " | ".join(str(d) for d in candidate_dirs())


def format_available(infos: list[DatasetInfo] | None = None) -> str:
    """:func:`available` as a plain-text table (one line per data set) for the command line."""
    infos = available() if infos is None else infos
    lines = [f"{'name':28s} {'kind':15s} {'n':>8s} {'shape':>14s}  present  source"]
    for i in infos:
        shape = "x".join(str(s) for s in i.shape) if i.shape else "-"
        n = str(i.n) if i.n is not None else "-"
        lines.append(
            f"{i.name:28s} {i.kind:15s} {n:>8s} {shape:>14s}  {'yes' if i.present else 'no':7s}  {i.source}"
        )
    return "\n".join(lines)
