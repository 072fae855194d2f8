"""What a study holds about its devices and its trials, read without PyTorch: the out-of-memory limits and
pack caps recorded per device, and the count of trials per state (``study show`` and reports read these)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tuner.study._record import Key, StudyKey

__all__ = ["counts", "device_key", "failed_pack_kinds", "oom_limits", "pack_caps", "oom_notes"]


def _limits(study: optuna.Study, attr: str, field: str) -> dict[str, dict[str, int]]:
    """Per device, the entry with the smallest ``field`` recorded under the study attribute ``attr``: each
    record is an attribute of its own (``attr/device/value``), so two workers recording at once cannot overwrite
    each other's; a dict of devices under ``attr`` itself (as studies of earlier versions hold it) counts too."""
    attrs = study.user_attrs
    found: dict[str, dict[str, int]] = {}
    old = attrs.get(attr)
    entries = [(device, entry) for device, entry in old.items()] if isinstance(old, dict) else []
    entries += [(entry.get("device"), entry) for name, entry in attrs.items()
                if name.startswith(attr + "/") and isinstance(entry, dict)]
    for device, entry in entries:
        if (isinstance(device, str) and isinstance(entry, dict) and isinstance(entry.get(field), int)
                and entry[field] >= 1 and (device not in found or entry[field] < found[device][field])):
            found[device] = {k: v for k, v in entry.items() if k != "device"}
    return found


def device_key(device: str | None) -> str:
    """The name a device's limits are recorded under: the device, or "this machine" where none was named."""
    return device or "this machine"


def oom_limits(study: optuna.Study) -> dict[str, dict[str, int]]:
    """Per device: the smallest batch size that ran out of memory there, and in which trial."""
    return _limits(study, StudyKey.OOM_BATCH, "batch_size")


def pack_caps(study: optuna.Study) -> dict[str, dict[str, int]]:
    """Per device: the most trials that train at once there (``trials``), since several trials in packs ran
    out of memory together (``ran_out``: how many, in ``trial``'s pack)."""
    return _limits(study, StudyKey.PACK_CAP, "trials")


def failed_pack_kinds(study: optuna.Study) -> dict[tuple[int, str, int], dict]:
    """The kinds of config (batch size, update family, epochs) whose pack's training step failed in this study
    (in any process): they train alone from then on. Each record: the error and the trial."""
    found = {}
    for name, entry in study.user_attrs.items():
        if name.startswith(StudyKey.PACK_FAILED + "/") and isinstance(entry, dict):
            kind = (entry.get("batch_size"), entry.get("family"), entry.get("epochs"))
            if isinstance(kind[0], int) and isinstance(kind[1], str) and isinstance(kind[2], int):
                found[kind] = entry
    return found


def oom_notes(study: optuna.Study) -> list[str]:
    """What was done after an out-of-memory error, per device, from the trials: the batch size that ran out of
    memory, how many configs at that size or more were not trained there, and how many trained as micro-batches
    (``on_oom: accumulate``; a study may have run both ways)."""
    caps = [f"out of memory: {cap.get('ran_out')} trials training at once in packs ran out of memory on {device} "
            f"(trial {cap.get('trial')}); from then on at most {cap.get('trials')} train at once there"
            for device, cap in pack_caps(study).items()]
    limits = oom_limits(study)
    if not limits:
        return caps
    trials = study.get_trials(deepcopy=False)
    accumulate = (study.user_attrs.get(StudyKey.SPEC) or {}).get("on_oom") == "accumulate"
    notes = []
    for device, limit in limits.items():
        if not isinstance(limit, dict):
            continue
        avoided = sum(bool(t.user_attrs.get(Key.OOM_AVOIDED)) and f" on {device}, " in str(t.user_attrs.get(Key.REASON))
                      for t in trials)
        accumulated = [a for t in trials if isinstance(a := t.user_attrs.get(Key.ACCUMULATION), dict)
                       and a.get("device", device) == device]
        done = []
        if avoided or not (accumulated or accumulate):
            done.append(f"were not trained there ({avoided} proposal(s) in all, failed with the reason and not "
                        f"counted against the budget), and the smaller batch sizes were searched")
        if accumulated or (accumulate and not avoided):
            micro = ", ".join(str(m) for m in sorted({a.get("micro_batch") for a in accumulated})) or "-"
            done.append(f"trained there as micro-batches (gradient accumulation to the same batch): "
                        f"{len(accumulated)} trial(s), micro-batches of {micro}")
        notes.append(f"out of memory: batch size {limit.get('batch_size')} ran out of memory on {device} (trial "
                     f"{limit.get('trial')}); from then on configs at that batch size or more "
                     + "; others ".join(done))
    return notes + caps


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out
