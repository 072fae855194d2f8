"""Fewer storage round trips: many writes in one transaction, and the study read once for many pruning checks.

A trial pack reports K trials at every epoch boundary. Written one by one, as ``Trial.report`` and
``Trial.should_prune`` do, that is K write transactions plus K full reads of the study (each pruning check
re-reads every running trial): on SQLite about 5 ms per member and epoch, more than a small model trains in.
Here the K intermediate values go to the storage in one transaction (RDB storages; other storages take them
one by one), and the pruner judges all K members against one read of the study (``StudyView``).

The batched RDB write makes, inside one session, every check Optuna's per-row helpers make (the trial exists
and is still running), once per trial, and writes each table's rows as one ``INSERT ... ON CONFLICT DO
UPDATE`` statement on SQLite and PostgreSQL (the per-row helpers elsewhere); when the batch fails as a whole,
each write is tried on its own, so one finished trial costs nobody else their write.

Asking for a trial reads the study several times (Optuna's ``ask`` looks for queued trials, the sampler reads
the trials once per parameter it samples, the duplicate check reads the running ones): about 5 ms each on
SQLite with a pack's members running. ``one_read`` answers all of them from the read the worker made under its
claim lock, when nobody else can ask.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sqlite3
import threading
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study._record import storage_of

__all__ = ["Write", "write_batch", "write_attrs", "close_trial", "held_params", "StudyView", "RecentView",
           "one_read"]


@dataclass(frozen=True)
class Write:
    """One storage write: an intermediate value (``key`` is the step) or a user or system attribute."""

    trial_id: int
    kind: Literal["value", "user", "system"]
    key: Any
    value: Any


def _rdb_backend(storage: optuna.storages.BaseStorage) -> Any | None:
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, optuna.storages.RDBStorage) and hasattr(backend, "_set_trial_attr_without_commit") \
            and hasattr(backend, "_set_trial_intermediate_value_without_commit"):
        return backend
    return None


def _write_rdb(backend: Any, writes: Sequence[Write]) -> None:
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session) as session, \
            _trials_found_once(models, session, {w.trial_id for w in writes}):
        for trial_id in dict.fromkeys(w.trial_id for w in writes):  # every trial exists and is still running
            backend.check_trial_is_updatable(trial_id, models.TrialModel.find_or_raise_by_id(trial_id, session).state)
        values = {(w.trial_id, int(w.key)): float(w.value) for w in writes if w.kind == "value"}
        rows = models.TrialIntermediateValueModel
        if not _upsert(backend, session, rows, ("trial_id", "step"), [
                dict(zip(("trial_id", "step", "intermediate_value", "intermediate_value_type"),
                         (trial_id, step, *rows.intermediate_value_to_stored_repr(value)), strict=True))
                for (trial_id, step), value in values.items()]):
            for (trial_id, step), value in values.items():
                backend._set_trial_intermediate_value_without_commit(session, trial_id, step, value)
        for kind, model in (("user", models.TrialUserAttributeModel), ("system", models.TrialSystemAttributeModel)):
            _put_attrs(backend, session, model, {(w.trial_id, w.key): w.value for w in writes if w.kind == kind})


UPSERT_ROWS = 100  # rows per statement: within SQLite's oldest limit of 999 variables a statement


def _upsert(backend: Any, session: Any, model: Any, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> bool:
    """Writes ``rows`` of ``model`` as INSERT ... ON CONFLICT (``keys``) DO UPDATE statements of many rows each
    (SQLite 3.24 or later, PostgreSQL), where Optuna's per-row helpers issue one statement (or a query and a
    statement) per row; the rows' trials must have been checked. Returns False, having written nothing, on
    other databases."""
    name = backend.engine.name
    if name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return False
    if not rows:
        return True
    for start in range(0, len(rows), UPSERT_ROWS):
        statement = insert(model).values(rows[start:start + UPSERT_ROWS])
        session.execute(statement.on_conflict_do_update(
            index_elements=[getattr(model, key) for key in keys],
            set_={column: statement.excluded[column] for column in rows[0] if column not in keys}))
    return True


def _set_attrs(backend: Any, session: Any, model: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Sets a trial's user or system attributes (``model``) in one statement where the database allows, as
    Optuna's ``_set_trial_attr_without_commit`` sets each (its checks included: the trial exists and is
    running)."""
    from optuna.storages._rdb import models

    if not attrs:
        return
    backend.check_trial_is_updatable(trial_id, models.TrialModel.find_or_raise_by_id(trial_id, session).state)
    _put_attrs(backend, session, model, {(trial_id, key): value for key, value in attrs.items()})


