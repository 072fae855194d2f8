"""Weight initialisers, applied to every Linear, Conv and recurrent weight of a model.

Weights (tensors of dimension >= 2) get the chosen distribution; biases are set to zero, which is what the
named schemes assume. ``default`` keeps PyTorch's own initialisation, U(+-1/sqrt(fan_in)) for Linear and
Conv. Normalisation layers keep their unit scale and zero shift.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner._registry import Registry
from tuner._source import literal
from tuner._validate import NON_NEGATIVE, POSITIVE, Bound, check_param

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["InitInfo", "KerasInit", "apply_init", "get_init", "list_inits"]

_NONLINEARITY = Bound("choice", choices=("relu", "leaky_relu", "tanh", "linear", "sigmoid", "selu"))


def _init():
    """``torch.nn.init``, imported when a weight is initialised: reading the registry does not load PyTorch."""
    from torch.nn import init

    return init


def _init_layers() -> tuple[type, ...]:
    """The layers whose weights an initialiser sets."""
    from torch import nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
            nn.RNNBase, nn.Bilinear, nn.Embedding)


@dataclass(frozen=True)
class KerasInit:
    """What the Keras export writes for one initialiser (``InitInfo.keras_source``).

    Attributes:
        expr: a ``keras.initializers`` expression that draws from the same distribution as tuner's initialiser
            for a weight of the same fans. Keras stores a layer's weights transposed (a Dense kernel is
            ``(in, out)``, torch's Linear weight ``(out, in)``; a Conv kernel ``(k..., in, out)``), and computes
            the same fan_in and fan_out from them as torch does from its weights (embedding tables are the
            exception, which the export draws transposed).
        zero_biases: tuner sets the biases to zero (every named initialiser; ``default`` touches nothing).
        notes: how the expression follows from tuner's parameters; comments beside it.
        differences: what it does not reproduce, one sentence each (comments and CLI warnings).
    """

    expr: str
    zero_biases: bool = True
    notes: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class InitInfo:
    """One initialiser.

    Attributes:
        fn: ``fn(weight, **params)`` draws one weight tensor in place; ``None`` keeps PyTorch's own weights.
        source: what the Python export writes for ``fn``: one ``nn.init`` call on ``param`` as a template,
            ``{name}`` standing for the value of parameter ``name`` (``nn.init.normal_(param, 0.0, {std})``).
            It must draw exactly what ``fn`` draws, from the generator in the same order. ``None`` exactly
            when ``fn`` is.
        keras: what the Keras export writes (``keras_source``): ``keras(params)``, the defaults filled in.
    """

    name: str
    fn: Callable[..., None] | None
    defaults: dict[str, Any]
    bounds: dict[str, Bound]
    description: str
    source: str | None
    keras: Callable[[dict[str, Any]], KerasInit] | None = None

    def __post_init__(self) -> None:
        if (self.fn is None) != (self.source is None):
            raise ValueError(f"initialiser {self.name!r}: give the Python export's source exactly when fn is set")
        self.python_source({})  # every parameter of the template has a default
        self.keras_source({})

    def check(self, params: dict[str, Any], where: str = "") -> dict[str, Any]:
        owner = f"the {self.name!r} initialiser"
        return {key: check_param(self.bounds, key, value, owner, where) for key, value in params.items()}

    def python_source(self, params: dict[str, Any]) -> str | None:
        """The call that draws one weight ``param`` with ``params`` (checked) written in; ``None`` for ``default``."""
        if self.source is None:
            return None
        values = {key: literal(value) for key, value in {**self.defaults, **params}.items()}
        return self.source.format(**values)

    def keras_source(self, params: dict[str, Any]) -> KerasInit | None:
        """What the Keras export writes for this initialiser with ``params`` (checked); None: no translation."""
        return None if self.keras is None else self.keras({**self.defaults, **params})


def _gain(nonlinearity: str, negative_slope: float | None = None) -> float:
    """``torch.nn.init.calculate_gain`` for the nonlinearities an initialiser takes, without PyTorch (the Keras
    translations are checked as the registry is built)."""
    if nonlinearity == "leaky_relu":
        slope = 0.01 if negative_slope is None else negative_slope
        return math.sqrt(2.0 / (1 + slope**2))
    gains = {"linear": 1, "sigmoid": 1, "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 3.0 / 4}  # torch's types
    return gains[nonlinearity]


def _trunc_normal(w: torch.Tensor, std: float) -> None:
    _init().trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


# -- what the Keras export writes for each initialiser ------------------------------------------------------------
# Keras's VarianceScaling(scale, mode, distribution) draws U(+-sqrt(3 * scale / fan)) or N(0, scale / fan) with
# fan = fan_in, fan_out or their mean (fan_avg): torch's Glorot and He initialisers with scale = gain**2.
def _keras_default(p: dict[str, Any]) -> KerasInit:
    return KerasInit(
        'keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in", distribution="uniform")', zero_biases=False,
        notes=("PyTorch's default for Linear and Conv weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), kaiming_uniform "
               "with a=sqrt(5).",),
        differences=(
            "init default: tuner keeps PyTorch's own initialisation, which differs by layer; initializer() and "
            "configure(model) give every weight that of PyTorch's Linear and Conv layers, U(+-1/sqrt(fan_in)), "
            "but not PyTorch's other defaults: biases U(+-1/sqrt(fan_in)) (Keras's are zero), embeddings N(0, 1), "
            "recurrent weights U(+-1/sqrt(hidden_size)).",))


def _variance_scaling(gain: float, mode: str, distribution: str, how: str) -> KerasInit:
    scale = float(f"{gain * gain:.12g}")  # 2.0, not 2.0000000000000004: far below float32's precision
    return KerasInit(
        f"keras.initializers.VarianceScaling(scale={literal(scale)}, mode={literal(mode)}, "
        f"distribution={literal(distribution)})", notes=(f"scale = gain**2, {how}",))


def _keras_xavier(distribution: str) -> Callable[[dict[str, Any]], KerasInit]:
    def translate(p: dict[str, Any]) -> KerasInit:
        gain = _gain(p["nonlinearity"])
        return _variance_scaling(gain, "fan_avg", distribution,
                                 f"nn.init.calculate_gain({literal(p['nonlinearity'])}) = {gain!r}.")
    return translate


def _keras_kaiming(distribution: str) -> Callable[[dict[str, Any]], KerasInit]:
    def translate(p: dict[str, Any]) -> KerasInit:
        gain = _gain(p["nonlinearity"], 0)  # kaiming_*_(a=0), as tuner calls them
        return _variance_scaling(gain, p["mode"], distribution,
                                 f"nn.init.calculate_gain({literal(p['nonlinearity'])}, 0) = {gain!r}.")
    return translate


_REGISTRY: Registry[InitInfo] = Registry("initialiser")
_KAIMING_BOUNDS = {"nonlinearity": _NONLINEARITY, "mode": Bound("choice", choices=("fan_in", "fan_out"))}
for _info in [
    InitInfo("default", None, {}, {}, "PyTorch's own initialisation (kaiming_uniform with a=sqrt(5))", source=None,
             keras=_keras_default),
    InitInfo("uniform", lambda w, scale: _init().uniform_(w, -scale, scale), {"scale": 0.05},
             {"scale": POSITIVE}, "U(-scale, scale)", source="nn.init.uniform_(param, -{scale}, {scale})",
             keras=lambda p: KerasInit(f"keras.initializers.RandomUniform(minval=-{literal(p['scale'])}, "
                                       f"maxval={literal(p['scale'])})")),
    InitInfo("normal", lambda w, std: _init().normal_(w, 0.0, std), {"std": 0.02}, {"std": POSITIVE},
             "N(0, std^2)", source="nn.init.normal_(param, 0.0, {std})",
             keras=lambda p: KerasInit(f"keras.initializers.RandomNormal(mean=0.0, stddev={literal(p['std'])})")),
    InitInfo("xavier_uniform", lambda w, nonlinearity: _init().xavier_uniform_(w, gain=_gain(nonlinearity)),
             {"nonlinearity": "relu"}, {"nonlinearity": _NONLINEARITY}, "Glorot uniform, gain for the nonlinearity",
             source="nn.init.xavier_uniform_(param, gain=nn.init.calculate_gain({nonlinearity}))",
             keras=_keras_xavier("uniform")),
    InitInfo("xavier_normal", lambda w, nonlinearity: _init().xavier_normal_(w, gain=_gain(nonlinearity)),
             {"nonlinearity": "relu"}, {"nonlinearity": _NONLINEARITY}, "Glorot normal, gain for the nonlinearity",
             source="nn.init.xavier_normal_(param, gain=nn.init.calculate_gain({nonlinearity}))",
             keras=_keras_xavier("untruncated_normal")),
    InitInfo("kaiming_uniform",
             lambda w, nonlinearity, mode: _init().kaiming_uniform_(w, mode=mode, nonlinearity=nonlinearity),
             {"nonlinearity": "relu", "mode": "fan_in"}, dict(_KAIMING_BOUNDS), "He uniform",
             source="nn.init.kaiming_uniform_(param, mode={mode}, nonlinearity={nonlinearity})",
             keras=_keras_kaiming("uniform")),
    InitInfo("kaiming_normal",
             lambda w, nonlinearity, mode: _init().kaiming_normal_(w, mode=mode, nonlinearity=nonlinearity),
             {"nonlinearity": "relu", "mode": "fan_in"}, dict(_KAIMING_BOUNDS), "He normal",
             source="nn.init.kaiming_normal_(param, mode={mode}, nonlinearity={nonlinearity})",
             keras=_keras_kaiming("untruncated_normal")),
    InitInfo("orthogonal", lambda w, gain: _init().orthogonal_(w, gain=gain), {"gain": 1.0},
             {"gain": NON_NEGATIVE}, "(semi-)orthogonal matrix times gain",
             source="nn.init.orthogonal_(param, gain={gain})",
             keras=lambda p: KerasInit(f"keras.initializers.Orthogonal(gain={literal(p['gain'])})")),
    InitInfo("trunc_normal", lambda w, std: _trunc_normal(w, std), {"std": 0.02}, {"std": POSITIVE},
             "N(0, std^2) truncated at +-2 std",
             source="nn.init.trunc_normal_(param, std={std}, a=-2 * {std}, b=2 * {std})",
             keras=lambda p: KerasInit(f"keras.initializers.TruncatedNormal(mean=0.0, stddev={literal(p['std'])})",
                                       notes=("Keras's TruncatedNormal also cuts at 2 stddev.",))),
]:
    _REGISTRY.register(_info.name, _info)


def get_init(name: str) -> InitInfo:
    return _REGISTRY.get(name)


def list_inits() -> list[str]:
    return _REGISTRY.names()


def apply_init(model: nn.Module, name: str, params: dict[str, Any] | None = None) -> int:
    """Initialises the model in place; returns how many weight tensors were set. Frozen parameters
    (``requires_grad=False``: a pretrained part kept as it is) are left as they are.

    Example:
        >>> apply_init(nn.Linear(4, 2), "orthogonal")
        1
    """
    info = get_init(name)
    if info.fn is None:
        return 0
    import torch
    from torch import nn

    kwargs = {**info.defaults, **(params or {})}
    count, layers = 0, _init_layers()
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, layers):
                continue
            for pname, param in module.named_parameters(recurse=False):
                if not param.requires_grad:  # frozen (pretrained, kept as it is): not drawn anew
                    continue
                if param.ndim >= 2:
                    info.fn(param, **kwargs)
                    count += 1
                elif pname.startswith("bias"):
                    param.zero_()
            if isinstance(module, nn.Embedding) and module.padding_idx is not None and module.weight.requires_grad:
                module.weight[module.padding_idx].zero_()  # as nn.Embedding keeps it: padding gets no gradient
    return count

