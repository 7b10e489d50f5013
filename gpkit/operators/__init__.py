"""Structured linear algebra: DKLGP's sparse triangular factor and the Kronecker grid algebra of the PDE solver."""

from gpkit.operators.incomplete_cholesky import gram_on_pattern, incomplete_reverse_cholesky
from gpkit.operators.kronecker_grid import KroneckerCholesky, mode_product
from gpkit.operators.sparse_triangular import (
    SparseTriangularLinearOperator,
    block_solve,
    canonical_pattern,
    dense_block,
    pattern_positions,
    trim_padding,
    union_sets,
)

__all__ = [
    "KroneckerCholesky",
    "SparseTriangularLinearOperator",
    "block_solve",
    "canonical_pattern",
    "dense_block",
    "gram_on_pattern",
    "incomplete_reverse_cholesky",
    "mode_product",
    "pattern_positions",
    "trim_padding",
    "union_sets",
]
