"""``tuner.run_study``: ``tuner study create`` from Python, on the same engine, checks and record."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import tuner
from tuner.cli import app
from tuner.errors import ConfigError

BASE = {"objective": "digits-mlp", "space": "lr-only", "epochs": 2, "sampler": "random", "device": "cpu",
        "threads": 1}


def test_a_packed_study_from_python(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    result = tuner.run_study(**BASE, n_trials=12, pack=4, storage=url, name="p")
    printed = capsys.readouterr().out
    assert "pack: 4: 4 trials at once, as asked" in printed and "ran 12 trial(s) in " in printed
    assert f"study p in {url}: objective digits-mlp, space lr-only, 12 trials x 2 epochs on cpu" in printed
    assert isinstance(result, tuner.StudyResult) and result.pack == 4 and result.trials == 12
    trials = optuna.load_study(study_name="p", storage=url).trials
    assert len(trials) == 12 and {t.user_attrs.get("pack") for t in trials} == {4}
    assert result.best_value == max(t.value for t in trials if t.value is not None)
    assert isinstance(result.best_config, tuner.TrainConfig)
    value, test = result.fit(result.best_config)  # trains on the study's objective, outside the study
    assert 0.0 <= value <= 1.0 and test is not None
    # The same name and storage resumes: only what the raised budget misses runs.
    again = tuner.run_study(**BASE, n_trials=16, pack=4, storage=url, name="p", verbose=False)
    assert again.trials == 4 and len(again.study.trials) == 16
    assert capsys.readouterr().out == ""


def test_the_same_spec_runs_the_same_trials_as_the_command(tmp_path: Path):
    """One engine: a spec run from Python and from the command line gives the same trials, values included."""
    cli_url, py_url = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'py.db'}"
    created = CliRunner().invoke(app, ["study", "create", "--objective", "digits-mlp", "--space", "lr-only",
                                       "--epochs", "2", "--sampler", "random", "--device", "cpu", "--threads", "1",
                                       "--n-trials", "6", "--pack", "1", "--name", "s", "--storage", cli_url])
    assert created.exit_code == 0, created.output
    tuner.run_study(**BASE, n_trials=6, pack=1, name="s", storage=py_url, verbose=False)

    def trials(url: str) -> list[tuple]:
        return [(t.state.name, t.params, t.value, t.user_attrs.get("test_value"))
                for t in optuna.load_study(study_name="s", storage=url).trials]

    assert trials(cli_url) == trials(py_url)


def test_a_spec_file_or_a_mapping_with_its_keys_replaced(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("objective: digits-mlp\nspace:\n  optimizer: {sgd: {lr: 0.05}}\n  schedule: constant\n"
                    "n_trials: 3\nepochs: 1\nsampler: random\npack: 1\n")
    from_file = tuner.run_study(spec, n_trials=2, storage=f"sqlite:///{tmp_path / 'f.db'}", verbose=False)
    assert len(from_file.study.trials) == 2
    assert {t.user_attrs["config"]["optimizer"]["name"] for t in from_file.study.trials} == {"sgd"}
    mapping = {"objective": "digits-mlp", "space": "lr-only", "n_trials": 2, "epochs": 1, "pack": 1}
    from_mapping = tuner.run_study(mapping, storage=f"sqlite:///{tmp_path / 'm.db'}", verbose=False)
    assert len(from_mapping.study.trials) == 2
    # None replaces a key too: the spec's timeout and batch size are not kept.
    unset = tuner.run_study({**mapping, "timeout": 600, "batch_size": 16}, timeout=None, batch_size=None,
                            storage=f"sqlite:///{tmp_path / 'u.db'}", verbose=False)
    assert unset.prepared.spec.timeout is None and unset.prepared.spec.batch_size is None
    assert {t.params.get("batch_size", t.user_attrs["config"]["batch_size"]) for t in unset.study.trials} == {64}
    # ... where None is a setting of its own; elsewhere (a wrapper passing its optional arguments on) it is
    # not given, and the spec's value stays.
    kept = tuner.run_study({**mapping, "storage": f"sqlite:///{tmp_path / 'k.db'}"}, storage=None, n_trials=None,
                           name=None, verbose=False)
    assert kept.prepared.storage_url.endswith("k.db") and len(kept.study.trials) == 2


def _object():
    from tuner.objectives import load_objective

    return load_objective("digits-mlp")


@pytest.mark.parametrize(("call", "said"), [
    (lambda url: tuner.run_study(**BASE, n_trail=3, storage=url),
     "tuner.run_study(): Unknown argument 'n_trail'. Valid: batch_size,"),
    (lambda url: tuner.run_study(**BASE, worker=2, storage=url), "Did you mean 'workers'?"),
    (lambda url: tuner.run_study(**BASE, devices="cpu,bogus", storage=url), "bogus"),
    (lambda url: tuner.run_study(**{**BASE, "space": "missing.yaml"}, storage=url), "missing.yaml"),
    (lambda url: tuner.run_study(**BASE, enqueue=["missing.yaml"], storage=url), "missing.yaml"),
    (lambda url: tuner.run_study(**BASE, pack=0, storage=url), "must be auto or a whole number from 1 to 4096"),
    (lambda url: tuner.run_study(42, storage=url), "spec must be a spec file, a built-in spec name or a mapping"),
    (lambda url: tuner.run_study(**BASE, workers=0, storage=url), "workers must be auto or a whole number of at"),
    (lambda url: tuner.run_study(**BASE, verbose="yes", storage=url), "verbose must be True or False"),
    (lambda url: tuner.run_study(spec="spec.yaml", storage=url), "spec.yaml:4: key 'schedule.cosinee'"),
    (lambda url: tuner.run_study({"objective": _object()}, space="lr-only", storage=url),
     "objective is an Objective object ('digits-mlp')"),
    (lambda url: tuner.run_study(**BASE, storage=Path(url[len("sqlite:///"):])),
     "storage must be a URL string such as 'sqlite:///tuner.db'"),
    (lambda url: tuner.run_study(objective=_object(), space="lr-only", storage=url),
     "objective is an Objective object ('digits-mlp'); a study stores where its objective comes from, so that "
     "workers and later runs load it again: pass objective='digits-mlp'"),
])
def test_a_mistake_is_refused_before_the_study_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call,
                                                      said: str):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("objective: digits-mlp\nspace:\n  schedule:\n    cosinee: {}\n"
                                        "  optimizer: {adam: {}}\n")
    with pytest.raises(ConfigError) as info:
        call(f"sqlite:///{tmp_path / 'x.db'}")
    assert said in str(info.value), str(info.value)
    assert not (tmp_path / "x.db").exists()


def test_an_interrupt_leaves_what_finished_with_the_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]):
    from tuner.study import _session

    url = f"sqlite:///{tmp_path / 'i.db'}"
    tuner.run_study(**BASE, n_trials=2, storage=url, name="i", verbose=False)
    run = _session.run_study

    def interrupted(study, prepared, **kwargs):
        run(study, prepared, **kwargs)  # the raised budget's trial finishes, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(_session, "run_study", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        tuner.run_study(**BASE, n_trials=3, storage=url, name="i")
    assert "interrupted: the trials that were running are recorded as failed (interrupted) and their configs " \
           "queued again; run_study() with the same name and storage ('i') resumes the study" in capsys.readouterr().out
    result = info.value.result
    assert result.study.study_name == "i" and len(result.study.trials) == 3
    assert result.trials == 1 and result.stopped_by == "interrupted" and result.seconds > 0


def test_a_study_that_has_its_trials_says_how_to_run_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    tpe = {**BASE, "sampler": "tpe"}
    tuner.run_study(**tpe, n_trials=2, storage=url, name="b", verbose=False)
    with warnings.catch_warnings(record=True) as caught:  # joined: the sampler is built again
        warnings.simplefilter("always")
        again = tuner.run_study(**tpe, n_trials=2, storage=url, name="b")
    assert again.trials == 0
    assert "the study already has its 2 finished trials; raise the budget with n_trials=" in capsys.readouterr().out
    # Optuna calls the options tuner sets (TPE's group) experimental: not the caller's business.
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    more = tuner.run_study(**tpe, n_trials=3, storage=url, name="b")
    assert more.trials == 1 and "resuming study 'b': it has 2 finished trials of 3" in capsys.readouterr().out


@pytest.mark.parametrize("call", [
    "tuner.run_study(objective='digits-mlp', space='lr-only', n_trials=4, epochs=1, storage=URL, workers=2, "
    "verbose=False)",
    "tuner.tune(train, space='lr-only', n_trials=4, epochs=1, storage=URL, workers=2, verbose=False)",
])
def test_a_script_that_starts_workers_unguarded_is_told_to_guard_its_code(tmp_path: Path, call: str):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("import tuner\n\n\ndef train(ctx):\n    return ctx.config.optimizer.lr\n\n\n"
                      + call.replace("URL", repr(f"sqlite:///{tmp_path / 'u.db'}")) + "\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    name = call.split("(")[0]
    assert f"{name}(workers=2) ran again in a worker process as it imported your script: guard the " \
           "script's own code with `if __name__ == \"__main__\":`" in done.stderr, done.stderr[-3000:]
    assert "every worker stopped with an error; the first: exit code 1 before it started" in done.stderr, \
        done.stderr[-3000:]


def test_a_refusal_names_the_option_as_the_caller_sets_it(tmp_path: Path):
    """The same refusal says `--n-trials 12` to the command and `n_trials=12` to a Python caller."""
    from tuner.errors import StudyError

    url = f"sqlite:///{tmp_path / 'o.db'}"
    tuner.run_study(**BASE, n_trials=2, storage=url, name="o", verbose=False)
    with pytest.raises(StudyError) as info:
        tuner.run_study(**BASE, n_trials=1, storage=url, name="o", verbose=False)
    assert "ask for more than 2 (n_trials=12)" in str(info.value)
    with pytest.raises(StudyError) as info:
        tuner.run_study(**{**BASE, "space": "adam-family"}, n_trials=2, storage=url, name="o", verbose=False)
    assert "Nothing was changed. Choose another name=..., or continue it with" in str(info.value)
    said = CliRunner().invoke(app, ["study", "create", "--objective", "digits-mlp", "--space", "adam-family",
                                    "--epochs", "2", "--sampler", "random", "--device", "cpu", "--threads", "1",
                                    "--n-trials", "2", "--name", "o", "--storage", url])
    assert said.exit_code == 1 and "Choose another --name, or continue it with" in " ".join(said.output.split())
    said = CliRunner().invoke(app, ["study", "run", "o", "--n-trials", "1", "--storage", url])
    assert said.exit_code == 1 and "ask for more than 2 (--n-trials 12)" in " ".join(said.output.split())


def test_a_timeout_counts_the_runs_preparation_in_one_process_as_with_workers(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    """The timeout is wall time for the whole run: timing threads (here made slow: 2 s) counts against it in one
    process, as the workers' start-up does with workers; it is not a fresh timeout from the first trial."""
    import time

    from tuner.study import _local

    def slow_threads(trainer, threads, workers=1):
        time.sleep(2)
        return 1

    monkeypatch.setattr(_local, "use_threads", slow_threads)
    result = tuner.run_study(**BASE, n_trials=50, timeout=1, workers=1, pack=1, name="t", verbose=False,
                             storage=f"sqlite:///{tmp_path / 't.db'}")
    assert result.trials == 0 and result.stopped_by == "timeout"


