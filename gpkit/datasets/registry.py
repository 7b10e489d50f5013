"""``load(name)``: the loader behind every name of :mod:`gpkit.datasets.catalog`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import classification, embedded, manifolds, point_processes, sequential, uci
from .catalog import CATALOG, canonical_name
from .dataset import Dataset
from .pde_solutions import PDE_SOLUTIONS, load_pde
from .synthetic import synthetic_classification, synthetic_gp
from .vector_fields import mesh_vector_field, sphere_vector_field, torus_vector_field


@dataclass(frozen=True)
class _Loader:
    fn: Callable[..., Dataset]
    fixed: dict = field(default_factory=dict)  # arguments the name fixes (e.g. the set's own name)
    seeded: bool = False  # a generator: ``split`` is the default of its ``seed``

    def __call__(self, split: int, dtype: torch.dtype, **kwargs) -> Dataset:
        if self.seeded:
            kwargs.setdefault("seed", split)
            return self.fn(dtype=dtype, **self.fixed, **kwargs)
        return self.fn(split=split, dtype=dtype, **self.fixed, **kwargs)

    def options(self) -> list[str]:
        params = inspect.signature(self.fn).parameters
        return [p for p in params if p not in {"split", "dtype", *self.fixed}]


def _build() -> dict[str, _Loader]:
    from gpkit.cox.simulation import INTENSITIES, synthetic_point_process  # simulation lives with the model

    reg: dict[str, _Loader] = {}
    for name in uci.UCI_SETS:
        reg[name] = _Loader(uci.load_uci, {"name": name})
    for name in classification.CLASSIFICATION_SETS:
        reg[name] = (
            _Loader(classification.load_mnist)
            if name == "mnist"
            else _Loader(classification.load_keel, {"name": name})
        )
    for name in point_processes.PP_SETS:
        reg[name] = _Loader(point_processes.load_point_process, {"name": name})
    for name in manifolds.MESHES:
        reg[name] = _Loader(manifolds.load_mesh, {"name": name})
        reg[f"{name}-mesh-field"] = _Loader(mesh_vector_field, {"mesh": name}, seeded=True)
    for name in manifolds.EEG_POSITIONS:
        reg[name] = _Loader(manifolds.load_eeg_positions, {"name": name})
    reg["wind"] = _Loader(manifolds.load_wind)
    reg["eeg-eye-state"] = _Loader(manifolds.load_eeg_eye_state)
    reg["streaming-banana"] = _Loader(sequential.load_streaming_banana)
    reg["magnetic"] = _Loader(sequential.load_magnetic)
    for name in embedded.SKLEARN_SETS:
        reg[name] = _Loader(embedded.load_sklearn, {"name": name})
    reg["synthetic-gp"] = _Loader(synthetic_gp, seeded=True)
    reg["synthetic-classification"] = _Loader(synthetic_classification, seeded=True)
    reg["synthetic-point-process"] = _Loader(synthetic_point_process, seeded=True)
    for name in INTENSITIES:
        reg[f"synthetic-{name}"] = _Loader(synthetic_point_process, {"intensity": name}, seeded=True)
    reg["sphere-vector-field"] = _Loader(sphere_vector_field, seeded=True)
    reg["torus-vector-field"] = _Loader(torus_vector_field, seeded=True)
    for name in PDE_SOLUTIONS:
        reg[f"pde-{name}"] = _Loader(load_pde, {"name": name})
    missing = {i.name for i in CATALOG} ^ set(reg)
    if missing:
        raise RuntimeError(f"gpkit.datasets.catalog and the loaders disagree on {sorted(missing)}")
    return reg


REGISTRY = _build()


def load(name: str, split: int = 0, dtype: torch.dtype = torch.float64, **kwargs) -> Dataset:
    """Load a data set by name.

    Real data come from the shared data folder (``$GPKIT_DATA``, else ``../shared/data`` next to the
    source checkout or the working directory). Embedded sets (scikit-learn toys, ``synthetic-*``,
    ``pde-*``, ``*-vector-field``) need no folder. ``gpkit datasets`` lists every name.

    :param name: e.g. ``"elevators"``, ``"letter"``, ``"coal"``, ``"bunny"``, ``"wind"``,
        ``"streaming-banana"``, ``"synthetic-gp"`` (case-insensitive; ``_`` and ``-`` alike).
    :param split: which train/test split, with one meaning per kind of set
        (:data:`gpkit.datasets.SPLITS`): the test fold 0..9 for regression and classification sets,
        the training stream for sequential sets, the seed for generators; ignored where a set has one
        fixed split or none.
    :param dtype: floating dtype of ``X`` and of float targets (labels stay ``long``).
    :param kwargs: options of the specific loader (e.g. ``target="quality"`` for ``wine``,
        ``month=7`` for ``wind``, ``n=2500, d=5`` for ``synthetic-gp``); :func:`options` lists them.
    :raises FileNotFoundError: when the data folder or a file is missing (set ``GPKIT_DATA``).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if not isinstance(split, int) or isinstance(split, bool):
        raise TypeError(f"split must be an int, got {type(split).__name__}")
    key = canonical_name(name)
    loader = REGISTRY[key]
    allowed = loader.options()
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise TypeError(f"load({key!r}) got unexpected option(s) {unknown}; accepted: {allowed}")
    return loader(split, dtype, **kwargs)


def options(name: str) -> list[str]:
    """The keyword options that :func:`load` accepts for ``name`` (besides ``split`` and ``dtype``)."""
    return REGISTRY[canonical_name(name)].options()
