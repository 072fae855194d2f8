"""A training function shared by the MLflow and TensorBoard tests: every trial state in a few epochs."""

from __future__ import annotations

import tuner


def train_all_states(ctx: tuner.TrialContext) -> tuple[float, float]:
    """Three epochs; trial 1 diverges in its second epoch (pruned), trial 2 raises there (failed)."""
    value = 0.0
    for epoch in range(ctx.config.epochs):
        value = 0.5 + 0.1 * epoch + ctx.config.optimizer.lr
        if ctx.config.seed == 1 and epoch == 1:
            ctx.report(epoch, float("nan"))
        if ctx.config.seed == 2 and epoch == 1:
            raise RuntimeError("boom in epoch 2")
        ctx.report(epoch, value)
    return value, value / 2
