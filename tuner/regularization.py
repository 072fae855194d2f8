"""L1 as an explicit penalty, L2 as a penalty for optimizers without weight decay, dropout on the model."""

from __future__ import annotations

import torch
from torch import nn

from tuner.optim import split_decay_params

__all__ = ["l1_penalty", "l2_penalty", "set_dropout", "dropout_modules"]

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def l1_penalty(model: nn.Module, strength: float) -> torch.Tensor | float:
    """``strength * sum(|w|)`` over the weights (not biases or norm scales); 0.0 when strength is 0."""
    if strength == 0.0:
        return 0.0
    decay, _ = split_decay_params(model)
    return strength * sum(p.abs().sum() for p in decay)


def l2_penalty(model: nn.Module, weight_decay: float) -> torch.Tensor | float:
    """``weight_decay / 2 * sum(w^2)``: the loss term whose gradient is SGD-style weight decay."""
    if weight_decay == 0.0:
        return 0.0
    decay, _ = split_decay_params(model)
    return 0.5 * weight_decay * sum(p.pow(2).sum() for p in decay)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _DROPOUT)]


def set_dropout(model: nn.Module, p: float) -> int:
    """Sets the rate of every dropout module; returns how many were set."""
    modules = dropout_modules(model)
    for module in modules:
        module.p = p
    return len(modules)
