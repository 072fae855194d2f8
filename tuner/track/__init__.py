"""Logging a study to experiment trackers: MLflow (``--mlflow URI``) and TensorBoard (``--tensorboard DIR``).

A tracker is told of every finished trial (``trial_finished``) and, at the end of a session, of the study
(``close``): it then logs the finished trials it has not logged yet (trials of earlier sessions, of other
machines, or missed while it failed) and the study's best config. ``tracking()`` attaches the trackers to a
session's ``on_trial``; it is the one place where ``tuner study create/run`` (``--workers`` included: the
supervising process sees every finished trial) and ``tuner.tune()`` do it.

A tracker that fails (server down, disk full) is reported once and left out for the rest of the session;
the study goes on, and the next session that logs to the same destination logs what was missed. A missing
package is refused by ``check_tracking`` before any study exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from tuner.errors import ConfigError
from tuner.study._record import StudyKey, trial_by_number

__all__ = ["Tracker", "Destinations", "MLFLOW_ENV", "check_tracking", "destinations", "tracking", "tracking_id"]

log = logging.getLogger(__name__)

MLFLOW_ENV = "TUNER_MLFLOW_URI"  # the MLflow tracking URI of every session that names none
OnTrial = Callable[[Any, optuna.Study], None]


class Tracker(Protocol):
    """One logging destination of a session."""

    name: str  # "MLflow", "TensorBoard": for messages

    def trial_finished(self, trial: FrozenTrial, study: optuna.Study) -> None:
        """Logs one finished trial (complete, pruned or failed), unless it is logged already."""
        ...

    def close(self, study: optuna.Study) -> None:
        """The end of a session: logs the study's finished trials not logged yet, and its best config."""
        ...


@dataclass(frozen=True)
class Destinations:
    """Where a session logs: an MLflow tracking URI and a TensorBoard log folder (None: not there)."""

    mlflow: str | None = None
    tensorboard: str | None = None

    def __bool__(self) -> bool:
        return bool(self.mlflow or self.tensorboard)


def destinations(mlflow: Any = None, tensorboard: Any = None) -> Destinations:
    """The destinations of a session: those given, and ``$TUNER_MLFLOW_URI`` where no MLflow URI is."""
    for key, value in (("mlflow", mlflow), ("tensorboard", tensorboard)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{key} must be a {'tracking URI' if key == 'mlflow' else 'folder'} (a string); "
                              f"got {type(value).__name__}.")
    uri = str(mlflow) if mlflow else os.environ.get(MLFLOW_ENV) or None
    return Destinations(uri, os.fspath(tensorboard) if tensorboard else None)


def check_tracking(mlflow: Any = None, tensorboard: Any = None) -> Destinations:
    """The session's destinations, checked before any study exists: a package that is not installed, or a
    destination that cannot be used (an MLflow URI MLflow cannot open, a folder that cannot be made), is a
    ``ConfigError`` naming the fix."""
    found = destinations(mlflow, tensorboard)
    if found.mlflow:
        from tuner.track._mlflow import check

        check(found.mlflow)
    if found.tensorboard:
        from tuner.track._tensorboard import check

        check(found.tensorboard)
    return found


def check_destinations(mlflow: Any = None, tensorboard: Any = None) -> None:
    """The checks of ``check_tracking`` that need no PyTorch, for the CLI to make before it loads: the MLflow
    package and URI (as ``check_tracking``), and a TensorBoard folder that cannot be made (it makes nothing)."""
    found = destinations(mlflow, tensorboard)
    if found.mlflow:
        from tuner.track._mlflow import check

        check(found.mlflow)
    if found.tensorboard:
        from tuner.track._tensorboard import check_folder

        check_folder(found.tensorboard, make=False)


def tracking_id(study: optuna.Study) -> str:
    """The study's tracking id, made and stored on first use: two studies of one name (in two storages) log to
    one MLflow experiment or TensorBoard folder without mixing their trials."""
    value = study.user_attrs.get(StudyKey.TRACKING_ID)
    if isinstance(value, str) and value:
        return value
    value = uuid.uuid4().hex
    study.set_user_attr(StudyKey.TRACKING_ID, value)
    return value


class _Trackers:
    """The session's trackers; one that fails is reported once and left out for the rest of the session."""

    def __init__(self, study: optuna.Study, where: Destinations) -> None:
        self.active: list[Tracker] = []
        openers: list[tuple[str, Callable[[str], Tracker]]] = []
        if where.mlflow:
            openers.append(("MLflow", lambda uid: _open_mlflow(where.mlflow, study, uid)))
        if where.tensorboard:
            openers.append(("TensorBoard", lambda uid: _open_tensorboard(where.tensorboard, study, uid)))
        uid = None
        for name, opener in openers:
            try:
                uid = uid or tracking_id(study)
                self.active.append(opener(uid))
            except Exception as exc:
                _warn(name, exc, "could not start", _in_memory(study))

    def trial_finished(self, number: int, study: optuna.Study) -> None:
        if not self.active:
            return
        try:
            trial = trial_by_number(study, number)
        except Exception:  # the storage is failing: the engine reports that; the close logs the trial
            return
        self._each(lambda t: t.trial_finished(trial, study), "failed", study)

    def close(self, study: optuna.Study) -> None:
        self._each(lambda t: t.close(study), "failed at the end of the session", study)

    def _each(self, call: Callable[[Tracker], None], what: str, study: optuna.Study) -> None:
        for tracker in list(self.active):
            try:
                call(tracker)
            except Exception as exc:
                self.active.remove(tracker)
                _warn(tracker.name, exc, what, _in_memory(study))


def _open_mlflow(uri: str, study: optuna.Study, uid: str) -> Tracker:
    from tuner.track._mlflow import MlflowTracker

    return MlflowTracker(uri, study, uid)


def _open_tensorboard(folder: str, study: optuna.Study, uid: str) -> Tracker:
    from tuner.track._tensorboard import TensorBoardTracker

    return TensorBoardTracker(folder, study, uid)


def _in_memory(study: optuna.Study) -> bool:
    """A study kept in this process alone (``tuner.tune()`` without a storage): no later session sees it."""
    storage = getattr(study, "_storage", None)
    return isinstance(getattr(storage, "_backend", storage), optuna.storages.InMemoryStorage)


def _warn(name: str, exc: BaseException, what: str, in_memory: bool = False) -> None:
    from tuner._secrets import redact

    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text if len(text) <= 300 else text[:297] + "..."
    later = ("the study is in memory (no storage), so the trials missed are not logged later" if in_memory else
             "the next session that logs to the same destination logs the trials missed")
    log.warning(redact(f"warning: {name} logging {what} ({type(exc).__name__}: {text}); the study goes on without "
                       f"it, and {later}"))


@contextlib.contextmanager
def tracking(study: optuna.Study, on_trial: OnTrial | None = None, *, mlflow: Any = None,
             tensorboard: Any = None) -> Iterator[OnTrial | None]:
    """Runs a session with its trackers: yields the ``on_trial`` to give the trial engine (``on_trial``, then
    each tracker); the trackers are closed when the session ends, however it ends. Without destinations (none
    given, no ``$TUNER_MLFLOW_URI``), ``on_trial`` itself."""
    where = destinations(mlflow, tensorboard)
    if not where:
        yield on_trial
        return
    trackers = _Trackers(study, where)

    def finished(outcome: Any, s: optuna.Study) -> None:
        if on_trial is not None:
            on_trial(outcome, s)
        trackers.trial_finished(outcome.number, s)

    try:
        yield finished
    finally:
        trackers.close(study)
