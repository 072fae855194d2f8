"""``tuner study report|export|trials``: what a study found, as files a user can read or load."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from tuner.cli._app import Format, FormatOpt, StorageOpt, _masked, handle_errors, study_app
from tuner.cli._output import echo, print_edge_notes, print_json, stdout, use_storage
from tuner.errors import ConfigError, count

TopK = Annotated[int, typer.Option("--top-k", min=1, help="Best configs re-trained in the confirmation runs.")]
Seeds = Annotated[int, typer.Option("--seeds", min=1, help="New seeds per config in the confirmation runs.")]
NoConfirm = Annotated[bool, typer.Option("--no-confirm", help="Re-train nothing: use the confirmation stored in "
                                                             "the study where it covers the present top trials, "
                                                             "else the best trial as it is.")]


class Evaluator(str, Enum):
    ped_anova = "ped-anova"
    fanova = "fanova"


class ExportFormat(str, Enum):
    yaml = "yaml"
    json = "json"
    python = "python"
    keras = "keras"


def _unused_confirmation_flags(ctx: typer.Context, study: Any, *, trial: int | None, no_confirm: bool) -> None:
    """--top-k and --seeds size the confirmation runs: given where none run (a study of several objectives, whose
    knee is taken as it is; --trial; --no-confirm), they are said to do nothing instead of being ignored."""
    given = [flag for flag, param in (("--top-k", "top_k"), ("--seeds", "seeds"))  # typed, not a default
             if getattr(ctx.get_parameter_source(param), "name", "") == "COMMANDLINE"]
    from tuner.study._record import StudyKey

    why = ("this study has several objectives: its recommendation is the knee of its Pareto front, taken as it is"
           if len(study.directions) > 1 else "--trial takes that trial as it is" if trial is not None else
           "--no-confirm runs no confirmation" if no_confirm else
           "this study was made by tuner.tune(), whose training runs only in your code: "
           "TuneResult.recommend(top_k=..., seeds=...) confirms there; here the confirmation it stored is used, "
           "else the best trial as it is" if StudyKey.TUNE in study.user_attrs else "")
    if given and why:
        verb = "size" if len(given) > 1 else "sizes"
        echo(("warning:", "yellow"), f" {' and '.join(given)} {verb} the confirmation runs, and none run here "
                                     f"({why})", to_err=True)


def _confirming(study, fit, *, top_k: int, seeds: int, baseline: bool, quiet: bool):
    """Says what the confirmation will cost before it starts (or that the stored one is reused), and returns
    the per-run progress callback: ``run 4/9: trial 12, seed 500000: 0.9375``. A study whose objective changed
    is refused first: nothing is announced that will not run."""
    from tuner.report._confirm import confirmation_plan
    from tuner.study._record import StudyKey

    spec = study.user_attrs.get(StudyKey.SPEC) or {}
    plan = confirmation_plan(study, top_k, seeds, baseline=baseline, study_seed=int(spec.get("seed") or 0))
    if plan.runs or plan.baseline_runs:
        fit.prepared()
    if not quiet:
        echo(plan.line(), to_err=True)
    done = [0]
    total = plan.runs + plan.baseline_runs

    def on_run(what: str, seed: int, value: float) -> None:
        done[0] += 1
        if not quiet:
            echo(f"confirmation run {done[0]}/{max(total, done[0])}: {what}, seed {seed}: {value:.4g}", to_err=True)
    return on_run


@study_app.command("report")
@handle_errors
def study_report(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Study name.")],
    *,
    storage: StorageOpt = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder [default: ./<name>-report].")] = None,
    importance: Annotated[Evaluator, typer.Option(help="Importance evaluator.")] = Evaluator.ped_anova,
    top_k: TopK = 3,
    seeds: Seeds = 3,
    no_confirm: NoConfirm = False,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write report.html (self-contained), report.md, plots, recommended.yaml and narrowed-space.yaml."""
    from tuner._files import check_folder_target, safe_file_name
    from tuner._report_files import is_report_folder
    from tuner.study._open import open_study
    from tuner.study._storage import default_storage

    url = storage or default_storage()
    opened = open_study(name, url)  # a study that is not there is said before PyTorch and matplotlib load
    # The default folder is derived from the study name, which must not steer where files go ("../../x").
    folder = output or Path(f"{safe_file_name(name)}-report")
    check_folder_target(folder, is_report_folder)  # before confirmation runs that could take minutes
    from tuner.report import followup_command, open_for_recommendation, study_fit, write_report

    study = open_for_recommendation(name, url, confirm=not no_confirm, top_k=top_k, seeds=seeds, study=opened)
    _unused_confirmation_flags(ctx, study, trial=None, no_confirm=no_confirm)
    use_storage(url)
    quiet = fmt is Format.json
    # A study with several objectives recommends the knee of its front as it is: nothing to re-train.
    fit = None if no_confirm or len(study.directions) > 1 else study_fit(study, storage)
    on_run = _confirming(study, fit, top_k=top_k, seeds=seeds, baseline=True, quiet=quiet) if fit is not None else None
    followup = followup_command(study, folder / "narrowed-space.yaml", url)  # the report holds it too
    files = write_report(study, folder, storage_label=_masked(url), fit=fit, evaluator=importance.value,
                         top_k=top_k, seeds=seeds, confirm_runs=True, on_run=on_run, followup=followup,
                         storage_url=url)
    if quiet:
        print_json({k: str(v) for k, v in files.items()})
        return
    echo(f"wrote {len(files)} files to {folder}/: open {folder / 'report.html'}")
    from tuner.study._describe import exported_edges

    of, edges = exported_edges(study)
    print_edge_notes(of, edges, ", widened in narrowed-space.yaml" if "narrowed-space.yaml" in files else "")
    if "narrowed-space.yaml" in files:
        echo(f"a follow-up study over the narrowed space: {followup}")


