"""Input checks shared by gpkit's models: a clear error naming the argument, never a silent wrong answer."""

from __future__ import annotations

import torch
from torch import Tensor


def check_training_data(train_X: Tensor, train_Y: Tensor, names: tuple[str, str] = ("train_X", "train_Y")) -> tuple[Tensor, Tensor]:
    """Check BoTorch-shaped training data.

    :param train_X: ``n x d`` floating-point inputs, finite, ``n, d >= 1``.
    :param train_Y: ``n x 1`` (or ``n``) finite targets.
    :param names: the caller's names of the two arguments, used in the error messages.
    :return: ``train_X`` and ``train_Y`` (as ``n x 1``) in their common floating dtype, on ``train_X``'s device.
    """
    x_name, y_name = names
    if not isinstance(train_X, Tensor):
        raise TypeError(f"{x_name} must be a torch.Tensor, got {type(train_X).__name__}")
    if not isinstance(train_Y, Tensor):
        raise TypeError(f"{y_name} must be a torch.Tensor, got {type(train_Y).__name__}")
    if train_X.dim() != 2 or train_X.shape[0] == 0 or train_X.shape[1] == 0:
        raise ValueError(f"{x_name} must be a non-empty n x d tensor, got shape {tuple(train_X.shape)}")
    if not torch.is_floating_point(train_X):
        raise TypeError(f"{x_name} must be floating point, got {train_X.dtype}")
    if train_Y.dim() == 1:
        train_Y = train_Y.unsqueeze(-1)
    if train_Y.shape != (train_X.shape[0], 1):
        raise ValueError(
            f"{y_name} must have shape n x 1 (or n) with n={train_X.shape[0]} (the rows of {x_name}), "
            f"got {tuple(train_Y.shape)}"
        )
    dtype = torch.promote_types(train_X.dtype, train_Y.dtype) if torch.is_floating_point(train_Y) else train_X.dtype
    train_X = train_X.to(dtype=dtype)
    train_Y = train_Y.to(dtype=dtype, device=train_X.device)
    if not torch.isfinite(train_X).all():
        raise ValueError(f"{x_name} contains NaN or inf")
    if not torch.isfinite(train_Y).all():
        raise ValueError(f"{y_name} contains NaN or inf")
    return train_X, train_Y
