r"""Memory and inducing-point selection for sequential dual GPs (Chang et al., ICML 2023).

- :func:`bayesian_leverage_scores`: :math:`\mathrm{BLS}_i = v_i\beta_i`, the ridge leverage score
  :math:`v_i/\sigma^2` for a Gaussian likelihood.
- :func:`select_memory`: a capped draw without replacement with probabilities proportional to the scores.
- :func:`select_inducing_points`: greedy pivoted Cholesky (maximal residual variance) over candidate
  locations, BoTorch's ``GreedyVarianceReduction``.
"""

from __future__ import annotations

import torch
from botorch.models.utils.inducing_point_allocators import GreedyVarianceReduction
from gpytorch.kernels import Kernel
from torch import Tensor

__all__ = ["bayesian_leverage_scores", "select_inducing_points", "select_memory"]


def bayesian_leverage_scores(variance: Tensor, beta: Tensor) -> Tensor:
    r""":math:`v_i\beta_i` for posterior marginal variances :math:`v_i` and site precisions :math:`\beta_i`."""
    return variance.clamp_min(0) * beta


def select_memory(scores: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices of ``min(num, n)`` points drawn without replacement, each draw proportional to its score.

    :param scores: ``n`` non-negative scores (all-zero scores give a uniform draw).
    :param num: how many to keep (0 allowed).
    :return: LongTensor of distinct indices.
    """
    if not isinstance(num, int) or num < 0:
        raise ValueError(f"num must be a non-negative int, got {num!r}")
    n = scores.numel()
    num = min(num, n)
    if num == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    weights = scores.detach().reshape(-1).double().cpu().clamp_min(0)
    if not torch.isfinite(weights).all():
        raise ValueError("scores contain NaN or inf")
    positive = int((weights > 0).sum())
    if positive < num:  # multinomial without replacement needs num positive weights
        weights = weights + (weights.sum() / max(n, 1) if positive else 1.0) * 1e-6 + (weights == 0) * 1e-12
    index = torch.multinomial(weights, num, replacement=False, generator=generator)
    return index.to(scores.device)


def select_inducing_points(covar_module: Kernel, candidates: Tensor, num_inducing: int) -> Tensor:
    """``num_inducing`` rows of ``candidates`` (``n x d``) by greedy variance reduction (pivoted Cholesky)
    under ``covar_module``, through BoTorch's ``GreedyVarianceReduction``. When the residual variance runs
    out first (repeated candidates), the rest are unused candidates, so the count is always ``num_inducing``."""
    if num_inducing > candidates.size(-2):
        raise ValueError(f"num_inducing={num_inducing} exceeds the {candidates.size(-2)} candidates")
    allocator = GreedyVarianceReduction()
    with torch.no_grad():
        z = allocator.allocate_inducing_points(candidates.detach(), covar_module, num_inducing, torch.Size([]))
        if z.size(-2) < num_inducing:
            # the residual variance ran out (repeated candidates): fill up with unused candidates
            used = (torch.cdist(candidates, z) == 0).any(-1)
            z = torch.cat([z, candidates[~used][: num_inducing - z.size(-2)]])
            if z.size(-2) < num_inducing:
                z = torch.cat([z, candidates[: num_inducing - z.size(-2)]])
    return z.to(candidates)
