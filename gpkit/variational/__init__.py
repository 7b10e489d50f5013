"""Variational distributions and strategies: DKLGP's sparse inverse Cholesky family and SWSGP's nearest-inducing one."""

from gpkit.variational.dkl_variational_strategy import DKLVariationalStrategy
from gpkit.variational.dual_memory import bayesian_leverage_scores, select_inducing_points, select_memory
from gpkit.variational.dual_sites import damped_site_step, site_parameters, softmax_site_parameters
from gpkit.variational.dual_variational_strategy import DualVariationalDistribution, DualVariationalStrategy
from gpkit.variational.inducing_points import init_inducing_points
from gpkit.variational.local_cholesky_variational_distribution import LocalCholeskyVariationalDistribution
from gpkit.variational.nearest_inducing_variational_strategy import NearestInducingVariationalStrategy
from gpkit.variational.sparse_cholesky_variational_distribution import SparseCholeskyVariationalDistribution
from gpkit.variational.sparse_inverse_cholesky import sparse_inverse_cholesky, sparse_inverse_cholesky_columns

__all__ = [
    "DKLVariationalStrategy",
    "DualVariationalDistribution",
    "DualVariationalStrategy",
    "bayesian_leverage_scores",
    "damped_site_step",
    "select_inducing_points",
    "select_memory",
    "site_parameters",
    "softmax_site_parameters",
    "LocalCholeskyVariationalDistribution",
    "NearestInducingVariationalStrategy",
    "SparseCholeskyVariationalDistribution",
    "init_inducing_points",
    "sparse_inverse_cholesky",
    "sparse_inverse_cholesky_columns",
]
