"""Weight initialisers: each sets weights to the documented distribution and zeroes biases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.init import apply_init, get_init, list_inits

FAN_IN, FAN_OUT = 256, 384  # Linear(256, 384): weight is (384, 256)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(FAN_IN, FAN_OUT)
        self.conv = nn.Conv2d(8, 16, kernel_size=3)
        self.norm = nn.LayerNorm(FAN_OUT)
        self.rnn = nn.GRU(4, 8)
        self.emb = nn.Embedding(10, 6)
        self.head = nn.Linear(FAN_OUT, 2)


def _net() -> Net:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for module in (net.fc, net.conv, net.head):
            module.bias.fill_(0.5)
        net.norm.weight.fill_(2.0)
        net.norm.bias.fill_(-1.0)
    return net


def _weights(net: nn.Module) -> list[torch.Tensor]:
    return [net.fc.weight, net.conv.weight, net.rnn.weight_ih_l0, net.rnn.weight_hh_l0, net.emb.weight,
            net.head.weight]


def _biases(net: nn.Module) -> list[torch.Tensor]:
    return [net.fc.bias, net.conv.bias, net.rnn.bias_ih_l0, net.rnn.bias_hh_l0, net.head.bias]


def _check_distribution(name: str, w: torch.Tensor, params: dict) -> None:
    """Checks the big fc weight against the documented distribution."""
    fan_in, fan_out = w.shape[1], w.shape[0]
    std, absmax = w.std().item(), w.abs().max().item()
    assert abs(w.mean().item()) < 0.05 * std + 1e-6 or name == "orthogonal"
    relu_gain = math.sqrt(2.0)
    if name == "uniform":
        scale = params.get("scale", 0.05)
        assert absmax <= scale
        assert absmax > 0.99 * scale
        assert std == pytest.approx(scale / math.sqrt(3), rel=0.03)
    elif name == "normal":
        assert std == pytest.approx(params.get("std", 0.02), rel=0.03)
        assert absmax > 3 * std  # not truncated
    elif name == "xavier_uniform":
        bound = relu_gain * math.sqrt(6 / (fan_in + fan_out))
        assert absmax <= bound + 1e-7
        assert absmax > 0.99 * bound
    elif name == "xavier_normal":
        assert std == pytest.approx(relu_gain * math.sqrt(2 / (fan_in + fan_out)), rel=0.03)
    elif name == "kaiming_uniform":
        bound = math.sqrt(6 / fan_in)
        assert absmax <= bound + 1e-7
        assert absmax > 0.99 * bound
    elif name == "kaiming_normal":
        assert std == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    elif name == "orthogonal":
        # (384, 256): the columns are orthonormal, W^T W = I.
        gram = w.T @ w
        assert torch.allclose(gram, torch.eye(fan_in), atol=1e-4)
    elif name == "trunc_normal":
        s = params.get("std", 0.02)
        assert absmax <= 2 * s + 1e-7
        assert absmax > 1.9 * s
        # A normal truncated at +-2 std has std 0.8796 * std.
        assert std == pytest.approx(0.8796 * s, rel=0.03)
    else:  # pragma: no cover - a new initialiser needs a check here
        pytest.fail(f"no distribution check for initialiser {name!r}")


@pytest.mark.parametrize("name", list_inits())
def test_initialiser(name: str) -> None:
    net = _net()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    count = apply_init(net, name)
    after = net.state_dict()
    # Normalisation layers are never touched.
    assert torch.equal(net.norm.weight, torch.full((FAN_OUT,), 2.0))
    assert torch.equal(net.norm.bias, torch.full((FAN_OUT,), -1.0))
    if name == "default":
        assert count == 0
        assert all(torch.equal(before[k], after[k]) for k in before)
        return
    assert count == len(_weights(net))
    for bias in _biases(net):
        assert torch.count_nonzero(bias) == 0
    for key in before:
        if key.startswith("norm."):
            continue
        if "weight" in key:
            assert not torch.equal(before[key], after[key]), key
    _check_distribution(name, net.fc.weight.detach(), get_init(name).defaults)


@pytest.mark.parametrize(
    ("name", "params"),
    [("uniform", {"scale": 0.3}), ("normal", {"std": 0.1}), ("trunc_normal", {"std": 0.5})],
)
def test_initialiser_parameters_are_used(name: str, params: dict) -> None:
    net = _net()
    apply_init(net, name, params)
    _check_distribution(name, net.fc.weight.detach(), params)


def test_kaiming_fan_out_and_conv_fan_in() -> None:
    net = _net()
    apply_init(net, "kaiming_normal", {"mode": "fan_out"})
    assert net.fc.weight.std().item() == pytest.approx(math.sqrt(2 / FAN_OUT), rel=0.03)
    apply_init(net, "kaiming_uniform")
    conv_fan_in = 8 * 3 * 3
    bound = math.sqrt(6 / conv_fan_in)
    assert net.conv.weight.abs().max().item() <= bound + 1e-7
    assert net.conv.weight.abs().max().item() > 0.95 * bound


def test_kaiming_nonlinearity_changes_gain() -> None:
    net = _net()
    apply_init(net, "kaiming_normal", {"nonlinearity": "linear"})
    assert net.fc.weight.std().item() == pytest.approx(math.sqrt(1 / FAN_IN), rel=0.03)


def test_xavier_tanh_gain() -> None:
    net = _net()
    apply_init(net, "xavier_normal", {"nonlinearity": "tanh"})
    expected = 5 / 3 * math.sqrt(2 / (FAN_IN + FAN_OUT))
    assert net.fc.weight.std().item() == pytest.approx(expected, rel=0.03)


def test_orthogonal_wide_matrix_and_gain() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 16)  # weight (16, 64): rows orthonormal, W W^T = I
    assert apply_init(layer, "orthogonal") == 1
    w = layer.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5)
    apply_init(layer, "orthogonal", {"gain": 2.0})
    w = layer.weight.detach()
    assert torch.allclose(w @ w.T, 4 * torch.eye(16), atol=1e-4)
    assert torch.count_nonzero(layer.bias) == 0


def test_apply_init_example() -> None:
    assert apply_init(nn.Linear(4, 2), "orthogonal") == 1


def test_model_without_init_layers_is_untouched() -> None:
    model = nn.Sequential(nn.LayerNorm(4), nn.ReLU())
    assert apply_init(model, "normal") == 0
    assert torch.equal(model[0].weight, torch.ones(4))


@pytest.mark.parametrize("name", list_inits())
def test_registry_entries(name: str) -> None:
    info = get_init(name)
    assert info.name == name
    assert set(info.defaults) == set(info.bounds)
    assert info.check(dict(info.defaults)) == info.defaults
    assert (info.fn is None) == (name == "default")
    with pytest.raises(ConfigError) as excinfo:
        info.check({"bogus": 1})
    message = str(excinfo.value)
    assert f"the {name!r} initialiser takes no parameter 'bogus'" in message
    assert f"Valid parameters: {', '.join(sorted(info.bounds)) or 'none'}." in message


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("uniform", {"scale": 0.0},
         "'scale' parameter of the 'uniform' initialiser must be a float in the range (0, inf)"),
        ("normal", {"std": -1.0}, "'std' parameter of the 'normal' initialiser must be a float"),
        ("kaiming_normal", {"mode": "fan_avg"}, "must be one of 'fan_in', 'fan_out'"),
        ("xavier_uniform", {"nonlinearity": "gelu"}, "must be one of 'relu', 'leaky_relu', 'tanh'"),
        ("orthogonal", {"gain": -1.0}, "in the range [0, inf)"),
    ],
)
def test_bad_parameters(name: str, params: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        get_init(name).check(params, where="init")
    assert expected in str(excinfo.value)
    assert str(excinfo.value).startswith("init: ")


def test_unknown_initialiser() -> None:
    with pytest.raises(ConfigError) as excinfo:
        apply_init(nn.Linear(2, 2), "xavier")
    message = str(excinfo.value)
    assert "Unknown initialiser 'xavier'" in message
    assert "Did you mean 'xavier_normal'?" in message or "Did you mean 'xavier_uniform'?" in message
    assert all(name in message for name in list_inits())


@pytest.mark.parametrize("params", [{}, {"scale": 0.3}, {"std": 1e-3}, {"nonlinearity": "tanh"}, {"mode": "fan_out"},
                                    {"gain": 2.5}])
@pytest.mark.parametrize("name", list_inits())
def test_python_source_draws_what_fn_draws(name: str, params: dict) -> None:
    """The call the Python export writes for a weight, run on its own, draws the same numbers as ``fn``."""
    info = get_init(name)
    params = {key: value for key, value in params.items() if key in info.bounds}
    code = info.python_source(params)
    if info.fn is None:
        assert code is None
        return
    assert code.startswith("nn.init.") and "param" in code
    torch.manual_seed(3)
    expected = torch.empty(12, 5)
    info.fn(expected, **{**info.defaults, **params})
    torch.manual_seed(3)
    param = torch.empty(12, 5)
    exec(code, {"nn": nn, "param": param})  # the exported code under test
    assert torch.equal(param, expected)


def test_an_initialiser_cannot_be_made_without_its_export_source() -> None:
    from tuner.init import InitInfo

    def draw(w: torch.Tensor, std: float) -> None:
        nn.init.normal_(w, 0.0, std)

    with pytest.raises(TypeError, match="source"):
        InitInfo("mine", draw, {"std": 0.1}, {}, "N(0, std^2)")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="source exactly when fn is set"):
        InitInfo("mine", draw, {"std": 0.1}, {}, "N(0, std^2)", source=None)
    with pytest.raises(ValueError, match="source exactly when fn is set"):
        InitInfo("mine", None, {}, {}, "PyTorch's", source="nn.init.zeros_(param)")
    with pytest.raises(KeyError, match="scale"):  # the template names a parameter without a default
        InitInfo("mine", draw, {"std": 0.1}, {}, "N(0, std^2)", source="nn.init.normal_(param, 0.0, {scale})")
    info = InitInfo("mine", draw, {"std": 0.1}, {}, "N(0, std^2)", source="nn.init.normal_(param, 0.0, {std})")
    assert info.python_source({"std": 0.1 + 0.2}) == "nn.init.normal_(param, 0.0, 0.30000000000000004)"


@pytest.mark.parametrize("nonlinearity", ["relu", "leaky_relu", "tanh", "linear", "sigmoid", "selu"])
def test_gains_are_torchs(nonlinearity: str) -> None:
    """The registry computes gains without PyTorch (its Keras translations are checked as it is built); they are
    ``nn.init.calculate_gain``'s, with the default slope and with the slope 0 the He initialisers use."""
    from tuner.init import _NONLINEARITY, _gain

    assert nonlinearity in _NONLINEARITY.choices
    for ours, torchs in ((_gain(nonlinearity), nn.init.calculate_gain(nonlinearity)),
                         (_gain(nonlinearity, 0), nn.init.calculate_gain(nonlinearity, 0))):
        assert repr(ours) == repr(torchs)  # the same number, written the same (the Keras export's notes show it)
