"""Exports a ``TrainConfig`` in forms that need no tuner to use."""

from __future__ import annotations

from typing import Any

from tuner.export._python import python_snippet

__all__ = ["python_snippet", "export_text", "FORMATS"]

FORMATS = ("yaml", "json", "python")


def export_text(rec: Any, metadata: dict[str, Any], fmt: str, title: str) -> str:
    """A recommendation as the text of an export file: YAML or JSON (a TrainConfig with ``metadata``, for
    ``tuner.load_config``) or a plain-torch Python script headed by ``title``."""
    if fmt == "python":
        value = metadata.get("value")
        shown = f"{metadata['metric']} {value:.4g}" if isinstance(value, float) else ""
        text = python_snippet(rec.config, title=f"{title}, trial {rec.trial}, {shown} ({rec.source})")
    elif fmt == "json":
        text = rec.config.to_json(**metadata)
    elif fmt == "yaml":
        text = rec.config.to_yaml(**metadata)
    else:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return text if text.endswith("\n") else text + "\n"
