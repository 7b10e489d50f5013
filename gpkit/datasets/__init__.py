"""Data loaders for gpkit's tests, benchmarks and tutorials.

``load(name, split=0, dtype=torch.float64, **options)`` returns a :class:`Dataset` (``X``, ``y``,
``splits``, ``extras``, ``description``). Real data are read from the shared data folder
(``$GPKIT_DATA``, default ``../shared/data`` next to the source checkout); the scikit-learn toys and
the synthetic generators are embedded. ``available()`` lists everything with its stated size, and
``SPLITS`` says what ``split`` selects for each kind of set (a test fold, a stream or a seed).

The UCI sets of treforevans/uci_datasets are mean-centred but **not scaled**: standardise them on
the training split with :func:`standardize` (and :func:`min_max` for inputs in [0, 1]).

The names below are imported on first use, so that listing the catalog needs no torch.
"""

from __future__ import annotations

import importlib

# public name -> submodule that defines it
_EXPORTS = {
    "ENV_VAR": "_io",
    "data_dir": "_io",
    "Dataset": "dataset",
    "fold_split": "dataset",
    "random_split": "dataset",
    "min_max": "dataset",
    "scaled_split": "dataset",
    "standardize": "dataset",
    "stratified_fold_split": "dataset",
    "DatasetInfo": "catalog",
    "SPLITS": "catalog",
    "available": "catalog",
    "canonical_name": "catalog",
    "format_available": "catalog",
    "names": "catalog",
    "load": "registry",
    "options": "registry",
    "PDE_SOLUTIONS": "pde_solutions",
    "PDESolution": "pde_solutions",
    "pde_solution": "pde_solutions",
    "kernel_module": "synthetic",
    "synthetic_classification": "synthetic",
    "synthetic_gp": "synthetic",
    "mesh_vector_field": "vector_fields",
    "smooth_ambient_field": "vector_fields",
    "sphere_vector_field": "vector_fields",
    "torus_vector_field": "vector_fields",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
