r"""The ETGP likelihood: one latent :math:`f_0` mapped through :math:`C` element-wise flows to class logits.

:math:`p(y \mid f_0, x) = \mathrm{softmax}(G_{\theta_1(x)}(f_0), \dots, G_{\theta_C(x)}(f_0))_y`
(Maroñas & Hernández-Lobato, ICML 2023). Every expectation over :math:`q(f_0(x)) = \mathcal N(\mu, s^2)` is
one-dimensional whatever :math:`C`, and is computed by Gauss-Hermite quadrature with :math:`Q` nodes: the GP
is evaluated once, the flows :math:`Q C` times per input.
"""

from __future__ import annotations

import math

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.likelihoods import Likelihood
from gpytorch.utils.quadrature import GaussHermiteQuadrature1D
from torch import Tensor
from torch.distributions import Categorical

from gpkit.flows import AffineFlow, ComposedFlow, ElementwiseFlow, InputDependentFlow, SinhArcsinhFlow
from gpkit.flows.fused import sal_expected_log_softmax

__all__ = ["ETGPLikelihood"]


class ETGPLikelihood(Likelihood):
    r""":math:`y \mid f_0 \sim \mathrm{Categorical}(\mathrm{softmax}_c\, G_{\theta_c(x)}(f_0))`, :math:`c = 1..C`.

    :param flow: ``C`` element-wise flows: an :class:`~gpkit.flows.ElementwiseFlow` with ``num_flows = C``
        (constant parameters) or an :class:`~gpkit.flows.InputDependentFlow` (parameters from an MLP of
        ``x``; then every call needs ``x=``, the inputs of the latent values).
    :param num_quadrature: Gauss-Hermite nodes :math:`Q` of the training objective (:meth:`expected_log_prob`),
        whose cost is :math:`O(B Q C)` per step; 10 nodes match Monte Carlo within its error (tested).
    :param num_quadrature_predict: nodes of the predictive probabilities (:meth:`marginal`); more, because the
        probabilities of inputs with a wide :math:`q(f_0)` need them and prediction is not the bottleneck.
    :param fused: train a sinh-arcsinh + affine flow through the fused kernel :func:`~gpkit.flows.fused.sal_expected_log_softmax`
        (same values and gradients, several times faster at large C); ``False`` uses plain autograd.
    :param num_dropout_samples: default number of MC-dropout draws of the flow network in :meth:`marginal`
        (0: the network's point estimate, dropout off).
    """

    def __init__(self, flow: ElementwiseFlow | InputDependentFlow, num_quadrature: int = 10,
                 num_dropout_samples: int = 0, num_quadrature_predict: int = 20, fused: bool = True) -> None:
        super().__init__()
        if not isinstance(flow, ElementwiseFlow | InputDependentFlow):
            raise TypeError(f"flow must be an ElementwiseFlow or InputDependentFlow, got {type(flow).__name__}")
        if flow.num_flows < 2:
            raise ValueError(f"flow must hold num_flows = C >= 2 flows (one per class), got {flow.num_flows}")
        if not isinstance(num_quadrature, int) or num_quadrature < 1:
            raise ValueError(f"num_quadrature must be a positive int, got {num_quadrature!r}")
        if not isinstance(num_quadrature_predict, int) or num_quadrature_predict < 1:
            raise ValueError(f"num_quadrature_predict must be a positive int, got {num_quadrature_predict!r}")
        if not isinstance(num_dropout_samples, int) or num_dropout_samples < 0:
            raise ValueError(f"num_dropout_samples must be an int >= 0, got {num_dropout_samples!r}")
        self.flow = flow
        self.num_classes = flow.num_flows
        self.num_dropout_samples = num_dropout_samples
        self.quadrature = GaussHermiteQuadrature1D(num_quadrature)
        self.fused = bool(fused)
        self.predict_quadrature = GaussHermiteQuadrature1D(num_quadrature_predict)

    @property
    def _fused_sal(self) -> bool:
        """The flow is one sinh-arcsinh + affine pair: training uses the fused kernel
        :func:`sal_expected_log_softmax`."""
        flow = self.flow.flow if self.input_dependent else self.flow
        pair = isinstance(flow, ComposedFlow) and [type(g) for g in flow.flows] == [SinhArcsinhFlow, AffineFlow]
        return self.fused and pair

    @property
    def input_dependent(self) -> bool:
        return isinstance(self.flow, InputDependentFlow)

    def flow_parameters(self, x: Tensor | None) -> Tensor | None:
        """Raw flow parameters ``(..., n, C, P)`` at ``x`` (``None`` for constant flows)."""
        if not self.input_dependent:
            return None
        if x is None:
            raise ValueError("this ETGPLikelihood has input-dependent flows: pass x=, the inputs of the latent values")
        return self.flow.raw(x)

    def logits(self, function_samples: Tensor, raw: Tensor | None = None) -> Tensor:
        """Class logits :math:`G_{\\theta_c}(f_0)`: ``(..., n)`` latent values -> ``(..., n, C)``."""
        flow = self.flow.flow if self.input_dependent else self.flow
        return flow(function_samples.unsqueeze(-1), raw)

    def forward(self, function_samples: Tensor, *args, x: Tensor | None = None, **kwargs) -> Categorical:
        """:math:`p(y \\mid f_0)` for latent values ``(..., n)``: a ``Categorical`` of batch shape ``(..., n)``."""
        return Categorical(logits=self.logits(function_samples, self.flow_parameters(x)))

    def expected_log_prob(self, observations: Tensor, function_dist: MultivariateNormal, *args,
                          x: Tensor | None = None, raw: Tensor | None = None, **kwargs) -> Tensor:
        r""":math:`E_{q(f_0)}[\log p(y \mid f_0)]` per input by Gauss-Hermite quadrature; shape ``(..., n)``.

        :param raw: the flow parameters :meth:`flow_parameters` at ``x`` when already computed.
        """
        raw = self.flow_parameters(x) if raw is None else raw  # once, shared by the Q nodes
        if self._fused_sal and function_dist.mean.dim() == 1 and observations.dim() == 1:
            flow = self.flow.flow if self.input_dependent else self.flow
            sal, affine = flow.flows
            if raw is None:
                p1, p2 = sal.constrained(), affine.constrained()
            else:  # one unbind of all four raw parameters (its backward is one stack, no split/select chains)
                values = raw.transpose(-1, -2).unbind(-2)
                p1, p2 = sal.constrain(values[:2]), affine.constrain(values[2:])
            # Gauss-Hermite as GaussHermiteQuadrature1D computes it, the sum over the nodes inside the kernel
            nodes, weights = self.quadrature.locations, self.quadrature.weights / math.sqrt(math.pi)
            f0 = torch.sqrt(2.0 * function_dist.variance) * nodes.unsqueeze(-1) + function_dist.mean  # (Q, n)
            return sal_expected_log_softmax(f0, weights, p1["a"], p1["b"], p2["alpha"], p2["beta"], observations)
        labels = observations.long().unsqueeze(-1)

        def log_lik(f0: Tensor) -> Tensor:  # f0: (Q, ..., n)
            logits = self.logits(f0, raw)  # (Q, ..., n, C)
            chosen = logits.gather(-1, labels.expand(*logits.shape[:-1], 1)).squeeze(-1)
            return chosen - torch.logsumexp(logits, dim=-1)

        return self.quadrature(log_lik, function_dist)

    def _probs(self, function_dist: MultivariateNormal, x: Tensor | None, num_dropout_samples: int) -> Tensor:
        def probs(raw):
            return self.predict_quadrature(lambda f0: torch.softmax(self.logits(f0, raw), dim=-1), function_dist)

        if num_dropout_samples == 0 or not self.input_dependent:
            return probs(self.flow_parameters(x))
        network = self.flow.network
        was_training = network.training
        network.train()  # dropout on: each draw is one sample of the network
        try:
            return torch.stack([probs(self.flow_parameters(x)) for _ in range(num_dropout_samples)]).mean(0)
        finally:
            network.train(was_training)

    def marginal(self, function_dist: MultivariateNormal, *args, x: Tensor | None = None,
                 num_dropout_samples: int | None = None, **kwargs) -> Categorical:
        r"""Predictive class probabilities :math:`E_{q(f_0)}[\mathrm{softmax}(G(f_0))]`, shape ``(..., n, C)``.

        :param num_dropout_samples: MC-dropout draws of the flow network averaged over (default: the
            likelihood's ``num_dropout_samples``; 0 uses the network with dropout off).
        """
        draws = self.num_dropout_samples if num_dropout_samples is None else num_dropout_samples
        return Categorical(probs=self._probs(function_dist, x, draws))

    def log_marginal(self, observations: Tensor, function_dist: MultivariateNormal, *args,
                     x: Tensor | None = None, **kwargs) -> Tensor:
        """:math:`\\log p(y)` under the predictive of :meth:`marginal`; shape ``(..., n)``."""
        probs = self._probs(function_dist, x, 0)
        return probs.gather(-1, observations.long().unsqueeze(-1)).squeeze(-1).clamp_min(1e-300).log()