def _put_attrs(backend: Any, session: Any, model: Any, attrs: dict[tuple[int, str], Any]) -> None:
    """Writes attributes ``{(trial id, key): value}`` of ``model`` (user or system) whose trials were checked:
    one upsert where the database allows, else Optuna's per-row helper for each."""
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
            for (trial_id, key), value in attrs.items()]
    if not _upsert(backend, session, model, ("trial_id", "key"), rows):
        for (trial_id, key), value in attrs.items():
            backend._set_trial_attr_without_commit(session, model, trial_id, key, value)


_batch = threading.local()  # this thread's batch in progress: its session and the trials it loaded
_install = threading.Lock()  # guards the patches below: the row lookup (once per process), the storage methods


@contextlib.contextmanager
def _trials_found_once(models: Any, session: Any, trial_ids: Iterable[int] = (),
                       loaded: dict[int, Any] | None = None) -> Iterator[None]:
    """Optuna's per-row helpers look their trial up (and check that it is still running) once per row: here
    the batch's trials (``trial_ids``) are loaded in one query (or given, as ``loaded``), and the helpers'
    lookups in this thread and session answer from it. Every check the helpers make still runs, on the rows
    as this transaction read them. Lookups of other threads (the heartbeat's batch) and sessions go to the database as
    before."""
    cls = models.TrialModel
    with _install:
        if not getattr(cls.__dict__["find_or_raise_by_id"].__func__, "answers_batches", False):
            original = cls.__dict__["find_or_raise_by_id"].__func__

            def find_or_raise_by_id(klass: Any, trial_id: int, sess: Any, for_update: bool = False) -> Any:
                batch = getattr(_batch, "current", None)
                if batch is not None and sess is batch[0] and not for_update and trial_id in batch[1]:
                    return batch[1][trial_id]
                return original(klass, trial_id, sess, for_update)

            find_or_raise_by_id.answers_batches = True  # type: ignore[attr-defined]
            cls.find_or_raise_by_id = classmethod(find_or_raise_by_id)
    if loaded is None:
        loaded = {t.trial_id: t for t in session.query(cls).filter(cls.trial_id.in_(set(trial_ids)))}
    _batch.current = (session, loaded)
    try:
        yield
    finally:
        _batch.current = None


def _write_one(storage: optuna.storages.BaseStorage, w: Write) -> None:
    if w.kind == "value":
        storage.set_trial_intermediate_value(w.trial_id, int(w.key), float(w.value))
    elif w.kind == "user":
        storage.set_trial_user_attr(w.trial_id, w.key, w.value)
    else:
        storage.set_trial_system_attr(w.trial_id, w.key, w.value)


def write_batch(study: optuna.Study, writes: Iterable[Write]) -> dict[int, Exception]:
    """Writes everything, in one transaction where the storage is an RDB. Returns, per trial id, the error
    that stopped that trial's writes (a finished trial, a storage that keeps failing); others still land."""
    writes = list(writes)
    if not writes:
        return {}
    storage = storage_of(study)
    backend = _rdb_backend(storage)
    if backend is not None:
        with contextlib.suppress(Exception):  # one bad write rolls back all: each is tried on its own below
            _write_rdb(backend, writes)
            return {}
    errors: dict[int, Exception] = {}
    for w in writes:
        if w.trial_id in errors:
            continue
        try:
            _write_one(storage, w)
        except Exception as exc:
            errors[w.trial_id] = exc
    return errors


def write_attrs(study: optuna.Study, trial_id: int, attrs: dict[str, Any]) -> None:
    """Sets a trial's user attributes in one write where the storage allows; raises what the storage raised."""
    errors = write_batch(study, [Write(trial_id, "user", key, value) for key, value in attrs.items()])
    if errors:
        raise errors[trial_id]


