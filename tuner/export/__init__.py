"""Exports a ``TrainConfig`` in forms that need no tuner to use."""

from __future__ import annotations

from typing import Any

__all__ = ["python_snippet", "keras_snippet", "keras_differences", "export_text", "export_warnings", "FORMATS"]

FORMATS = ("yaml", "json", "python", "keras")
# The script writers load PyTorch (they read its optimizers' defaults): loaded when a script is written, so that a
# YAML or JSON export (``study export --no-confirm``) starts without it.
_LAZY = {"python_snippet": "tuner.export._python", "keras_snippet": "tuner.export._keras",
         "keras_differences": "tuner.export._keras"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_text(rec: Any, metadata: dict[str, Any], fmt: str, title: str) -> str:
    """A recommendation as the text of an export file: YAML or JSON (a TrainConfig with ``metadata``, for
    ``tuner.load_config``), a plain-torch Python script or a Keras 3 one, headed by ``title``."""
    if fmt in ("python", "keras"):
        value = metadata.get("value")
        shown = f"{metadata['metric']} {value:.4g}" if isinstance(value, float) else ""
        from tuner.export._keras import keras_snippet
        from tuner.export._python import python_snippet

        snippet = python_snippet if fmt == "python" else keras_snippet
        text = snippet(rec.config, title=f"{title}, trial {rec.trial}, {shown} ({rec.source})")
    elif fmt == "json":
        text = rec.config.to_json(**metadata)
    elif fmt == "yaml":
        text = rec.config.to_yaml(**metadata)
    else:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return text if text.endswith("\n") else text + "\n"


def export_warnings(config: Any, fmt: str) -> list[str]:
    """What the export in ``fmt`` cannot do as tuner does, one line each: Keras's differences; none for the
    others, which are exact."""
    if fmt != "keras":
        return []
    from tuner.export._keras import keras_differences

    return keras_differences(config)
