"""MLflow: one experiment per study (named after it), a parent run for the study, and a nested run per
finished trial.

A trial's run holds the flattened config as params (``optimizer.name``, ``optimizer.lr``, ``schedule.name``,
``batch_size``, ...), the validation metric of every epoch as a metric history (``val_<metric>``,
step = epoch), the final ``final_val_<metric>``, ``test_<metric>`` and ``train_seconds``, and tags
``trial_number``, ``state`` (COMPLETE, PRUNED, FAIL), ``reason`` and ``reason_kind``; its status is FINISHED,
KILLED (pruned) or FAILED. At the end of a session the parent run gets the best config as the artifact
``best_config.yaml`` (``tuner.load_config`` reads it), ``best_val_<metric>`` and the tag ``best_trial``.

Runs carry the study's tracking id, so a resumed study logs into the same experiment and parent run, and a
trial is logged once. Calls retry twice with a 15 s timeout (unless ``MLFLOW_HTTP_REQUEST_*`` say otherwise)
so that a server that is down costs seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.errors import ConfigError
from tuner.study._record import Key
from tuner.track._facts import TRACKED, best_config_yaml, facts_of, metric_name

__all__ = ["MlflowTracker", "check", "ID_TAG", "ROLE_TAG", "CONFIG_ARTIFACT"]

ID_TAG = "tuner.study_id"
ROLE_TAG = "tuner.role"  # study (the parent run) or trial
CONFIG_ARTIFACT = "best_config.yaml"
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
MAX_PARAM = 500  # characters of a param value (older MLflow servers refuse longer ones)
MAX_TAG = 5000
BATCH = 900  # metrics per log_batch call (MLflow takes at most 1000)
_CALL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
             "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
_QUIET = ("mlflow", "alembic")
# The URI schemes MLflow's client opens ("" is a plain folder path; postgresql+psycopg2 is postgresql's).
SCHEMES = frozenset({"", "file", "databricks", "databricks-uc", "uc", "http", "https", "postgresql", "mysql", "sqlite",
                     "mssql"})


def _client_class() -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError("Logging to MLflow (--mlflow, the spec key mlflow:, tune(mlflow=...)) needs the mlflow "
                          "package, which is not installed: pip install 'optim-tuner[mlflow]' (or pip install "
                          "mlflow-skinny).") from None
    return MlflowClient


@contextlib.contextmanager
def _calls() -> Iterator[None]:
    """Around tuner's MLflow calls: few retries (unless the user set them), no run URLs printed to standard
    output (it may carry JSON), MLflow's and Alembic's info lines (database set up) kept quiet."""
    saved = {k: os.environ.get(k) for k in _CALL_ENV}
    for key, value in _CALL_ENV.items():
        os.environ.setdefault(key, value)
    loggers = [logging.getLogger(name) for name in _QUIET]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_CHECKED: set[str] = set()  # URIs this process has opened already: checked once (the command checks early)


def check(uri: str) -> None:
    """Refuses a URI MLflow cannot open (an unknown scheme, a folder, a SQLite file that cannot be made); a
    server is not contacted here (one that is down does not stop a study)."""
    from tuner._secrets import mask_url

    client_class = _client_class()
    if uri in _CHECKED:
        return
    from tuner.study._storage import from_environment

    scheme = uri.partition("://")[0].partition("+")[0].lower() if "://" in uri else ""
    if scheme not in SCHEMES:  # MLflow's own error lists its schemes in a 500-character paragraph
        from tuner.errors import unknown_name_message

        raise ConfigError(f"MLflow cannot log to {mask_url(uri)}{from_environment(uri, 'TUNER_MLFLOW_URI')}: "
                          + unknown_name_message("scheme", scheme, SCHEMES - {""})
                          + " Use e.g. sqlite:///mlflow.db or http://HOST:5000.")
    try:
        with _calls():
            client_class(tracking_uri=uri)
    except Exception as exc:
        text = " ".join(str(exc).split())[:600].rstrip(". ")
        raise ConfigError(f"MLflow cannot log to {mask_url(uri)}{from_environment(uri, 'TUNER_MLFLOW_URI')}: "
                          f"{type(exc).__name__}: {text}. Use e.g. "
                          f"sqlite:///mlflow.db or http://HOST:5000.") from None
    _CHECKED.add(uri)


def _ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


def _param(value: Any) -> str:
    return str(value)[:MAX_PARAM]


class MlflowTracker:
    name = "MLflow"

    def __init__(self, uri: str, study: optuna.Study, uid: str) -> None:
        from mlflow.exceptions import MlflowException

        self.client = _client_class()(tracking_uri=uri)
        self.uid = uid
        self.study_name = study.study_name
        self.metric = metric_name(study)
        with _calls():
            experiment = self.client.get_experiment_by_name(study.study_name)
            if experiment is None:
                try:
                    self.experiment_id = self.client.create_experiment(study.study_name,
                                                                       tags={"tuner.study": study.study_name})
                except MlflowException:  # another process created it at the same moment
                    experiment = self.client.get_experiment_by_name(study.study_name)
                    if experiment is None:
                        raise
            if experiment is not None:
                self.experiment_id = experiment.experiment_id
                if experiment.lifecycle_stage == "deleted":
                    self.client.restore_experiment(self.experiment_id)
            self.parent = self._load_runs()
            if self.parent is None:
                self.parent = self._create_parent(study)
            else:
                self.client.update_run(self.parent, status="RUNNING")

    def _load_runs(self) -> str | None:
        """Reads which trials are logged already (``self.logged``); returns the study's parent run, if any."""
        self.logged: dict[int, str] = {}
        parent = None
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{ID_TAG}` = '{self.uid}'",
                                           max_results=1000, page_token=token)
            for run in page:
                tags = run.data.tags
                if tags.get(ROLE_TAG) == "study":
                    parent = parent or run.info.run_id
                elif tags.get(ROLE_TAG) == "trial" and str(tags.get("trial_number", "")).isdigit():
                    self.logged.setdefault(int(tags["trial_number"]), run.info.run_id)
            token = page.token
            if not token:
                return parent

    def _create_parent(self, study: optuna.Study) -> str:
        from mlflow.entities import Param

        from tuner.study._record import StudyKey, direction_of

        spec = study.user_attrs.get(StudyKey.SPEC) or study.user_attrs.get(StudyKey.TUNE) or {}
        params = {"direction": direction_of(study), "metric": self.metric}
        for key in ("objective", "space", "sampler", "pruner", "epochs", "seed", "function", "module"):
            value = spec.get(key) if isinstance(spec, dict) else None
            if value is not None:
                params[key] = value if isinstance(value, (str, int, float)) else "custom"
        run = self.client.create_run(self.experiment_id, run_name=study.study_name,
                                     tags={ID_TAG: self.uid, ROLE_TAG: "study", "study": study.study_name})
        self.client.log_batch(run.info.run_id, params=[Param(k, _param(v)) for k, v in params.items()])
        return run.info.run_id

    def trial_finished(self, trial: FrozenTrial, study: optuna.Study) -> None:
        if trial.number not in self.logged:
            with _calls():
                self._log(trial, study)

    def _log(self, trial: FrozenTrial, study: optuna.Study) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        f = facts_of(trial, study)
        tags = {MLFLOW_PARENT_RUN_ID: self.parent, ID_TAG: self.uid, ROLE_TAG: "trial", "study": self.study_name,
                "trial_number": str(f.number), "state": f.state}
        for key, value in (("reason", f.reason), ("reason_kind", f.reason_kind), ("error_at", f.error_at)):
            if value:
                tags[key] = value[:MAX_TAG]
        run = self.client.create_run(self.experiment_id, start_time=_ms(f.start), tags=tags,
                                     run_name=f"trial-{f.number}")
        run_id = run.info.run_id
        try:
            stamp = _ms(f.end or f.start) or 0
            metrics = [Metric(f"val_{f.metric}", v, stamp, step) for step, v in f.history]
            metrics += [Metric("train_loss", v, stamp, step) for step, v in f.train_loss]
            finals = {f"final_val_{f.metric}": f.value, f"test_{f.metric}": f.test_value,
                      "train_seconds": f.seconds}
            metrics += [Metric(k, float(v), stamp, f.last_epoch) for k, v in finals.items() if v is not None]
            params = [Param(k, _param(v)) for k, v in f.params.items()]
            for i in range(0, max(len(params), 1), 100):
                self.client.log_batch(run_id, params=params[i:i + 100])
            for i in range(0, len(metrics), BATCH):
                self.client.log_batch(run_id, metrics=metrics[i:i + BATCH])
            self.client.set_terminated(run_id, STATUS.get(f.state, "FINISHED"), end_time=_ms(f.end))
        except BaseException:
            with contextlib.suppress(Exception):  # a half-logged run would count as logged next time
                self.client.delete_run(run_id)
            raise
        self.logged[f.number] = run_id

    def close(self, study: optuna.Study) -> None:
        from mlflow.entities import Metric

        with _calls():
            self._load_runs()  # other machines may have logged trials meanwhile
            for trial in study.get_trials(deepcopy=False, states=TRACKED):
                if trial.number not in self.logged:
                    self._log(trial, study)
            best = best_config_yaml(study)
            counts = {s.name: 0 for s in TRACKED}
            for trial in study.get_trials(deepcopy=False, states=TRACKED):
                counts[trial.state.name] += 1
            tags = {"trials_complete": str(counts["COMPLETE"]), "trials_pruned": str(counts["PRUNED"]),
                    "trials_failed": str(counts["FAIL"])}
            if best is not None:
                point, text = best
                self.client.log_text(self.parent, text, CONFIG_ARTIFACT)
                tags["best_trial"] = str(point.number)
                finished = sum(counts.values())
                metrics = [Metric(f"best_val_{self.metric}", float(point.values[0]), _ms(datetime.now()) or 0,
                                  finished)]
                test = point.user_attrs.get(Key.TEST_VALUE)
                if isinstance(test, (int, float)):
                    metrics.append(Metric(f"best_test_{self.metric}", float(test), _ms(datetime.now()) or 0,
                                          finished))
                self.client.log_batch(self.parent, metrics=metrics)
            for key, value in tags.items():
                self.client.set_tag(self.parent, key, value)
            self.client.set_terminated(self.parent, "FINISHED")
