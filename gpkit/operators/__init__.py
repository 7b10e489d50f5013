from .kronecker_grid import KroneckerCholesky, mode_product
from gpkit.operators.sparse_triangular import (  # noqa: F401
    SparseTriangularLinearOperator,
    block_solve,
    canonical_pattern,
    dense_block,
    pattern_positions,
    trim_padding,
    union_sets,
)
from gpkit.operators.incomplete_cholesky import gram_on_pattern, incomplete_reverse_cholesky  # noqa: F401
