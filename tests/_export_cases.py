"""Cases shared by the config and export tests: values other than the defaults for every parameter of every
schedule, initialiser and optimizer entry (a new entry without a case here fails
``test_every_entry_has_a_case_with_other_values``)."""

from __future__ import annotations

from typing import Any

# Every part of a config set, none at its default.
FULL = {
    "optimizer": {"name": "adamw", "lr": 3e-3, "betas": [0.85, 0.995], "eps": 1e-7},
    "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.01},
    "batch_size": 32,
    "init": {"name": "kaiming_normal", "mode": "fan_out"},
    "regularization": {"weight_decay": 1e-5, "l1": 1e-6, "dropout": 0.2},
    "grad_clip_norm": 1.0,
    "epochs": 7,
    "seed": 3,
}

SCHEDULE_PARAMS: dict[str, dict[str, Any]] = {
    "constant": {"warmup_fraction": 0.2},
    "step": {"step_size": 2, "gamma": 0.5, "warmup_fraction": 0.1},
    "multistep": {"milestones": [0.3, 0.6], "gamma": 0.2, "warmup_fraction": 0.1},
    "exponential": {"gamma": 0.8, "warmup_fraction": 0.1},
    "cosine": {"warmup_fraction": 0.1, "min_lr_ratio": 0.05},
    "cosine_restarts": {"t0_epochs": 1, "t_mult": 2, "min_lr_ratio": 0.1},
    "linear": {"warmup_fraction": 0.2, "end_factor": 0.1},
    "warmup_cosine": {"warmup_fraction": 0.25, "min_lr_ratio": 0.02},
    "onecycle": {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
    "polynomial": {"power": 2.0, "end_factor": 0.1, "warmup_fraction": 0.1},
    "plateau": {"factor": 0.5, "patience": 1, "threshold": 0.01},
}
INIT_PARAMS: dict[str, dict[str, Any]] = {
    "default": {},
    "uniform": {"scale": 0.1},
    "normal": {"std": 0.05},
    "xavier_uniform": {"nonlinearity": "tanh"},
    "xavier_normal": {"nonlinearity": "sigmoid"},
    "kaiming_uniform": {"nonlinearity": "leaky_relu", "mode": "fan_out"},
    "kaiming_normal": {"nonlinearity": "selu", "mode": "fan_out"},
    "orthogonal": {"gain": 0.5},
    "trunc_normal": {"std": 0.1},
}
# Learning rates that train the tiny problem of the tests in a few epochs, and every other hyperparameter changed.
OPTIMIZER_PARAMS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.3},
    "momentum": {"lr": 0.05, "momentum": 0.8},
    "nesterov": {"lr": 0.05, "momentum": 0.8},
    "adagrad": {"lr": 0.1, "eps": 1e-9, "lr_decay": 1e-3, "initial_accumulator_value": 0.1},
    "adadelta": {"lr": 2.0, "rho": 0.8, "eps": 1e-5},
    "rmsprop": {"lr": 3e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.5, "centered": True},
    "adam": {"lr": 1e-2, "betas": [0.8, 0.99], "eps": 1e-7, "amsgrad": True},
    "adamw": {"lr": 1e-2, "betas": [0.85, 0.995], "eps": 1e-7, "amsgrad": True},
    "nadam": {"lr": 1e-2, "betas": [0.85, 0.995], "eps": 1e-7, "momentum_decay": 1e-3},
    "nadamw": {"lr": 1e-2, "betas": [0.93, 0.995], "eps": 1e-7, "momentum_decay": 2e-3},
    "prodigy": {"lr": 0.5, "betas": [0.85, 0.99], "eps": 1e-7, "d0": 1e-2, "d_coef": 2.0,
                "use_bias_correction": True, "safeguard_warmup": True},
    "schedulefree_adamw": {"lr": 2e-2, "betas": [0.85, 0.99], "eps": 1e-7, "warmup_steps": 2,
                           "weight_lr_power": 1.0},
    "radam": {"lr": 0.1, "betas": [0.85, 0.995], "eps": 1e-7},
    "adamax": {"lr": 2e-2, "betas": [0.85, 0.995], "eps": 1e-7},
    "lbfgs": {"lr": 0.5, "max_iter": 3, "history_size": 5, "line_search_fn": "strong_wolfe"},
}
