"""GPyTorch's SVGP and VNNGP: the regression baselines of DKLGP, SWSGP and the dual memory GP."""

from __future__ import annotations

import gpytorch
from linear_operator.operators import DiagLinearOperator
from torch import Tensor

__all__ = ["SVGPBaseline", "VNNGPBaseline"]


class SVGPBaseline(gpytorch.models.ApproximateGP):
    """GPyTorch's SVGP: ``CholeskyVariationalDistribution`` with a whitened (default) or unwhitened strategy
    and the SWSGP default prior (constant mean, Matérn-5/2 ARD).

    :param inducing_points: initial inducing locations, ``M x d`` (learned).
    :param whitened: ``VariationalStrategy`` if True, else ``UnwhitenedVariationalStrategy``.
    :param covar_module: the kernel (default ``ScaleKernel(MaternKernel(2.5, ard_num_dims=d))``).
    """

    def __init__(self, inducing_points: Tensor, whitened: bool = True, covar_module=None) -> None:
        q = gpytorch.variational.CholeskyVariationalDistribution(inducing_points.size(0))
        cls = gpytorch.variational.VariationalStrategy if whitened else gpytorch.variational.UnwhitenedVariationalStrategy
        super().__init__(cls(self, inducing_points, q, learn_inducing_locations=True))
        self.mean_module = gpytorch.means.ConstantMean()
        d = inducing_points.size(-1)
        self.covar_module = covar_module or gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d)
        )
        self.to(inducing_points)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class VNNGPBaseline(gpytorch.models.ApproximateGP):
    """GPyTorch's VNNGP (``NNVariationalStrategy`` + mean-field ``q``) with each point conditioning on its
    ``k`` nearest previous points, trainable by :func:`gpkit.fit` through ``batch_loss``.

    The strategy draws its own minibatches (a permutation per epoch, ``training_batch_size`` each), so
    ``batch_loss`` uses the size of the index it is given but VNNGP's own indices, as GPyTorch intends.

    :param train_X: ``n x d`` inputs (all of them are inducing points).
    :param train_y: ``n`` targets.
    :param covar_module: the kernel.
    :param likelihood: a GPyTorch likelihood.
    :param k: neighbours per point.
    :param batch_size: training minibatch size.
    :param jitter: added to the kernel blocks.
    """

    def __init__(
        self,
        train_X: Tensor,
        train_y: Tensor,
        covar_module,
        likelihood,
        k: int,
        batch_size: int = 128,
        jitter: float = 1e-4,
    ):
        n = train_X.shape[0]
        q = gpytorch.variational.MeanFieldVariationalDistribution(n)
        strategy = gpytorch.variational.NNVariationalStrategy(
            self, train_X, q, k=k, training_batch_size=min(batch_size, n), jitter_val=jitter
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar_module
        self.likelihood = likelihood
        self.register_buffer("train_y", train_y)
        self.to(train_X)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def __call__(self, inputs: Tensor | None, prior: bool = False, **kwargs) -> gpytorch.distributions.MultivariateNormal:
        """Also takes batched test inputs ``(*batch, q, d)``, as BoTorch's acquisition optimisation passes them:
        GPyTorch's ``NNVariationalStrategy`` only accepts its inducing points' batch shape, but its predictive
        covariance is diagonal, so evaluating the flattened batch and reshaping it is exact."""
        if self.training or prior or inputs is None or inputs.dim() <= 2:
            return super().__call__(inputs, prior=prior, **kwargs)
        batch = inputs.shape[:-1]  # shape: (*batch, q)
        flat = super().__call__(inputs.reshape(-1, inputs.size(-1)), **kwargs)
        return gpytorch.distributions.MultivariateNormal(flat.mean.reshape(batch), DiagLinearOperator(flat.variance.reshape(batch)))

    @property
    def num_data(self) -> int:
        return self.train_y.shape[0]

    def batch_loss(self, index: Tensor) -> Tensor:
        output = self(None)
        target = self.train_y[self.variational_strategy.current_training_indices]
        return -gpytorch.mlls.VariationalELBO(self.likelihood, self, num_data=self.num_data)(output, target)
