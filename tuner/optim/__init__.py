"""Optimizer and learning-rate schedule registries."""

from tuner.optim._optimizers import (
    OptimizerInfo,
    build_optimizer,
    get_optimizer,
    list_optimizers,
    split_decay_params,
)
from tuner.optim._schedules import ScheduleInfo, build_scheduler, get_schedule, list_schedules, lr_factors

__all__ = [
    "OptimizerInfo",
    "ScheduleInfo",
    "build_optimizer",
    "build_scheduler",
    "get_optimizer",
    "get_schedule",
    "list_optimizers",
    "list_schedules",
    "lr_factors",
    "split_decay_params",
]
