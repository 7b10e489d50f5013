"""Input-dependent flow parameters: :math:`\\theta(x) = \\theta_0 + \\mathrm{NN}(x)` from an MLP with dropout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gpkit.flows.base import ElementwiseFlow

__all__ = ["InputDependentFlow"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class InputDependentFlow(nn.Module):
    r"""Element-wise flows whose parameters depend on the input: raw parameters
    :math:`\theta(x) = \theta_0 + \mathrm{NN}(x)` of shape ``(..., n, num_flows, P)``.

    :math:`\theta_0` are the wrapped flow's own constant raw parameters (initialised at the identity) and the
    MLP's last layer starts at zero, so the flows start exactly at the identity for every input;
    :meth:`prefit_identity` fits any other network to output the identity. With ``hidden=()`` the network is
    linear. Dropout after every hidden layer regularises the network and allows MC-dropout prediction.

    :param flow: the element-wise flow (``num_flows`` flows, ``P`` parameters each).
    :param input_dim: :math:`d`, the size of the inputs ``x``.
    :param hidden: hidden layer widths.
    :param dropout: dropout probability after each hidden layer.
    :param activation: ``"tanh"`` or ``"relu"``.
    :param weight_decay: :math:`\lambda` of the penalty :math:`\frac{\lambda}{2} \|W\|^2` (:meth:`penalty`)
        on the network's weights (not biases).
    :param offset_penalty: :math:`\gamma` of the penalty :math:`\frac{\gamma}{2} \|\mathrm{NN}(x)\|^2` per
        input on the network's output (a Gaussian prior centring every input's flows on the shared
        :math:`\theta_0`): input dependence of the flows must pay for itself, so the network cannot cheaply
        classify alone (the NN-bypass pitfall). 0 switches it off.
    """

    def __init__(
        self,
        flow: ElementwiseFlow,
        input_dim: int,
        hidden: Sequence[int] = (50,),
        dropout: float = 0.5,
        activation: str = "tanh",
        weight_decay: float = 1e-5,
        offset_penalty: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(flow, ElementwiseFlow):
            raise TypeError(f"flow must be an ElementwiseFlow, got {type(flow).__name__}")
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive int, got {input_dim!r}")
        if isinstance(hidden, str) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of layer widths, e.g. (50,), got {hidden!r}")
        hidden = tuple(hidden)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"hidden must be a sequence of positive ints (layer widths), got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if offset_penalty < 0:
            raise ValueError(f"offset_penalty must be >= 0, got {offset_penalty!r}")
        self.offset_penalty = float(offset_penalty)
        self.flow = flow
        self.input_dim, self.weight_decay = input_dim, float(weight_decay)
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = h
        out = nn.Linear(width, flow.num_flows * flow.num_parameters)
        nn.init.zeros_(out.weight), nn.init.zeros_(out.bias)
        self.network = nn.Sequential(*layers, out)

    @property
    def num_flows(self) -> int:
        return self.flow.num_flows

    def _check(self, x: Tensor) -> None:
        if x.size(-1) != self.input_dim:
            raise ValueError(f"x must have {self.input_dim} columns, got shape {tuple(x.shape)}")

    def _unflatten(self, out: Tensor) -> Tensor:
        # the network's outputs are parameter-major, so each parameter's (..., n, num_flows) slice is contiguous
        return out.unflatten(-1, (self.flow.num_parameters, self.flow.num_flows)).transpose(-1, -2)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's output at ``x`` (after dropout; ``x`` itself for a linear network)."""
        self._check(x)
        return self.network[:-1](x)

    def offset(self, x: Tensor) -> Tensor:
        """The network's output :math:`\mathrm{NN}(x)` at ``x`` (``(..., n, d)``): shape ``(..., n, num_flows, P)``."""
        self._check(x)
        return self._unflatten(self.network(x))

    def raw(self, x: Tensor, features: Tensor | None = None) -> Tensor:
        """Raw flow parameters :math:`\theta_0 + \mathrm{NN}(x)` at ``x`` (``(..., n, d)``): shape
        ``(..., n, num_flows, P)``.

        :param features: :meth:`features` at ``x`` when already computed (the hidden layers then do not run again).
        """
        h = self.features(x) if features is None else features
        out = self.network[-1]
        theta0 = self.flow.raw_parameters.t().reshape(-1)  # parameter-major, like the outputs
        return self._unflatten(nn.functional.linear(h, out.weight, out.bias + theta0))  # theta0 in the bias

    def forward(self, f: Tensor, x: Tensor) -> Tensor:
        """:math:`G_{\\theta(x)}(f)` for ``f`` of shape ``(..., n, num_flows)``."""
        return self.flow(f, self.raw(x))

    def inverse(self, y: Tensor, x: Tensor) -> Tensor:
        return self.flow.inverse(y, self.raw(x))

    def log_abs_det_jacobian(self, f: Tensor, x: Tensor) -> Tensor:
        return self.flow.log_abs_det_jacobian(f, self.raw(x))

    def penalty(self, x: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        r""":math:`\frac{\lambda}{2} \sum W^2` over the network's weight matrices, plus, given a batch ``x`` (or
        its :meth:`features`), :math:`\frac{\gamma}{2}` times the batch mean of :math:`\|\mathrm{NN}(x)\|^2`.

        With the last layer :math:`\mathrm{NN}(x) = W h + c`, :math:`\|W h + c\|^2 = h^\top W^\top W h + 2 c^\top W h
        + \|c\|^2` is computed from the hidden features :math:`h`, never from the ``num_flows x P`` outputs.
        """
        weights = [m.weight for m in self.network.modules() if isinstance(m, nn.Linear)]
        out = 0.5 * self.weight_decay * sum(w.pow(2).sum() for w in weights)
        if (x is not None or features is not None) and self.offset_penalty > 0:
            h = self.features(x) if features is None else features
            W, c = self.network[-1].weight, self.network[-1].bias
            squares = ((h @ (W.t() @ W)) * h).sum(-1) + 2 * (h @ (W.t() @ c)) + c.dot(c)
            out = out + 0.5 * self.offset_penalty * squares.mean()
        return out

    def prefit_identity(self, x: Tensor, max_iter: int = 300, lr: float = 0.01) -> InputDependentFlow:
        """Train the network (with dropout on) so that :math:`\\theta(x) = \\theta_0` on the inputs ``x``, i.e.
        the flows start at the identity; by :func:`gpkit.fit` on the mean squared offset. A network that
        already outputs zero (the default initialisation) is left as it is."""
        import gpkit

        with torch.no_grad():
            if self.network(x).abs().max() == 0:
                return self
        gpkit.fit(_IdentityFit(self, x), max_iter=max_iter, lr=lr, tol=0.0, progress=False)
        return self


class _IdentityFit(nn.Module):
    """The pre-fit objective of :meth:`InputDependentFlow.prefit_identity`."""

    def __init__(self, flow: InputDependentFlow, x: Tensor) -> None:
        super().__init__()
        self.network = flow.network
        self.x = x

    def loss(self) -> Tensor:
        return self.network(self.x).pow(2).mean()
