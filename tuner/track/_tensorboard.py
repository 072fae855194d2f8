"""TensorBoard: a folder per study (``DIR/<study>``) with a run folder per finished trial (``trial-0007``).

A trial's run holds the scalars ``val/<metric>`` (every epoch, step = epoch), ``train/loss`` (every epoch,
where the objective records it) and ``final/val_<metric>``, ``final/test_<metric>`` and
``final/train_seconds``, and the HParams plugin's session start info (the flattened config: ``optimizer.name``,
``optimizer.lr``, ...) and session end info (success, failure, or unknown for a pruned trial). At the end of a
session the study's folder gets the HParams experiment summary: every hyperparameter its trials used (with
the choices of text ones) and the metrics, which the HParams dashboard shows as columns.

A trial is written to a hidden folder and renamed into place, so a trial's folder is whole or absent and a
resumed study (or a second machine) writes each trial once. A folder of another study of the same name (in
another storage) is left alone: that study logs to ``DIR/<study>-<id>``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.errors import ConfigError
from tuner.study._record import Key
from tuner.track._facts import TRACKED, facts_of, flatten, metric_name

__all__ = ["TensorBoardTracker", "check", "run_name", "EXPERIMENT_SUFFIX", "MARKER"]

MARKER = ".tuner-study"  # in a study's folder: the tracking id of the study that logs there
EXPERIMENT_SUFFIX = ".tuner-hparams"  # the event file of the HParams experiment summary (rewritten each session)
# TensorBoard has no status for a run stopped early: a pruned trial is "unknown".
STATUS = {"COMPLETE": "STATUS_SUCCESS", "PRUNED": "STATUS_UNKNOWN", "FAIL": "STATUS_FAILURE"}


def _writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("Logging to TensorBoard (--tensorboard, the spec key tensorboard:, "
                          "tune(tensorboard=...)) needs the tensorboard package, which is not installed: "
                          "pip install 'optim-tuner[tensorboard]' (or pip install tensorboard).") from None
    return SummaryWriter


def check(folder: str) -> None:
    _writer_class()
    check_folder(folder)


def check_folder(folder: str, *, make: bool = True) -> None:
    """The folder can be made and written in, and the tensorboard package is installed. ``make=False`` looks
    without making anything and without importing PyTorch, so that ``study create`` says so at once (its other
    checks may still refuse the command); ``check`` makes the folder and imports the writer."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        _writer_class()  # its message
    path = Path(folder).expanduser()
    if not make:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            return
        if not existing.is_dir():
            reason = "File exists" if existing == path else "Not a directory"
            raise ConfigError(f"TensorBoard folder {folder}: cannot be made ({reason}).")
        if not os.access(existing, os.W_OK):
            raise ConfigError(f"TensorBoard folder {folder}: "
                              + ("not writable." if existing == path else "cannot be made (Permission denied)."))
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"TensorBoard folder {folder}: cannot be made ({exc.strerror or exc}).") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"TensorBoard folder {folder}: not writable.")


def run_name(number: int) -> str:
    return f"trial-{number:04d}"


def _folder_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._") or "study"
    return cleaned[:120]


def _hparam(value: Any) -> bool | float | str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