def close_trial(study: optuna.Study, trial_id: int, attrs: dict[str, Any], state: TrialState,
                values: float | Sequence[float] | None = None) -> tuple[list[float] | None] | None:
    """Sets a finished trial's user attributes and its outcome in one transaction, on an RDB storage: Optuna's
    ``tell`` would read the whole trial back first and the attributes would be a transaction of their own
    (together about 5 ms a trial on SQLite). Returns ``(values,)`` as written (a pruned trial takes its last
    reported value, as ``tell`` does); the caller then tells the sampler (``after_trial``), as ``tell`` would
    have. A trial finished meanwhile raises ``UpdateFinishedTrialError`` and nothing is written; a failed
    transaction writes nothing, so it can be tried again.

    Returns None, having written nothing, where it does not apply: other storages, a value ``tell`` would
    refuse, a sampler that writes to the trial when told of it (a ``constraints_func``). The caller writes the
    attributes and tells."""
    backend = _rdb_backend(storage_of(study))
    told = None if values is None else [float(v) for v in (values if isinstance(values, Sequence) else [values])]
    refused = told is not None and (any(math.isnan(v) for v in told) or len(told) != len(study.directions))
    sampler = getattr(study.sampler, "sampler", study.sampler)  # FirstObjectiveSampler wraps the real one
    if backend is None or not hasattr(backend, "_set_trial_value_without_commit") or refused \
            or (state == TrialState.COMPLETE and told is None) \
            or getattr(sampler, "_constraints_func", None) is not None:
        return None
    from datetime import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    study._thread_local.cached_all_trials = None  # as ``tell`` does
    single = len(study.directions) == 1
    with _create_scoped_session(backend.scoped_session) as session:
        row = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        backend.check_trial_is_updatable(trial_id, row.state)
        with _trials_found_once(models, session, loaded={trial_id: row}):
            _set_attrs(backend, session, models.TrialUserAttributeModel, trial_id, attrs)
        if state == TrialState.PRUNED and told is None and single:
            rows = models.TrialIntermediateValueModel
            last = (session.query(rows).filter(rows.trial_id == trial_id).order_by(rows.step.desc()).first())
            if last is not None:
                value = rows.stored_repr_to_intermediate_value(last.intermediate_value, last.intermediate_value_type)
                told = None if math.isnan(value) else [value]
        elif state != TrialState.COMPLETE:
            told = None
        for objective, value in enumerate(told or ()):
            backend._set_trial_value_without_commit(session, row, objective, value)
        row.state = state
        row.datetime_complete = datetime.now()
    return (told,)


_held = threading.local()  # this thread's held_params block: (storage, trial id, [the parameters held])


def _holding(storage: optuna.storages.BaseStorage) -> Any:
    """A ``set_trial_param`` for the storage object that holds this thread's writes for the trial of its
    ``held_params`` block (other threads and trials write as before)."""
    def set_trial_param(trial_id: int, name: str, value: float, distribution: Any) -> None:
        block = getattr(_held, "block", None)
        if block is not None and block[0] is storage and block[1] == trial_id:
            block[2].append((name, value, distribution))
            return
        type(storage).set_trial_param(storage, trial_id, name, value, distribution)

    return set_trial_param


_patches: dict[tuple[int, str], list[int]] = {}  # (storage id, method): how many blocks use the patch now


@contextlib.contextmanager
def _patched(storage: optuna.storages.BaseStorage, name: str, make: Any) -> Iterator[None]:
    """Gives the storage object its own ``name`` (``make(storage)``) while any block of any thread needs it, and
    takes it away after the last: outside the blocks the object is Optuna's as it was (it pickles, as
    ``joblib.dump(study)`` needs)."""
    key = (id(storage), name)
    with _install:
        users = _patches.setdefault(key, [0])
        if users[0] == 0:
            setattr(storage, name, make(storage))
        users[0] += 1
    try:
        yield
    finally:
        with _install:
            users[0] -= 1
            if users[0] == 0:
                del _patches[key]
                vars(storage).pop(name, None)


@contextlib.contextmanager
def held_params(study: optuna.Study, trial: optuna.Trial) -> Iterator[Any]:
    """Within the block, the parameters sampled for ``trial`` (in this thread) are held, not written one
    transaction each; the block yields ``flush(attrs)``, which writes them and the trial's user attributes
    ``attrs`` in one transaction on an RDB storage (one by one elsewhere) and sets the attributes on
    ``trial``. The checks Optuna makes per parameter (the trial is running, the distribution agrees with
    earlier trials') run in that transaction. Left without a flush (an error), the held parameters are not
    written."""
    storage = storage_of(study)
    if getattr(_held, "block", None) is not None:
        raise RuntimeError("held_params blocks do not nest")
    params: list[tuple[str, float, Any]] = []

    def flush(attrs: dict[str, Any]) -> None:
        _held.block = None
        _write_params(storage, trial._trial_id, params, attrs)
        trial._cached_frozen_trial.user_attrs.update(attrs)

    with _patched(storage, "set_trial_param", _holding):
        _held.block = (storage, trial._trial_id, params)
        try:
            yield flush
        finally:
            _held.block = None


