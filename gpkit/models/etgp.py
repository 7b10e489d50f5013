"""ETGP (Maroñas & Hernández-Lobato, ICML 2023): one sparse GP and C input-dependent flows for multi-class
classification, at a GP cost that does not grow with the number of classes C."""

from __future__ import annotations

import math
from collections.abc import Sequence

import gpytorch
import torch
from botorch.models.gpytorch import GPyTorchModel
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.mlls import VariationalELBO
from gpytorch.models import ApproximateGP
from torch import Tensor

from gpkit.flows import ElementwiseFlow, InputDependentFlow, sinh_arcsinh_affine
from gpkit.likelihoods.etgp import ETGPLikelihood
from gpkit.variational.inducing_points import init_inducing_points

__all__ = ["ETGP"]


def check_labels(train_X: Tensor, train_Y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Check ``n x d`` inputs and ``n`` integer labels in ``0..num_classes-1``; return them (labels long)."""
    if not isinstance(train_X, Tensor):
        raise TypeError(f"train_X must be a torch.Tensor, got {type(train_X).__name__}")
    if not isinstance(train_Y, Tensor):
        raise TypeError(f"train_Y must be a torch.Tensor of integer labels, got {type(train_Y).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if train_X.dim() != 2 or train_X.shape[0] == 0:
        raise ValueError(f"train_X must be a non-empty n x d tensor, got shape {tuple(train_X.shape)}")
    if not torch.is_floating_point(train_X):
        raise TypeError(f"train_X must be floating point, got {train_X.dtype}")
    if not torch.isfinite(train_X).all():
        raise ValueError("train_X contains NaN or inf")
    if train_Y.dim() == 2 and train_Y.shape[-1] == 1:
        train_Y = train_Y.squeeze(-1)
    if train_Y.dim() != 1 or train_Y.shape[0] != train_X.shape[0]:
        raise ValueError(
            f"train_Y must be n = {train_X.shape[0]} labels (shape (n,) or (n, 1)), got shape {tuple(train_Y.shape)}"
        )
    if train_Y.dtype == torch.bool or train_Y.is_complex():
        raise TypeError(f"train_Y must hold integer labels, got dtype {train_Y.dtype}")
    if torch.is_floating_point(train_Y) and (~torch.isfinite(train_Y) | (train_Y != train_Y.round())).any():
        raise ValueError("train_Y must hold integer class labels; got non-integer (or NaN/inf) values")
    train_Y = train_Y.long()
    if train_Y.min() < 0 or train_Y.max() >= num_classes:
        raise ValueError(
            f"train_Y labels must lie in 0..num_classes-1 = 0..{num_classes - 1}, got range "
            f"{int(train_Y.min())}..{int(train_Y.max())}"
        )
    return train_X, train_Y.to(train_X.device)


class ETGP(ApproximateGP, GPyTorchModel):
    r"""Efficient transformed GP classifier: one latent GP :math:`f_0` and :math:`C` flows,
    :math:`p(y \mid x) = \mathrm{softmax}_y(G_{\theta_1(x)}(f_0(x)), \dots, G_{\theta_C(x)}(f_0(x)))`.

    :math:`f_0` is a whitened SVGP (``M`` inducing points, k-means initialised, zero mean, RBF-ARD kernel);
    the flows' parameters :math:`\theta(x)` come from an MLP with dropout (:class:`~gpkit.flows.InputDependentFlow`,
    default: sinh-arcsinh followed by affine, starting at the identity), so the C processes are
    non-stationary and dependent without a mixing matrix. The ELBO's expectation is one-dimensional for every
    C (Gauss-Hermite, :class:`~gpkit.likelihoods.ETGPLikelihood`): a training step evaluates the kernel and
    its Cholesky factor once, :math:`O(B M^2 + M^3)`, and the flows :math:`O(B Q C)` times; a C-GP SVGP
    costs C times the GP part.

    Inputs are standardised internally with the training mean and standard deviation. Train with
    :func:`gpkit.fit` (minibatch Adam; defaults in :attr:`fit_defaults`); predict with :meth:`predict_proba`.
    :meth:`posterior` is the BoTorch posterior of the latent :math:`f_0`.

    Pitfall: an input-dependent per-class bias lets the network classify alone and bypass the GP; the
    warm-up, dropout and above all the penalty on the network's output (``offset_penalty``) keep the GP in
    use (check with ``predict_proba(X, ablate="gp")``).

    :param train_X: ``n x d`` inputs.
    :param train_Y: ``n`` integer labels in ``0..num_classes-1`` (or ``n x 1``).
    :param num_classes: :math:`C \ge 2`.
    :param num_inducing: :math:`M` (default ``min(100, n)``; at most the number of distinct inputs).
    :param flow: ``None`` (input-dependent sinh-arcsinh-affine), an :class:`~gpkit.flows.ElementwiseFlow`
        with ``num_flows = C`` (constant parameters) or an :class:`~gpkit.flows.InputDependentFlow` on
        ``d`` inputs (its network sees standardised inputs).
    :param covar_module: kernel of :math:`f_0` (default ``ScaleKernel(RBFKernel(ard_num_dims=d))``,
        lengthscales :math:`\sqrt d`).
    :param inducing_points: initial ``M x d`` locations (original input scale), ``"kmeans"`` or ``"random"``.
    :param hidden: hidden widths of the default flow network.
    :param dropout: dropout of the default flow network.
    :param weight_decay: :math:`\lambda` of the default network's penalty :math:`\frac{\lambda}{2}\|W\|^2`,
        added to the per-datum loss (as Adam's weight decay would).
    :param offset_penalty: :math:`\gamma` of the default network's output penalty
        :math:`\frac{\gamma}{2}\|\mathrm{NN}(x)\|^2` per datum (see :class:`~gpkit.flows.InputDependentFlow`):
        the guard against the NN-bypass pitfall. Chosen on validation splits of letter and MNIST (1500 training
        points, ``benchmarks/_etgp_penalty_grid.py``): with 0, 0.001 or 0.003 the network alone classified MNIST
        nearly as well as the model (GP-ablated accuracy within 0.013 of 0.89); 0.01 is the smallest value that
        kept the drop above 0.1 on both (letter 0.78 vs 0.38 ablated, MNIST 0.895 vs 0.79), and larger values cost
        letter accuracy (0.755 at 0.03, 0.75 at 0.1; 0.81 at 0).
    :param num_quadrature: Gauss-Hermite nodes :math:`Q`.
    :param warmup_epochs: epochs of :func:`gpkit.fit` during which the flow network is frozen (the flows use
        only their constant parameters :math:`\theta_0`, a stationary TGP); then the network is switched on
        (:meth:`on_epoch_end`). Default: a quarter of the default epochs. Started at the identity, the symmetric
        flows give :math:`f_0` no gradient while the network's per-class biases have one, so without the
        warm-up the network fits the labels alone and the GP is bypassed (the pitfall above).
    :param learn_inducing_locations: optimise the inducing locations.
    :param seed: seed of the inducing initialisation.
    """

    _num_outputs = 1

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        num_classes: int,
        num_inducing: int | None = None,
        flow: ElementwiseFlow | InputDependentFlow | None = None,
        covar_module: gpytorch.kernels.Kernel | None = None,
        inducing_points: Tensor | str = "kmeans",
        hidden: Sequence[int] = (50,),
        dropout: float = 0.5,
        weight_decay: float = 1e-5,
        offset_penalty: float = 0.01,
        num_quadrature: int = 10,
        warmup_epochs: int | None = None,
        learn_inducing_locations: bool = True,
        seed: int = 0,
    ) -> None:
        train_X, train_Y = check_labels(train_X, train_Y, num_classes)
        if covar_module is not None and not isinstance(covar_module, gpytorch.kernels.Kernel):
            raise TypeError(f"covar_module must be a gpytorch.kernels.Kernel or None, got {type(covar_module).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        n, d = train_X.shape
        mean, std = train_X.mean(0), train_X.std(0) if n > 1 else torch.ones(d).to(train_X)
        std = torch.where(std > 0, std, torch.ones_like(std))
        scaled = (train_X - mean) / std
        if isinstance(inducing_points, Tensor):
            if inducing_points.dim() != 2 or inducing_points.size(-1) != d:
                raise ValueError(f"inducing_points must have shape (M, {d}), got {tuple(inducing_points.shape)}")
            if not torch.isfinite(inducing_points).all():
                raise ValueError("inducing_points contains NaN or inf")
            Z = (inducing_points.to(train_X) - mean) / std
        else:
            num_inducing = min(100, n) if num_inducing is None else num_inducing
            if isinstance(num_inducing, bool) or not isinstance(num_inducing, int) or not 1 <= num_inducing <= n:
                raise ValueError(f"num_inducing must be an int in [1, n={n}], got {num_inducing!r}")
            if inducing_points not in ("kmeans", "random"):
                raise ValueError(f"inducing_points must be a tensor, 'kmeans' or 'random', got {inducing_points!r}")
            Z = init_inducing_points(scaled, num_inducing, inducing_points, seed)
        if flow is None:
            flow = InputDependentFlow(sinh_arcsinh_affine(num_classes), d, hidden=hidden, dropout=dropout,
                                      weight_decay=weight_decay, offset_penalty=offset_penalty)
        if not isinstance(flow, ElementwiseFlow | InputDependentFlow):
            raise TypeError(f"flow must be None, an ElementwiseFlow or an InputDependentFlow, got {type(flow).__name__}")
        if flow.num_flows != num_classes:
            raise ValueError(f"flow has num_flows={flow.num_flows} but num_classes={num_classes}")
        if isinstance(flow, InputDependentFlow) and flow.input_dim != d:
            raise ValueError(f"flow's network takes {flow.input_dim} inputs but train_X has d={d} columns")

        q_u = gpytorch.variational.CholeskyVariationalDistribution(Z.size(0))
        strategy = gpytorch.variational.VariationalStrategy(
            self, Z, q_u, learn_inducing_locations=learn_inducing_locations
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ZeroMean()
        if covar_module is None:
            covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=d))
            covar_module.base_kernel.lengthscale = math.sqrt(d)
        self.covar_module = covar_module
        self.likelihood = ETGPLikelihood(flow, num_quadrature=num_quadrature)
        self.num_classes = num_classes
        self.to(train_X)
        self.register_buffer("_x_mean", mean)
        self.register_buffer("_x_std", std)
        self.register_buffer("_train_X", scaled)  # standardised
        self.register_buffer("_train_Y", train_Y)
        if isinstance(flow, InputDependentFlow):
            flow.prefit_identity(scaled[:4096])
        if warmup_epochs is None:
            warmup_epochs = self.fit_defaults["epochs"] // 4
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs if isinstance(flow, InputDependentFlow) else 0
        if self.warmup_epochs > 0:
            flow.network.requires_grad_(False)

    # ------------------------------------------------------------------ data and scaling
    @property
    def num_data(self) -> int:
        return self._train_Y.size(0)

    @property
    def train_targets(self) -> Tensor:
        return self._train_Y

    def standardize(self, X: Tensor) -> Tensor:
        """Inputs on the scale the GP and the flow network see."""
        return (X - self._x_mean) / self._x_std

    @property
    def fit_defaults(self) -> dict:
        """Adam lr 0.01, batch 256, ``epochs`` for about 1500 steps (at least 10, at most 150; a quarter of them
        is the network's warm-up) and ``min_steps`` = 75 epochs, at least 1000 and at most 5000 steps.

        Without an explicit ``epochs``, :func:`gpkit.fit`'s converging default runs at least ``min_steps`` and at
        most ``max(epochs x batches per epoch, 3000, min_steps)`` steps and stops earlier once the loss stops
        improving. Measured (``benchmarks/results/etgp.md``): on full letter (n = 18000) the plain 1000-step floor
        stopped ETGP at accuracy 0.73, 5000 steps gave 0.82; at n = 1500 a 5000-step floor (834 epochs) overfit
        MNIST (test NLL 0.57 vs 0.45), hence the cap of 75 passes over the data."""
        steps_per_epoch = math.ceil(self.num_data / 256)
        return {"epochs": int(min(150, max(10, math.ceil(1500 / steps_per_epoch)))), "lr": 0.01, "batch_size": 256,
                "min_steps": int(max(1000, min(5000, 75 * steps_per_epoch)))}

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def __call__(self, inputs: Tensor, *args, **kwargs) -> gpytorch.distributions.MultivariateNormal:
        """:math:`q(f_0)` at inputs on the original scale."""
        return super().__call__(self.standardize(inputs), *args, **kwargs)

    def _latent(self, scaled: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return ApproximateGP.__call__(self, scaled)

    # ------------------------------------------------------------------ training
    def on_epoch_end(self, epoch: int) -> bool:
        """Switch the flow network on after ``warmup_epochs`` epochs; ``True`` makes :func:`gpkit.fit` rebuild
        its optimizer with the network's parameters."""
        flow = self.likelihood.flow
        if isinstance(flow, InputDependentFlow) and epoch >= self.warmup_epochs:
            frozen = [p for p in flow.network.parameters() if not p.requires_grad]
            if frozen:
                flow.network.requires_grad_(True)
                return True
        return False

    def batch_loss(self, index: Tensor) -> Tensor:
        """Negative ELBO per datum on the training inputs ``index`` (for :func:`gpkit.fit`), plus the flow
        network's weight penalty."""
        index = index.to(self._train_X.device)
        x = self._train_X[index]
        elbo = VariationalELBO(self.likelihood, self, num_data=self.num_data)
        flow = self.likelihood.flow
        if not isinstance(flow, InputDependentFlow):
            return -elbo(self._latent(x), self._train_Y[index], x=x)
        h = flow.features(x)  # one pass of the hidden layers serves the likelihood and the penalty
        loss = -elbo(self._latent(x), self._train_Y[index], x=x, raw=flow.raw(x, features=h))
        return loss + flow.penalty(features=h)

    # ------------------------------------------------------------------ prediction
    def _check_X(self, X: Tensor) -> None:
        d = self._x_mean.numel()
        if not isinstance(X, Tensor):
            raise TypeError(f"X must be a torch.Tensor, got {type(X).__name__}")
        if X.dim() < 2 or X.size(-1) != d:
            raise ValueError(f"X must be a tensor of shape (..., q, {d}), got {getattr(X, 'shape', type(X))}")
        if not torch.is_floating_point(X):
            raise TypeError(f"X must be floating point, got {X.dtype}")
        if not torch.isfinite(X).all():
            raise ValueError("X contains NaN or inf")

    @torch.no_grad()
    def predict_proba(self, X: Tensor, num_dropout_samples: int = 0, ablate: str | None = None,
                      chunk: int = 2048) -> Tensor:
        """Predictive class probabilities at ``X`` (``n x d``): ``n x C``, rows summing to 1.

        :param num_dropout_samples: 0 (default) uses the flow network without dropout; ``S > 0`` averages
            over ``S`` MC-dropout draws of the network.
        :param ablate: ``"gp"`` replaces :math:`q(f_0)` by a point mass at 0 (the flows alone), a check that
            the GP is doing work; ``None`` for the model's prediction.
        :param chunk: inputs per batch.
        """
        self._check_X(X)
        if X.dim() != 2:
            raise ValueError(f"X must be n x d for predict_proba, got shape {tuple(X.shape)}")
        if ablate not in (None, "gp"):
            raise ValueError(f"ablate must be None or 'gp', got {ablate!r}")
        if not isinstance(num_dropout_samples, int) or num_dropout_samples < 0:
            raise ValueError(f"num_dropout_samples must be an int >= 0, got {num_dropout_samples!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        self.eval()
        out = []
        for xb in self.standardize(X).split(chunk):
            if ablate == "gp":
                zeros = torch.zeros(xb.shape[:-1], dtype=xb.dtype, device=xb.device)
                q_f = gpytorch.distributions.MultivariateNormal(zeros, torch.diag_embed(zeros + 1e-12))
            else:
                q_f = self._latent(xb)
            out.append(self.likelihood(q_f, x=xb, num_dropout_samples=num_dropout_samples).probs)
        return torch.cat(out)

    def posterior(self, X: Tensor, observation_noise: bool | Tensor = False, posterior_transform=None,
                  **kwargs) -> GPyTorchPosterior:
        """BoTorch posterior of the latent :math:`f_0` at ``X`` (``batch x q x d``, original input scale)."""
        self._check_X(X)
        if observation_noise is not False:
            raise ValueError("observation_noise is not defined for ETGP; use predict_proba for class probabilities")
        return super().posterior(X, observation_noise=False, posterior_transform=posterior_transform, **kwargs)
