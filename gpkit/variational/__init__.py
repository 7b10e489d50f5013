"""Variational distributions and strategies: DKLGP's sparse inverse Cholesky family and SWSGP's nearest-inducing one."""

from gpkit.variational.dkl_variational_strategy import DKLVariationalStrategy
from gpkit.variational.inducing_points import init_inducing_points
from gpkit.variational.local_cholesky_variational_distribution import LocalCholeskyVariationalDistribution
from gpkit.variational.nearest_inducing_variational_strategy import NearestInducingVariationalStrategy
from gpkit.variational.sparse_cholesky_variational_distribution import SparseCholeskyVariationalDistribution
from gpkit.variational.sparse_inverse_cholesky import sparse_inverse_cholesky, sparse_inverse_cholesky_columns

__all__ = [
    "DKLVariationalStrategy",
    "LocalCholeskyVariationalDistribution",
    "NearestInducingVariationalStrategy",
    "SparseCholeskyVariationalDistribution",
    "init_inducing_points",
    "sparse_inverse_cholesky",
    "sparse_inverse_cholesky_columns",
]