class TensorBoardTracker:
    name = "TensorBoard"

    def __init__(self, folder: str, study: optuna.Study, uid: str) -> None:
        self.writer_class = _writer_class()
        base = Path(folder).expanduser()
        root = base / _folder_name(study.study_name)
        marker = root / MARKER
        if marker.is_file() and marker.read_text().strip() != uid:
            taken = root
            root = base / f"{_folder_name(study.study_name)}-{uid[:8]}"
            marker = root / MARKER
            # Said, so that the user looks for the logs where they are.
            logging.getLogger("tuner.track").warning(
                f"TensorBoard: {taken} holds the logs of another study named {study.study_name!r}: this one logs "
                f"to {root}")
        root.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            marker.write_text(uid + "\n")
        self.root = root
        self.metric = metric_name(study)

    def trial_finished(self, trial: FrozenTrial, study: optuna.Study) -> None:
        if not (self.root / run_name(trial.number)).exists():
            self._write(trial, study)

    def _write(self, trial: FrozenTrial, study: optuna.Study) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        f = facts_of(trial, study)
        final = self.root / run_name(f.number)
        temp = self.root / f".{run_name(f.number)}.{os.getpid()}.tmp"
        shutil.rmtree(temp, ignore_errors=True)
        start = f.start.timestamp() if f.start else time.time()
        end = f.end.timestamp() if f.end else time.time()
        writer = self.writer_class(log_dir=str(temp))
        try:
            for step, value in f.history:
                writer.add_scalar(f"val/{f.metric}", value, step, walltime=end)
            for step, value in f.train_loss:
                writer.add_scalar("train/loss", value, step, walltime=end)
            finals = {f"final/val_{f.metric}": f.value, f"final/test_{f.metric}": f.test_value,
                      "final/train_seconds": f.seconds}
            for tag, value in finals.items():
                if value is not None:
                    writer.add_scalar(tag, value, f.last_epoch, walltime=end)
            start_info = plugin_data_pb2.SessionStartInfo(group_name=run_name(f.number), start_time_secs=start)
            for key, value in f.params.items():
                value = _hparam(value)
                if isinstance(value, bool):
                    start_info.hparams[key].bool_value = value
                elif isinstance(value, float):
                    start_info.hparams[key].number_value = value
                elif value is not None:
                    start_info.hparams[key].string_value = value
            status = api_pb2.Status.Value(STATUS.get(f.state, "STATUS_UNKNOWN"))
            end_info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end)
            file_writer = writer._get_file_writer()
            for tag, data in ((metadata.SESSION_START_INFO_TAG, {"session_start_info": start_info}),
                              (metadata.SESSION_END_INFO_TAG, {"session_end_info": end_info})):
                meta = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
                file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, metadata=meta,
                                                                     tensor=metadata.NULL_TENSOR)]),
                                        walltime=end)
        finally:
            writer.close()
        try:
            temp.rename(final)
        except OSError:  # written meanwhile by another process
            shutil.rmtree(temp, ignore_errors=True)

    def close(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False, states=TRACKED)
        for trial in trials:
            if not (self.root / run_name(trial.number)).exists():
                self._write(trial, study)
        self._write_experiment(trials, study)

    def _write_experiment(self, trials: list[FrozenTrial], study: optuna.Study) -> None:
        """The HParams experiment summary: every hyperparameter of the study's trials and the metrics. It
        replaces the one an earlier session wrote (TensorBoard reads the first it finds)."""
        from google.protobuf import struct_pb2
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        values: dict[str, set[Any]] = {}
        for trial in trials:
            config = trial.user_attrs.get(Key.CONFIG)
            for key, value in (flatten(config) if isinstance(config, dict) else trial.params).items():
                value = _hparam(value)
                if value is not None:
                    values.setdefault(key, set()).add(value)
        infos = []
        for key in sorted(values):
            seen = values[key]
            if all(isinstance(v, bool) for v in seen):
                choices = struct_pb2.ListValue(values=[struct_pb2.Value(bool_value=v) for v in sorted(seen)])
                infos.append(api_pb2.HParamInfo(name=key, type=api_pb2.DATA_TYPE_BOOL, domain_discrete=choices))
            elif all(isinstance(v, float) for v in seen):
                infos.append(api_pb2.HParamInfo(name=key, type=api_pb2.DATA_TYPE_FLOAT64))
            else:
                choices = struct_pb2.ListValue(values=[struct_pb2.Value(string_value=v)
                                                       for v in sorted({str(v) for v in seen})])
                infos.append(api_pb2.HParamInfo(name=key, type=api_pb2.DATA_TYPE_STRING, domain_discrete=choices))
        m = metric_name(study)
        metrics = [(f"final/val_{m}", f"final validation {m}", api_pb2.DATASET_VALIDATION),
                   (f"val/{m}", f"validation {m} of the last epoch (pruned trials too)", api_pb2.DATASET_VALIDATION),
                   (f"final/test_{m}", f"test {m}", api_pb2.DATASET_UNKNOWN),
                   ("final/train_seconds", "training seconds", api_pb2.DATASET_UNKNOWN)]
        experiment = api_pb2.Experiment(
            name=study.study_name, time_created_secs=time.time(), hparam_infos=infos,
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag, description=about,
                                             dataset_type=kind) for tag, about, kind in metrics])
        meta = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment))
        for old in self.root.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"):
            old.unlink(missing_ok=True)
        writer = self.writer_class(log_dir=str(self.root), filename_suffix=EXPERIMENT_SUFFIX)
        try:
            writer._get_file_writer().add_summary(Summary(value=[Summary.Value(
                tag=metadata.EXPERIMENT_TAG, metadata=meta, tensor=metadata.NULL_TENSOR)]))
        finally:
            writer.close()
