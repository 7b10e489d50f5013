from gpkit.variational.dkl_variational_strategy import DKLVariationalStrategy  # noqa: F401
from gpkit.variational.sparse_cholesky_variational_distribution import (  # noqa: F401
    SparseCholeskyVariationalDistribution,
)
from gpkit.variational.sparse_inverse_cholesky import (  # noqa: F401
    sparse_inverse_cholesky,
    sparse_inverse_cholesky_columns,
)
from gpkit.variational.local_cholesky_variational_distribution import LocalCholeskyVariationalDistribution  # noqa: F401
from gpkit.variational.nearest_inducing_variational_strategy import NearestInducingVariationalStrategy  # noqa: F401
