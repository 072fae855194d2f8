"""Opening a stored study to read or continue it, and saying what kind it is: light (Optuna and the storage
only), so that a command naming a study that is not there says so before PyTorch is loaded."""

from __future__ import annotations

from typing import Any

import optuna

from tuner._secrets import mask_url
from tuner.errors import StudyError
from tuner.study._record import StudyKey
from tuner.study._spec import StudySpec
from tuner.study._storage import default_storage, load_named

__all__ = ["study_kind", "describe_kind", "stored_spec", "open_study"]


def study_kind(user_attrs: dict[str, Any], n_directions: int = 1) -> str:
    """``tuner`` (created from a spec), ``tune`` (by ``tuner.tune()``), ``optuna`` (by Optuna or another
    tool) or ``multi-objective``."""
    # tuner's own studies may have several objectives (``objectives: [accuracy, train_seconds]``)
    if StudyKey.SPEC in user_attrs:
        return "tuner"
    if StudyKey.TUNE in user_attrs:
        return "tune"
    if n_directions > 1:
        return "multi-objective"
    return "optuna"


def describe_kind(study: Any) -> str:
    """How a study that tuner did not create is described in an error message."""
    directions = getattr(study, "directions", None) or [None]
    kind = study_kind(study.user_attrs, len(directions))
    if kind == "multi-objective":
        return (f"a study of {len(directions)} objectives that tuner did not create (it has no tuner spec; tuner's "
                f"own come from `--objectives accuracy,train_seconds`)")
    if kind == "tune":
        return "a study of tuner.tune()"
    if kind == "optuna":
        return "a plain Optuna study, not created by tuner (it has no tuner spec)"
    return "a tuner study"


def stored_spec(name: str, storage_url: str | None = None) -> tuple[StudySpec, dict[str, Any]]:
    """The spec and search space saved with a study."""
    url = storage_url or default_storage()
    study = load_named(name, url, readonly=True)
    attrs = study.user_attrs
    if StudyKey.SPEC not in attrs:
        if StudyKey.TUNE in attrs:
            raise StudyError(f"Study {name!r} was created by tuner.tune() in Python: continue it by calling "
                             f"tuner.tune() again with the same storage and study_name.")
        raise StudyError(f"Study {name!r} in {mask_url(url)} is {describe_kind(study)}: "
                         f"tuner cannot run it.")
    spec = StudySpec.from_mapping({**attrs[StudyKey.SPEC], "storage": storage_url}, f"study {name!r}", stored=True)
    return spec, attrs.get(StudyKey.SPACE) or {}


def open_study(name: str, storage_url: str | None = None, *, readonly: bool = True,
               kinds: tuple[str, ...] = ("tuner", "tune")) -> optuna.Study:
    """Loads a study to read it (``readonly``: the storage is not changed) or to write to it; a study of a
    kind not in ``kinds`` (a plain Optuna or multi-objective study) is refused with one line saying what it is."""
    url = storage_url or default_storage()
    study = load_named(name, url, readonly=readonly)
    kind = study_kind(study.user_attrs, len(study.directions))
    if kind not in kinds:
        raise StudyError(f"Study {name!r} in {mask_url(url)} is {describe_kind(study)}; tuner lists it but "
                         f"cannot show, report or export it (try optuna-dashboard).")
    return study