def _write_params(storage: optuna.storages.BaseStorage, trial_id: int, params: list[tuple[str, float, Any]],
                  attrs: dict[str, Any]) -> None:
    backend = _rdb_backend(storage)
    cache = storage if backend is not None and backend is not storage else None
    studies, lock = getattr(cache, "_studies", None), getattr(cache, "_lock", None)
    ids = getattr(cache, "_trial_id_to_study_id_and_number", None)
    if backend is None or not hasattr(backend, "_set_trial_param_without_commit") or \
            (cache is not None and (studies is None or lock is None or ids is None)):
        for name, value, distribution in params:
            type(storage).set_trial_param(storage, trial_id, name, value, distribution)
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    known: dict[str, Any] = {}
    if cache is not None:  # Optuna's cache of each parameter's distribution spares a query per parameter
        with lock:
            info = studies.get(ids[trial_id][0]) if trial_id in ids else None
            known = dict(info.param_distribution) if info is not None else {}
    with _create_scoped_session(backend.scoped_session) as session, \
            _trials_found_once(models, session, [trial_id]):
        for name, value, distribution in params:
            backend._set_trial_param_without_commit(session, trial_id, name, value, distribution, known.get(name))
        _set_attrs(backend, session, models.TrialUserAttributeModel, trial_id, attrs)
    if cache is not None:
        with lock:
            info = studies.get(ids[trial_id][0]) if trial_id in ids else None
            if info is not None:
                for name, _, distribution in params:
                    info.param_distribution.setdefault(name, distribution)


