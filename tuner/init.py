"""Weight initialisers, applied to every Linear, Conv and recurrent weight of a model.

Weights (tensors of dimension >= 2) get the chosen distribution; biases are set to zero, which is what the
named schemes assume. ``default`` keeps PyTorch's own initialisation, U(+-1/sqrt(fan_in)) for Linear and
Conv. Normalisation layers keep their unit scale and zero shift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tuner._registry import Registry
from tuner._validate import NON_NEGATIVE, POSITIVE, Bound, check_param

__all__ = ["InitInfo", "apply_init", "get_init", "list_inits"]

_NONLINEARITY = Bound("choice", choices=("relu", "leaky_relu", "tanh", "linear", "sigmoid", "selu"))
_INIT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d, nn.RNNBase, nn.Bilinear, nn.Embedding)


@dataclass(frozen=True)
class InitInfo:
    name: str
    fn: Callable[..., None] | None
    defaults: dict[str, Any]
    bounds: dict[str, Bound]
    description: str

    def check(self, params: dict[str, Any], where: str = "") -> dict[str, Any]:
        owner = f"the {self.name!r} initialiser"
        return {key: check_param(self.bounds, key, value, owner, where) for key, value in params.items()}


def _gain(nonlinearity: str) -> float:
    return nn.init.calculate_gain(nonlinearity)


def _trunc_normal(w: torch.Tensor, std: float) -> None:
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


_REGISTRY: Registry[InitInfo] = Registry("initialiser")
for _info in [
    InitInfo("default", None, {}, {}, "PyTorch's own initialisation (kaiming_uniform with a=sqrt(5))"),
    InitInfo("uniform", lambda w, scale: nn.init.uniform_(w, -scale, scale), {"scale": 0.05},
             {"scale": POSITIVE}, "U(-scale, scale)"),
    InitInfo("normal", lambda w, std: nn.init.normal_(w, 0.0, std), {"std": 0.02}, {"std": POSITIVE},
             "N(0, std^2)"),
    InitInfo("xavier_uniform", lambda w, nonlinearity: nn.init.xavier_uniform_(w, gain=_gain(nonlinearity)),
             {"nonlinearity": "relu"}, {"nonlinearity": _NONLINEARITY}, "Glorot uniform, gain for the nonlinearity"),
    InitInfo("xavier_normal", lambda w, nonlinearity: nn.init.xavier_normal_(w, gain=_gain(nonlinearity)),
             {"nonlinearity": "relu"}, {"nonlinearity": _NONLINEARITY}, "Glorot normal, gain for the nonlinearity"),
    InitInfo("kaiming_uniform",
             lambda w, nonlinearity, mode: nn.init.kaiming_uniform_(w, mode=mode, nonlinearity=nonlinearity),
             {"nonlinearity": "relu", "mode": "fan_in"},
             {"nonlinearity": _NONLINEARITY, "mode": Bound("choice", choices=("fan_in", "fan_out"))},
             "He uniform"),
    InitInfo("kaiming_normal",
             lambda w, nonlinearity, mode: nn.init.kaiming_normal_(w, mode=mode, nonlinearity=nonlinearity),
             {"nonlinearity": "relu", "mode": "fan_in"},
             {"nonlinearity": _NONLINEARITY, "mode": Bound("choice", choices=("fan_in", "fan_out"))},
             "He normal"),
    InitInfo("orthogonal", lambda w, gain: nn.init.orthogonal_(w, gain=gain), {"gain": 1.0},
             {"gain": NON_NEGATIVE}, "(semi-)orthogonal matrix times gain"),
    InitInfo("trunc_normal", lambda w, std: _trunc_normal(w, std), {"std": 0.02}, {"std": POSITIVE},
             "N(0, std^2) truncated at +-2 std"),
]:
    _REGISTRY.register(_info.name, _info)


def get_init(name: str) -> InitInfo:
    return _REGISTRY.get(name)


def list_inits() -> list[str]:
    return _REGISTRY.names()


@torch.no_grad()
def apply_init(model: nn.Module, name: str, params: dict[str, Any] | None = None) -> int:
    """Initialises the model in place; returns how many weight tensors were set.

    Example:
        >>> apply_init(nn.Linear(4, 2), "orthogonal")
        1
    """
    info = get_init(name)
    if info.fn is None:
        return 0
    kwargs = {**info.defaults, **(params or {})}
    count = 0
    for module in model.modules():
        if not isinstance(module, _INIT_LAYERS):
            continue
        for pname, param in module.named_parameters(recurse=False):
            if param.ndim >= 2:
                info.fn(param, **kwargs)
                count += 1
            elif pname.startswith("bias"):
                param.zero_()
    return count

