"""L1/L2 penalties on a model with known weights, and setting dropout rates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuner.regularization import dropout_modules, l1_penalty, l2_penalty, set_dropout


def _known_model() -> nn.Sequential:
    """Weights [[1, -2], [3, 0]] and [[-1, 1]]; biases and a LayerNorm that the penalties must skip."""
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([10.0, -10.0]))
        model[1].weight.fill_(5.0)
        model[1].bias.fill_(7.0)
        model[2].weight.copy_(torch.tensor([[-1.0, 1.0]]))
        model[2].bias.fill_(100.0)
    return model


def test_l1_penalty_value() -> None:
    model = _known_model()
    # sum |w| over weight matrices = (1 + 2 + 3 + 0) + (1 + 1) = 8
    penalty = l1_penalty(model, 0.5)
    assert isinstance(penalty, torch.Tensor)
    assert penalty.item() == pytest.approx(4.0)


def test_l2_penalty_value() -> None:
    model = _known_model()
    # sum w^2 = (1 + 4 + 9 + 0) + (1 + 1) = 16; penalty = wd / 2 * 16
    penalty = l2_penalty(model, 0.1)
    assert isinstance(penalty, torch.Tensor)
    assert penalty.item() == pytest.approx(0.8)


def test_zero_strength_is_plain_zero() -> None:
    model = _known_model()
    assert l1_penalty(model, 0.0) == 0.0
    assert l2_penalty(model, 0.0) == 0.0
    assert not isinstance(l1_penalty(model, 0.0), torch.Tensor)


def test_l2_gradient_is_weight_decay() -> None:
    model = _known_model()
    l2_penalty(model, 0.1).backward()
    assert torch.allclose(model[0].weight.grad, 0.1 * model[0].weight.detach())
    assert torch.allclose(model[2].weight.grad, 0.1 * model[2].weight.detach())
    assert model[0].bias.grad is None and model[1].weight.grad is None


def test_l1_gradient_is_sign() -> None:
    model = _known_model()
    l1_penalty(model, 2.0).backward()
    assert torch.equal(model[0].weight.grad, 2.0 * torch.sign(model[0].weight.detach()))
    assert model[2].bias.grad is None


def test_penalties_skip_frozen_weights() -> None:
    model = _known_model()
    model[0].weight.requires_grad_(False)
    assert l1_penalty(model, 1.0).item() == pytest.approx(2.0)
    assert l2_penalty(model, 2.0).item() == pytest.approx(2.0)


def test_set_dropout_sets_every_dropout_module() -> None:
    model = nn.Sequential(
        nn.Linear(4, 4), nn.Dropout(0.1), nn.ReLU(),
        nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Dropout1d(0.2)),
        nn.AlphaDropout(0.3), nn.Linear(4, 1),
    )
    assert len(dropout_modules(model)) == 4
    assert set_dropout(model, 0.25) == 4
    assert [m.p for m in dropout_modules(model)] == [0.25] * 4
    assert model[1].p == 0.25 and model[3][1].p == 0.25 and model[3][2].p == 0.25 and model[4].p == 0.25


def test_set_dropout_changes_behaviour() -> None:
    model = nn.Sequential(nn.Dropout(0.5))
    set_dropout(model, 0.0)
    model.train()
    x = torch.ones(1000)
    assert torch.equal(model(x), x)
    set_dropout(model, 0.9)
    torch.manual_seed(0)
    zeros = (model(x) == 0).float().mean().item()
    assert 0.85 < zeros < 0.95


def test_set_dropout_without_dropout_modules() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert set_dropout(model, 0.3) == 0
    assert dropout_modules(model) == []
