"""Row gathers whose gradient is sparse, for parameters trained with ``torch.optim.SparseAdam``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gather_rows"]


def gather_rows(param: Tensor, rows: Tensor, sparse: bool = False) -> Tensor:
    """``param[rows]`` for a 2-D ``param``; with ``sparse`` its gradient is a sparse COO tensor.

    With ``sparse=True`` the backward pass touches only the distinct gathered rows, so an optimizer step
    on ``param`` (``torch.optim.SparseAdam``) costs O(len(rows)), not O(param.numel()).

    :param param: shape ``(n, c)``.
    :param rows: LongTensor of row indices, any shape ``(...)``.
    :param sparse: give ``param`` a sparse gradient.
    :return: shape ``(..., c)``.
    """
    if not sparse or not torch.is_grad_enabled():
        return param[rows]
    # one embedding row per distinct index keeps the sparse gradient's size at the number of distinct rows
    unique, inverse = torch.unique(rows, return_inverse=True)
    return torch.nn.functional.embedding(unique, param, sparse=True)[inverse]
