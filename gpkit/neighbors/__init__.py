r"""Maximin ordering, k-nearest neighbours and sparsity patterns shared by DKLGP, SWSGP and VNNGP.

Everything geometric runs on the CPU in float64 (SciPy kd-trees) and the index tensors are returned
on the device of the input; :func:`knn` searches on the GPU when its inputs are CUDA tensors.

Example (the DKLGP set-up)::

    order, dist = maximin_order(train_X, lengthscale=kernel.lengthscale)
    X = train_X[order]
    S = sparsity_pattern(X, dist, rho=1.5, lengthscale=kernel.lengthscale)  # rows S_j, j last
    A = ancestor_sets(X, dist, rho=1.5, lengthscale=kernel.lengthscale)     # rows A_j ⊇ S_j
    T = test_pattern(X, dist, test_X, rho=1.5, lengthscale=kernel.lengthscale)

Repeated inputs get maximin distance 0 (a warning by default); :func:`find_duplicates` lists them so a
model can reject or merge them.
"""

from gpkit.neighbors.nearest import knn, previous_knn
from gpkit.neighbors.ordering import find_duplicates, maximin_order
from gpkit.neighbors.structure import MaximinStructure
from gpkit.neighbors.pattern import (
    Pattern,
    ancestor_sets,
    sparsity_pattern,
    test_ancestor_sets,
    test_pattern,
)

__all__ = [
    "MaximinStructure",
    "Pattern",
    "ancestor_sets",
    "find_duplicates",
    "knn",
    "maximin_order",
    "previous_knn",
    "sparsity_pattern",
    "test_ancestor_sets",
    "test_pattern",
]
