"""Input checks shared by gpkit's models: a clear error naming the argument, never a silent wrong answer."""

from __future__ import annotations

import torch
from torch import Tensor


def check_training_data(train_X: Tensor, train_Y: Tensor) -> tuple[Tensor, Tensor]:
    """Check BoTorch-shaped training data.

    :param train_X: ``n x d`` floating-point inputs, finite, ``n >= 1``.
    :param train_Y: ``n x 1`` (or ``n``) finite targets.
    :return: ``train_X`` and ``train_Y`` as ``n x 1`` in ``train_X``'s dtype and device.
    """
    if not isinstance(train_X, Tensor):
        raise TypeError(f"train_X must be a torch.Tensor, got {type(train_X).__name__}")
    if not isinstance(train_Y, Tensor):
        raise TypeError(f"train_Y must be a torch.Tensor, got {type(train_Y).__name__}")
    if train_X.dim() != 2 or train_X.shape[0] == 0:
        raise ValueError(f"train_X must be a non-empty n x d tensor, got shape {tuple(train_X.shape)}")
    if not torch.is_floating_point(train_X):
        raise TypeError(f"train_X must be floating point, got {train_X.dtype}")
    if train_Y.dim() == 1:
        train_Y = train_Y.unsqueeze(-1)
    if train_Y.shape != (train_X.shape[0], 1):
        raise ValueError(f"train_Y must have shape n x 1 (or n) with n={train_X.shape[0]}, got {tuple(train_Y.shape)}")
    if not torch.isfinite(train_X).all():
        raise ValueError("train_X contains NaN or inf")
    if not torch.isfinite(train_Y).all():
        raise ValueError("train_Y contains NaN or inf")
    return train_X, train_Y.to(train_X)
