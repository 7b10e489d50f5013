"""Data loaders for gpkit's tests, benchmarks and tutorials.

``load(name, split=0, dtype=torch.float64, **options)`` returns a :class:`Dataset` (``X``, ``y``,
``splits``, ``extras``, ``description``). Real data are read from the shared data folder
(``$GPKIT_DATA``, default ``../shared/data`` next to the source checkout); the scikit-learn toys and
the synthetic generators are embedded. ``available()`` lists everything with its size.

The UCI sets of treforevans/uci_datasets are mean-centred but **not scaled**: standardise them on
the training split with :func:`standardize` (and :func:`min_max` for inputs in [0, 1]).
"""

from ._io import ENV_VAR, data_dir
from .dataset import (
    Dataset,
    DatasetInfo,
    min_max,
    random_split,
    scaled_split,
    standardize,
    stratified_fold_split,
)
from .pde_solutions import PDE_SOLUTIONS, PDESolution, pde_solution
from .point_patterns import HermiteIntensity, integrate, poisson_process, synthetic_point_process
from .point_processes import polygon_contains, window_contains
from .registry import available, canonical_name, data_folder, format_available, load, names, options
from .synthetic import kernel_module, synthetic_classification, synthetic_gp
from .vector_fields import (
    mesh_vector_field,
    smooth_ambient_field,
    sphere_vector_field,
    torus_vector_field,
)

__all__ = [
    "ENV_VAR",
    "PDE_SOLUTIONS",
    "Dataset",
    "DatasetInfo",
    "HermiteIntensity",
    "PDESolution",
    "available",
    "canonical_name",
    "data_dir",
    "data_folder",
    "format_available",
    "integrate",
    "kernel_module",
    "load",
    "mesh_vector_field",
    "min_max",
    "names",
    "options",
    "pde_solution",
    "poisson_process",
    "polygon_contains",
    "random_split",
    "scaled_split",
    "smooth_ambient_field",
    "sphere_vector_field",
    "standardize",
    "stratified_fold_split",
    "synthetic_classification",
    "synthetic_gp",
    "synthetic_point_process",
    "torus_vector_field",
    "window_contains",
]