def test_a_short_timeout_is_not_spent_timing_threads_and_packs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Under a timeout too short to pay for it (10 s), the run times neither threads nor packs (each takes up
    to a second, which now counts against the timeout): one thread, one trial at a time, said so."""
    from tuner.train import Trainer

    def untimed(self, *args, **kwargs):
        raise AssertionError("timed under a short timeout")

    monkeypatch.setattr(Trainer, "fastest_threads", untimed)
    monkeypatch.setattr(Trainer, "thread_timings", untimed)
    monkeypatch.delenv("TUNER_PACK", raising=False)  # the tests' one-at-a-time default
    monkeypatch.delenv("TUNER_WORKERS", raising=False)
    spec = {**BASE, "threads": None}
    result = tuner.run_study(**spec, n_trials=1000, timeout=3, workers="auto", pack="auto", name="s", verbose=False,
                             storage=f"sqlite:///{tmp_path / 's.db'}")
    assert result.trials >= 1 and result.stopped_by == "timeout"
    assert result.pack == 1 and "left before the timeout: too little to time packs" in result.pack_why
    assert result.workers_why.startswith("a 3 s timeout: too little to pay for starting workers")


def test_a_quiet_call_is_warned_of_what_it_asked_for_and_does_not_get(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]):
    """verbose=False prints nothing: a queued config the space changed, or that the budget leaves out, is a
    warning then (the known-good points the call did not name are not)."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with pytest.warns(UserWarning) as caught:
        tuner.run_study(**BASE, n_trials=1, storage=url, name="q", verbose=False,
                        enqueue=[{"optimizer": {"name": "adam", "lr": 5.0}}, {"optimizer": {"name": "adam"}}])
    said = [str(w.message) for w in caught if str(w.message).startswith("tuner.run_study: ")]
    assert said == ["tuner.run_study: config 1: adam.lr: 5 -> 0.1 (the space's range is 1e-05..0.1)",
                    "tuner.run_study: first trials: 1 not queued, beyond the budget of 1 trial(s): config 2"]
    assert all(w.filename == __file__ for w in caught if str(w.message).startswith("tuner.run_study: "))
    assert capsys.readouterr().out == ""


def test_a_quiet_tune_is_warned_of_what_it_asked_for_and_does_not_get(tmp_path: Path):
    def train(ctx):
        ctx.report(0, ctx.config.optimizer.lr)
        return ctx.config.optimizer.lr

    with pytest.warns(UserWarning) as caught:
        tuner.tune(train, "lr-only", n_trials=1, epochs=1, verbose=False,
                   enqueue=[{"optimizer": {"name": "adam", "lr": 5.0}, "batch_size": 999}, {"optimizer": "adam"}])
    said = [str(w.message) for w in caught if str(w.message).startswith("tuner.tune: ")]
    assert said == ["tuner.tune: first trials: 1 not queued, beyond the budget of 1 trial(s): config 2",
                    "tuner.tune: config 1: adam.lr: 5 -> 0.1 (the space's range is 1e-05..0.1); batch_size: 999 -> "
                    "64 (fixed by the space)"]