@study_app.command("export")
@handle_errors
def study_export(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Study name.")],
    *,
    storage: StorageOpt = None,
    fmt: Annotated[ExportFormat | None, typer.Option("--format", help="yaml or json (a TrainConfig for "
                                                                      "tuner.load_config), python (plain torch) "
                                                                      "or keras (Keras 3) [default: from the "
                                                                      "-o file's suffix (.json, .py), else yaml].",
                                                     show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File [default: standard output].")] = None,
    trial: Annotated[int | None, typer.Option(help="Export this trial's config instead of the recommendation.")
                     ] = None,
    top_k: TopK = 3,
    seeds: Seeds = 3,
    no_confirm: NoConfirm = False,
) -> None:
    """Export the recommended config (confirmed by re-training the top trials, stored for reuse).

    With --format keras, every setting Keras cannot reproduce exactly is a warning line on standard error (and a
    comment in the file).
    """
    from tuner.study._open import open_study

    fmt = _export_format(fmt, output)
    opened = open_study(name, storage)  # a study that is not there is said before PyTorch loads
    from tuner._files import check_file_target, write_text

    if output is not None:
        check_file_target(output)  # before confirmation runs that could take minutes
    if trial is not None:
        from tuner.study._record import trial_with_config

        trial_with_config(opened, trial)  # a trial that is not there, said before PyTorch loads
    from tuner.export import export_warnings
    from tuner.report import export_recommendation, open_for_recommendation, study_fit, study_recommendation

    study = open_for_recommendation(name, storage, confirm=not no_confirm, trial=trial, top_k=top_k, seeds=seeds,
                                    what="nothing to export", study=opened)
    _unused_confirmation_flags(ctx, study, trial=trial, no_confirm=no_confirm)
    use_storage(storage)
    fit = study_fit(study, storage) if trial is None and not no_confirm and len(study.directions) < 2 else None
    on_run = _confirming(study, fit, top_k=top_k, seeds=seeds, baseline=False, quiet=False) if fit else None
    rec = study_recommendation(study, storage, trial=trial, top_k=top_k, seeds=seeds, confirm_runs=not no_confirm,
                               on_run=on_run, fit=fit)
    text = export_recommendation(study, rec, fmt.value)
    if trial is not None:
        from tuner.study._record import record_of, trial_by_number

        picked = trial_by_number(study, trial)
        if picked.state.name != "COMPLETE":
            record = record_of(picked)
            epochs = len(picked.intermediate_values)
            state = {"FAIL": "failed", "PRUNED": "pruned", "WAITING": "queued"}.get(picked.state.name,
                                                                                   picked.state.name.lower())
            said = "after epoch" in (record.reason or "")  # "pruned by ... after epoch 2": not said twice
            echo(("warning:", "yellow"), f" trial {trial} is {state}"
                 + (f" after epoch {epochs} of {rec.config.epochs}" if epochs and not said else "")
                 + (f" ({record.reason})" if record.reason else "")
                 + (": its value is not that of a config trained to the end" if record.value is not None or epochs
                    else ": it has no value, so the config comes with none" if record.reason and
                    record.reason.kind.value in ("diverged", "error", "timeout", "interrupted")
                    else ": it was not trained, so the config comes with no value"), to_err=True)
        elif len(study.directions) > 1:
            from tuner.study._record import beaten_by, objectives_of

            better = beaten_by(study, picked)
            if better is not None:
                names = objectives_of(study)
                echo(("warning:", "yellow"), f" trial {trial} is not on the Pareto front: trial {better.number} does "
                     f"at least as well on {names[0]} and {names[1]}, and better on one (study show lists the "
                     f"front)", to_err=True)
    for line in export_warnings(rec.config, fmt.value):
        echo(("warning:", "yellow"), f" {fmt.value} export: {line}", to_err=True)
    if output is None:
        stdout.write(text)
        stdout.flush()
        return
    write_text(output, text)
    echo(f"wrote {output} ({rec.config.summary()}; {rec.source})", to_err=True)


_SUFFIX_FORMATS = {".json": {ExportFormat.json}, ".yaml": {ExportFormat.yaml}, ".yml": {ExportFormat.yaml},
                   ".py": {ExportFormat.python, ExportFormat.keras}}


def _export_format(fmt: ExportFormat | None, output: Path | None) -> ExportFormat:
    """The export's format: ``--format``, else the one the -o file's suffix names (``best.json``: JSON), else
    YAML. A format the suffix contradicts (YAML into ``best.json``) is refused: the file would not load."""
    fits = _SUFFIX_FORMATS.get(output.suffix.lower()) if output is not None else None
    if fmt is None:
        return ExportFormat.python if fits and ExportFormat.python in fits else next(iter(fits or {ExportFormat.yaml}))
    if fits and fmt not in fits:
        raise ConfigError(f"--format {fmt.value} does not fit -o {output} (a {output.suffix} file holds "
                          f"{' or '.join(sorted(f.value for f in fits))}): name the file for its format, or leave "
                          f"--format out to write {output.suffix[1:]}.")
    return fmt


@study_app.command("trials")
@handle_errors
def study_trials(
    name: Annotated[str, typer.Argument(help="Study name.")],
    *,
    storage: StorageOpt = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write the table to this CSV file.")] = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Every trial with its parameters and recorded attributes (flattened), as a table or CSV."""
    from tuner.study._open import open_study

    study = open_study(name, storage)  # a study that is not there is said before pandas loads
    from tuner._files import check_file_target, write_text

    if csv is not None:
        check_file_target(csv)
    from tuner.report import trials_frame

    frame = trials_frame(study)
    if csv is not None:
        write_text(csv, frame.to_csv(index=False))
        echo(f"wrote {count(len(frame), 'trial')} x {count(len(frame.columns), 'column')} to {csv}", to_err=True)
        return
    if fmt is Format.json:
        stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
        return
    if frame.empty:
        from tuner.study._record import StudyKey
        from tuner.study._storage import study_command

        runs = ("tuner.tune() with this study_name runs them" if StudyKey.TUNE in study.user_attrs else
                f"`{study_command('run', name, storage)}` runs them")
        echo(f"study {name!r} has no trials yet; {runs}")
        return
    cols = [c for c in ("number", "state", "value", "train_seconds", "test_value", "duration_s", "epochs_run",
                        "config.optimizer.name", "config.optimizer.lr", "config.batch_size", "reason")
            if c in frame.columns]
    # Short headings and four significant digits keep a row within a terminal's width; the reason, last, is cut
    # to the room the other columns leave (at least 20 characters), so that each row stays one line beside its
    # trial number. --csv and --format json give every column in full.
    short = {"number": "trial", "test_value": "test", "duration_s": "wall s", "epochs_run": "epochs",
             "config.optimizer.name": "optimizer", "config.optimizer.lr": "lr", "config.batch_size": "batch"}
    from tuner.cli._output import out

    shown = frame[cols].rename(columns=short)
    for col in shown.columns:  # a missing value is "-", in columns of text (None) as of numbers (NaN)
        if shown[col].dtype == object:
            shown[col] = shown[col].where(shown[col].notna(), "-")

    def table(data: Any, width: int = 10_000) -> str:
        return data.to_string(index=False, max_colwidth=10_000, na_rep="-", line_width=width,
                              float_format=lambda v: f"{v:.4g}")

    if "reason" in shown.columns:
        others = max(len(line) for line in table(shown.drop(columns=["reason"])).splitlines())
        room = max(20, out.width - others - 2)
        shown["reason"] = [r if len(str(r)) <= room else str(r)[:room - 3] + "..." for r in shown["reason"]]
    text = table(shown)
    # Where even that is wider than the terminal (a narrow one), pandas cuts it into blocks of columns.
    echo(text if max(len(line) for line in text.splitlines()) <= out.width else table(shown, max(60, out.width)))
