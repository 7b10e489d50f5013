"""Element-wise invertible flows: the base class and composition.

A flow :math:`G_\theta` maps a real value to a real value, invertibly, with parameters :math:`\theta`. A flow
module holds ``num_flows`` independent flows (one per output, e.g. per class) that act on the last dimension of
their input. Parameters are handled in an unconstrained ("raw") form of shape ``(..., num_flows, P)``; the flow
maps them to their constrained values (positivity by softplus). Without ``raw`` the flow uses its own constant
raw parameters (``nn.Parameter`` of shape ``num_flows x P``, initialised at the identity); an input-dependent
network (:class:`~gpkit.flows.InputDependentFlow`) instead supplies ``raw`` per input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = ["ComposedFlow", "ElementwiseFlow", "inverse_softplus"]


def inverse_softplus(value: float) -> float:
    """The raw value whose softplus is ``value`` (> 0)."""
    return value + math.log(-math.expm1(-value))


class ElementwiseFlow(nn.Module):
    """Base class: ``num_flows`` element-wise flows with parameters ``parameter_names``.

    Subclasses set ``parameter_names``, ``positive`` (names kept positive by softplus) and ``identity`` (the
    constrained parameter values at which the flow is the identity), and implement ``_forward``, ``_inverse``
    and ``_log_derivative`` on constrained parameters passed as keyword arguments.

    :param num_flows: number of independent flows (the size of the last input dimension they act on).
    """

    parameter_names: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()
    identity: ClassVar[dict[str, float]] = {}

    def __init__(self, num_flows: int = 1) -> None:
        super().__init__()
        if not isinstance(num_flows, int) or num_flows < 1:
            raise ValueError(f"num_flows must be a positive int, got {num_flows!r}")
        self.num_flows = num_flows
        self.raw_parameters = nn.Parameter(self.identity_raw().expand(num_flows, -1).clone())

    @property
    def num_parameters(self) -> int:
        """Parameters per flow, :math:`P`."""
        return len(self.parameter_names)

    def identity_raw(self) -> Tensor:
        """Raw parameters (shape ``P``) at which the flow is the identity."""
        values = [
            inverse_softplus(self.identity[name]) if name in self.positive else self.identity[name]
            for name in self.parameter_names
        ]
        return torch.tensor(values, dtype=torch.get_default_dtype())

    def constrained(self, raw: Tensor | None = None) -> dict[str, Tensor]:
        """Constrained parameters, each of shape ``raw.shape[:-1]`` (``(..., num_flows)``)."""
        raw = self.raw_parameters if raw is None else raw
        if raw.size(-1) != self.num_parameters:
            raise ValueError(f"raw parameters must have {self.num_parameters} in the last dim, got {tuple(raw.shape)}")
        return self.constrain(raw.transpose(-1, -2).unbind(-2))  # one stack in the backward, not P selects

    def constrain(self, values: Sequence[Tensor]) -> dict[str, Tensor]:
        """The constrained parameters from the ``P`` raw values (one tensor per parameter, in
        ``parameter_names`` order)."""
        return {
            name: nn.functional.softplus(value) if name in self.positive else value
            for name, value in zip(self.parameter_names, values, strict=True)
        }

    def forward(self, f: Tensor, raw: Tensor | None = None) -> Tensor:
        """:math:`G(f)`; ``f`` of shape ``(..., num_flows)`` broadcast against ``raw`` ``(..., num_flows, P)``."""
        return self._forward(f, **self.constrained(raw))

    def inverse(self, y: Tensor, raw: Tensor | None = None) -> Tensor:
        """:math:`G^{-1}(y)`."""
        return self._inverse(y, **self.constrained(raw))

    def log_abs_det_jacobian(self, f: Tensor, raw: Tensor | None = None) -> Tensor:
        r""":math:`\log |G'(f)|` element-wise (the Jacobian of an element-wise flow is diagonal)."""
        return self._log_derivative(f, **self.constrained(raw))

    def _forward(self, f: Tensor, **params: Tensor) -> Tensor:
        raise NotImplementedError

    def _inverse(self, y: Tensor, **params: Tensor) -> Tensor:
        raise NotImplementedError

    def _log_derivative(self, f: Tensor, **params: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_flows={self.num_flows}"


class ComposedFlow(ElementwiseFlow):
    """:math:`G = G_K \\circ \\dots \\circ G_1`: the flows applied in the given order.

    The raw parameters are the concatenation of the parts' along the last dimension (``P = sum P_k``).

    :param flows: element-wise flows with the same ``num_flows``.
    """

    def __init__(self, flows: Sequence[ElementwiseFlow]) -> None:
        flows = list(flows)
        if not flows or not all(isinstance(g, ElementwiseFlow) for g in flows):
            raise TypeError("flows must be a non-empty sequence of ElementwiseFlow modules")
        if len({g.num_flows for g in flows}) != 1:
            raise ValueError(f"all flows need the same num_flows, got {[g.num_flows for g in flows]}")
        nn.Module.__init__(self)
        self.num_flows = flows[0].num_flows
        self.flows = nn.ModuleList(flows)
        self.parameter_names = tuple(f"{k}.{name}" for k, g in enumerate(flows) for name in g.parameter_names)

    @property
    def raw_parameters(self) -> Tensor:  # the parts' own constant parameters, concatenated
        return torch.cat([g.raw_parameters for g in self.flows], dim=-1)

    def identity_raw(self) -> Tensor:
        return torch.cat([g.identity_raw() for g in self.flows])

    def split_raw(self, raw: Tensor | None) -> list[Tensor | None]:
        if raw is None:
            return [None] * len(self.flows)
        if raw.size(-1) != self.num_parameters:
            raise ValueError(f"raw parameters must have {self.num_parameters} in the last dim, got {tuple(raw.shape)}")
        return list(raw.split([g.num_parameters for g in self.flows], dim=-1))

    def forward(self, f: Tensor, raw: Tensor | None = None) -> Tensor:
        for g, r in zip(self.flows, self.split_raw(raw)):
            f = g(f, r)
        return f

    def inverse(self, y: Tensor, raw: Tensor | None = None) -> Tensor:
        for g, r in reversed(list(zip(self.flows, self.split_raw(raw)))):
            y = g.inverse(y, r)
        return y

    def log_abs_det_jacobian(self, f: Tensor, raw: Tensor | None = None) -> Tensor:
        total = 0.0
        for g, r in zip(self.flows, self.split_raw(raw)):
            total = total + g.log_abs_det_jacobian(f, r)
            f = g(f, r)
        return total