class StudyView:
    """The study as one read saw it. Pruners take it in place of the study, so that judging K trials at one
    epoch boundary costs one read instead of K; everything else is the study's own.

    ``earlier_members``: this process's pack members (trial ids) that count, for a member judged, as if they
    were complete: those that started before it (a lower trial number) are in the complete trials the pruner
    compares it with, with the epochs they reported so far. Run one after another, those trials would have
    finished before it started; in a pack they train beside it, and a pruner that compares with complete
    trials alone (median, percentile) would otherwise judge every member of a pack against the few trials
    complete when the pack started, and prune far less than one trial at a time does. An approximation: an
    earlier member that would be pruned later counts as if complete. Only for such pruners
    (``judges_by_complete_trials``); members are judged in trial-number order."""

    def __init__(self, study: optuna.Study, earlier_members: Container[int] = ()) -> None:
        self._study = study
        self._trials = study.get_trials(deepcopy=False)
        self._by_id = {t._trial_id: t for t in self._trials}
        self._members = [t for t in self._trials if t._trial_id in earlier_members and t.state == TrialState.RUNNING]
        self._judging: int | None = None  # the number of the trial being judged
        # Pruners judge the first objective: a study with several is seen as the study of its metric alone.
        self.direction = study.directions[0]
        self.directions = study.directions[:1]

    def _is_multi_objective(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = [t for t in self._trials if states is None or t.state in states]
        if self._judging is not None and states is not None and TrialState.COMPLETE in states \
                and TrialState.RUNNING not in states:
            trials += [t for t in self._members if t.number < self._judging]
        return copy.deepcopy(trials) if deepcopy else trials

    def forget(self, trial_id: int) -> None:
        """A member stopped (pruned, diverged, failed) since the read: it no longer counts as an earlier one."""
        self._members = [t for t in self._members if t._trial_id != trial_id]

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        return self.get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def should_prune(self, trial_id: int) -> bool:
        """The study's pruner on the trial as this read saw it (its reports up to now included)."""
        return self.judge(self._by_id[trial_id])

    def judge(self, trial: FrozenTrial) -> bool:
        """The study's pruner on ``trial`` as given (its reports as the caller holds them), against this read."""
        self._judging = trial.number
        try:
            return bool(self._study.pruner.prune(self, trial))
        finally:
            self._judging = None


class RecentView:
    """The pruning checks of one trial against a read of the study at most ``max_age`` seconds old. For a
    pruner that judges by the trial's own reports and the study's complete trials alone, nothing it looks at
    changes while the trial trains but the trials other workers complete meanwhile, which it sees within
    ``max_age``; one worker's trial sees what it would see with a read per epoch. A trial of many short
    epochs then reads the study about once a ``max_age`` instead of every epoch (on SQLite a read costs about
    as long as a small model trains an epoch)."""

    def __init__(self, study: optuna.Study, max_age: float) -> None:
        self._study = study
        self._max_age = max_age
        self._view: StudyView | None = None
        self._read_at = 0.0

    def judge(self, trial: FrozenTrial) -> bool:
        now = time.monotonic()
        if self._view is None or now - self._read_at > self._max_age:
            self._view, self._read_at = StudyView(self._study), now
        return self._view.judge(trial)


_reads = threading.local()  # this thread's one_read blocks: {(storage id, study id): [the read, or None]}


def _answering(storage: optuna.storages.BaseStorage) -> Any:
    """A ``get_all_trials`` for the storage object that answers from this thread's ``one_read`` block, if any
    (other threads, and this one outside a block, read the storage as before)."""
    def get_all_trials(study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        entry = getattr(_reads, "blocks", {}).get((id(storage), study_id))
        read = type(storage).get_all_trials
        if entry is None:
            return read(storage, study_id, deepcopy=deepcopy, states=states)
        if entry[0] is None:
            entry[0] = read(storage, study_id, deepcopy=False)
        found = [t for t in entry[0] if states is None or t.state in states]
        return copy.deepcopy(found) if deepcopy else found

    return get_all_trials


def _cache_parts(storage: optuna.storages.BaseStorage) -> tuple[Any, Any, Any] | None:
    """Optuna's cache in front of an RDB storage (its lock, studies and trial index), where the storage is one."""
    parts = tuple(getattr(storage, name, None) for name in ("_lock", "_studies", "_trial_id_to_study_id_and_number"))
    return parts if _rdb_backend(storage) is not None and None not in parts else None  # type: ignore[return-value]


def _noting(storage: optuna.storages.BaseStorage) -> Any:
    """A ``create_new_trial`` for the storage object that keeps, for this thread's ``one_read`` block, a copy of
    the trial it created as the database returned it (Optuna's cache holds it)."""
    lock, studies, index = _cache_parts(storage)  # type: ignore[misc]

    def create_new_trial(study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = type(storage).create_new_trial(storage, study_id, template_trial)
        created = getattr(_reads, "created", None)
        if created is not None and template_trial is None:  # ask's new trial (not an enqueued or added one)
            with lock:
                owner, number = index[trial_id]
                created[(id(storage), trial_id)] = copy.deepcopy(studies[owner].trials[number])
        return trial_id

    return create_new_trial


def _created_first(storage: optuna.storages.BaseStorage) -> Any:
    """A ``get_trial`` for the storage object that answers the first read of a trial created in this thread's
    ``one_read`` block (``Trial.__init__``'s, right after ``ask`` created it) from its creation; every other
    read goes to the storage."""
    def get_trial(trial_id: int) -> FrozenTrial:
        created = getattr(_reads, "created", None)
        if created and (id(storage), trial_id) in created:
            return created.pop((id(storage), trial_id))
        return type(storage).get_trial(storage, trial_id)

    return get_trial


@contextlib.contextmanager
def one_read(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> Iterator[None]:
    """Within the block, every read of the study's trials by this thread (Optuna's ``ask``, the sampler, the
    duplicate check) answers from one read: ``trials`` (every trial of the study, as read under the claim
    lock), or the block's first read. Trials created or changed inside the block are not in it (a sampler that
    looks for the trial being asked in the study's trials cannot work inside it; tuner's samplers do not);
    writes go to the storage as always. Other threads (the heartbeat) and other studies read the storage.
    On an RDB storage, the first read of a trial created in the block (``Trial.__init__`` reads the trial that
    ``ask`` has just created) answers from what its creation returned, not from a query of its own."""
    storage = storage_of(study)
    blocks = _reads.__dict__.setdefault("blocks", {})
    key = (id(storage), study._study_id)
    if key in blocks:  # already inside a block: its read stands
        yield
        return
    outer = getattr(_reads, "created", None)  # a block of another study around this one
    with contextlib.ExitStack() as patches:
        patches.enter_context(_patched(storage, "get_all_trials", _answering))
        blocks[key] = [list(trials) if trials is not None else None]
        try:
            if _cache_parts(storage) is not None:
                patches.enter_context(_patched(storage, "create_new_trial", _noting))
                patches.enter_context(_patched(storage, "get_trial", _created_first))
                _reads.created = {}
            yield
        finally:
            del blocks[key]
            _reads.created = outer
