"""Exports a ``TrainConfig`` in forms that need no tuner to use."""

from tuner.export._python import python_snippet

__all__ = ["python_snippet"]
