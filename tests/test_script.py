"""The installed ``tuner`` script in a subprocess, and the wheel's contents."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "optim-tuner"  # the import package and the command are `tuner`; that name on PyPI is another project
SCRIPT = Path(sys.executable).parent / ("tuner.exe" if os.name == "nt" else "tuner")


def _tuner(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.fail(f"the tuner script is not installed next to {sys.executable}")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("TUNER_STORAGE", None)
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_script_runs_a_tiny_study(tmp_path: Path, objective_ref: str):
    db = tmp_path / "script.db"
    result = _tuner("study", "create", "--objective", objective_ref, "--name", "script", "--n-trials", "3",
                    "--epochs", "2", "--sampler", "random", "--device", "cpu", "--storage", f"sqlite:///{db}",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "study script in sqlite:///" in result.stdout
    assert "ran 3 trial(s)" in result.stdout
    assert "trials: 3 complete, 0 pruned, 0 failed (budget 3)" in result.stdout
    assert "best config" in result.stdout

    assert db.is_file()
    with sqlite3.connect(db) as con:
        assert [r[0] for r in con.execute("SELECT study_name FROM studies")] == ["script"]
        states = [r[0] for r in con.execute("SELECT state FROM trials ORDER BY number")]
    assert states == ["COMPLETE"] * 3

    listed = _tuner("study", "list", "--storage", f"sqlite:///{db}", "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [(r["name"], r["trials"]) for r in json.loads(listed.stdout)] == [("script", 3)]


def test_script_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path, objective_ref: str):
    args = ["study", "create", "--objective", objective_ref, "--sampler", "tpee", "--device", "cpu",
            "--storage", f"sqlite:///{tmp_path / 'x.db'}"]
    result = _tuner(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: --sampler: Unknown sampler 'tpee'. Valid: cmaes, gp, grid, nsgaii, qmc, random, tpe. Did you mean "
        "'tpe'?"
    ]
    debug = _tuner("--debug", *args, cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert not (tmp_path / "x.db").exists()
    assert list(tmp_path.iterdir()) == []


def _build_wheel(source: Path, out: Path) -> Path:
    if importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
               "--disable-pip-version-check", "-w", str(out), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(out.glob(f"{DISTRIBUTION.replace('-', '_')}-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_the_builtins_and_no_generated_files(tmp_path: Path):
    # A copy of the checkout with the files a user's runs leave next to the built-ins: none may ship.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", ".pytest_cache", ".ruff_cache"))
    for stray in ("tuner.db", "objectives/tuner.db", "studies/run.journal", "search_spaces/x.db",
                  "tuner/stray.db", "objectives/__pycache__/digits_mlp.cpython-311.pyc", "objectives/old.pyc",
                  "tuner/__pycache__/config.cpython-311.pyc"):
        (source / stray).parent.mkdir(parents=True, exist_ok=True)
        (source / stray).write_bytes(b"")

    wheel = _build_wheel(source, tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("tuner/_builtin/search_spaces/default.yaml", "tuner/_builtin/objectives/mnist1d_cnn.py",
                     "tuner/_builtin/studies/quickstart.yaml", "tuner/__init__.py", "tuner/cli/_app.py",
                     "tuner/py.typed"):
        assert required in names
    for folder, suffix in (("search_spaces", ".yaml"), ("objectives", ".py"), ("studies", ".yaml")):
        expected = {p.name for p in (REPO / folder).iterdir() if p.suffix == suffix}
        shipped = {Path(n).name for n in names if n.startswith(f"tuner/_builtin/{folder}/")}
        assert shipped == expected, folder
    generated = [n for n in names if n.endswith((".db", ".journal", ".pyc")) or "__pycache__" in n]
    assert generated == []
    assert not any(n.startswith(("tests/", "search_spaces/", "objectives/", "studies/")) for n in names)

    # Installed from the wheel (outside the checkout), the package finds its built-ins.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)], check=True, timeout=300)
    probe = (
        "import json, tuner, tuner._builtin as b\n"
        "from tuner.objectives import list_objectives\n"
        "from tuner.spaces import list_spaces\n"
        "from tuner.study import list_specs\n"
        "print(json.dumps({'file': tuner.__file__, 'objectives': b.builtin_dir('objectives').as_posix(),\n"
        "  'names': sorted(list_objectives()), 'spaces': sorted(list_spaces()), 'specs': sorted(list_specs())}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert Path(info["file"]).is_relative_to(target)
    assert info["objectives"] == (target / "tuner" / "_builtin" / "objectives").as_posix()
    assert {"mnist1d-mlp", "mnist1d-cnn", "digits-mlp", "tabular"} <= set(info["names"])
    assert {"default", "lr-only", "full"} <= set(info["spaces"])
    assert "quickstart" in info["specs"]


def test_the_install_script_installs_python_packages_only():
    """The README's first command (``.ci/install``) touches nothing outside the virtual environment: no system
    package manager, no server; the test command (``.ci/test``) installs what the tests need."""
    root = Path(__file__).resolve().parents[1]
    install = (root / ".ci" / "install").read_text()
    code = [line for line in install.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if any(w in line for w in ("apt-get", "apt ", "postgres", "sudo", "brew"))]
    assert 'pip install -e .\n' in install and 'pip install -e ".[dev]"' in install
    test = (root / ".ci" / "test").read_text()
    assert "bash .ci/install --dev" in test and "apt-get install -y -qq postgresql" in test
    last = test.rstrip().splitlines()[-1]
    assert "-m pytest -q -n " in last and last.endswith('"$@"')  # the user's arguments come last and win
    assert '"pytest-xdist' in (root / "pyproject.toml").read_text()  # what `-n` needs, in the dev extra
    readme = (root / "README.md").read_text()
    assert "bash .ci/install && .venv/bin/tuner study create" in readme and "\nbash .ci/test\n" in readme
    assert "bash .ci/test" in (root / ".ci" / "run").read_text()


def test_the_wheel_installs_under_its_distribution_name_into_a_clean_environment(tmp_path: Path):
    """``pip install optim-tuner`` into a new virtual environment: the distribution carries the name and version,
    its ``tuner`` command runs a study from the installed package (not this checkout). The environment gets
    tuner's dependencies from this one (a path entry, no network); tuner itself only from the wheel."""
    import re
    import site
    import venv

    text = (REPO / "pyproject.toml").read_text()  # tomllib is 3.11+; tuner supports 3.10
    project = {k: re.search(rf'^{k} = "([^"]+)"', text, re.M).group(1) for k in ("name", "version", "tuner")}
    assert project["name"] == DISTRIBUTION and project["tuner"] == "tuner.cli:main"
    wheel = _build_wheel(REPO, tmp_path / "dist")
    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
                    str(wheel)], check=True, timeout=300)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Dependencies from this environment, appended after the clean one's own packages; no .pth of this checkout
    # is read from there (only site directories' .pth files are), so `tuner` can come from the wheel alone.
    (Path(purelib) / "deps_from_test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m, tuner; "
                            "print(m.version('optim-tuner'), tuner.__version__, tuner.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    version, own, location = probe.stdout.split()
    assert version == own == project["version"]
    assert Path(location).is_relative_to(env_dir)
    script = env_dir / "bin" / "tuner"
    shown = subprocess.run([str(script), "--version"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith(f"tuner {version} "), shown.stdout + shown.stderr
    ran = subprocess.run([str(script), "study", "create", "--objective", "digits-mlp", "--space", "lr-only",
                          "--n-trials", "2", "--epochs", "1", "--device", "cpu", "--format", "json"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout)["counts"]["complete"] == 2
    assert (work / "tuner.db").is_file()
