"""How a pool's workers start: forked from a fork server of the pool's own that has imported PyTorch once, with
the supervisor's environment as the pool starts, and nothing of it left behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import forkserver
from pathlib import Path

import pytest

from tuner.errors import ConfigError
from tuner.study._workers import _SERVER, PRELOAD, START_ENV, _check_cuda, _start_method

pytestmark = pytest.mark.skipif("forkserver" not in mp.get_all_start_methods(), reason="no fork server here")


def _modules_at_start(out) -> None:
    out.put({name: name in sys.modules for name in PRELOAD})


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode(errors="replace").split("\0") if "=" in entry)


def test_workers_start_with_pytorch_imported_and_the_server_stops_with_the_pool():
    server = forkserver._forkserver
    assert server._forkserver_pid is None
    ours = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    with _start_method() as ctx:
        assert ctx.get_start_method() == "forkserver"
        out = ctx.Queue()
        procs = [ctx.Process(target=_modules_at_start, args=(out,)) for _ in range(2)]
        for proc in procs:
            proc.start()
        seen = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join()
        pid = server._forkserver_pid
        server_env = _environment(pid)
    assert seen == [dict.fromkeys(PRELOAD, True)] * 2
    # the server asks NVML, not CUDA, whether there is a GPU: a CUDA started there would fail in every worker
    assert server_env.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == ours
    assert pid is not None and server._forkserver_pid is None
    with pytest.raises(ChildProcessError):  # stopped and waited for, not left to run
        os.waitpid(pid, os.WNOHANG)
    assert server._preload_modules == ["__main__"]


def test_a_fork_server_the_process_runs_already_is_left_as_it_is():
    server = forkserver._forkserver
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["json"])
    try:
        proc = ctx.Process(target=print)
        proc.start()
        proc.join()
        pid = server._forkserver_pid
        with _start_method() as pool_ctx:
            assert pool_ctx.get_start_method() == "spawn"
        assert server._forkserver_pid == pid and server._preload_modules == ["json"]
    finally:
        server._stop()
        server._preload_modules = ["__main__"]


def test_each_pool_of_a_script_sees_the_environment_as_it_started_and_leaves_no_process(tmp_path: Path):
    """``tune(workers=2)`` twice in one script, the environment changed in between (as a pipeline does between
    runs): each pool's workers read the value set before it, and after each no process of the pool is left."""
    script = tmp_path / "rounds.py"
    script.write_text(textwrap.dedent("""
        import os
        import tuner

        def train(ctx):
            value = float(os.environ["ROUND"])
            ctx.report(0, value)
            return value

        def children():
            me = str(os.getpid())
            found = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        command = f.read()
                except OSError:
                    continue
                # multiprocessing's resource tracker lives as long as the script, whichever way it starts
                if fields[1] == me and fields[0] != "Z" and b"resource_tracker" not in command:
                    found.append(pid)
            return found

        if __name__ == "__main__":
            for n in (1, 2):
                os.environ["ROUND"] = str(n)
                result = tuner.tune(train, space="lr-only", n_trials=4, epochs=1, workers=2, pruner="none",
                                    storage=f"sqlite:///r{n}.db", study_name="r", verbose=False,
                                    known_starts=False)
                print("round", n, sorted({t.value for t in result.study.trials}), "children", children())
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("round")]
    assert lines == ["round 1 [1.0] children []", "round 2 [2.0] children []"], done.stdout + done.stderr


def test_two_pools_at_once_in_one_process_each_get_a_start_method_and_the_second_leaves_the_server_alone():
    server = forkserver._forkserver
    with _start_method() as first:
        pid = server._forkserver_pid
        with _start_method() as second:  # a pool in another thread of the process, say
            assert (first.get_start_method(), second.get_start_method()) == ("forkserver", "spawn")
        assert server._forkserver_pid == pid  # the second pool's end did not stop the first's server
    assert server._forkserver_pid is None
    with _SERVER:  # a pool in another thread has taken the server, and has not started it yet
        with _start_method() as ctx:
            assert ctx.get_start_method() == "spawn" and server._forkserver_pid is None


def _objective(folder: Path) -> str:
    from conftest import SLOW_OBJECTIVE

    (folder / "synthetic_objective.py").write_text(SLOW_OBJECTIVE)
    return "synthetic_objective.py"


def _command(folder: Path, *args: str) -> list[str]:
    tuner = str(Path(sys.executable).with_name("tuner"))
    return [tuner, "study", "create", "--name", "s", "--storage", f"sqlite:///{folder / 's.db'}", "--space",
            "lr-only", "--threads", "1", *args]


def _environment_without_storage() -> dict[str, str]:
    env = {**os.environ}
    env.pop("TUNER_STORAGE", None)
    return env


def test_a_library_file_in_the_working_folder_does_not_shadow_the_servers_imports(tmp_path: Path):
    """The fork server runs as `python -c`, which would put the working folder first on its sys.path: an
    optuna.py there (a user's script, say) was imported by the server and every worker failed."""
    objective = _objective(tmp_path)
    (tmp_path / "optuna.py").write_text("def main():\n    print('a script of the user')\n")
    done = subprocess.run(_command(tmp_path, "--objective", f"{objective}:objective", "--n-trials", "4",
                                   "--epochs", "1", "--workers", "2"),
                          cwd=tmp_path, env=_environment_without_storage(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 workers ran 4 trial(s)" in done.stdout, done.stdout + done.stderr


def _children(pid: int) -> list[tuple[int, bytes]]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid:
            found.append((int(entry), command))
    return found


def test_ctrl_c_while_the_fork_server_imports_stops_the_run_as_interrupted(tmp_path: Path):
    """A Ctrl-C (to the process group, as a terminal sends it) in the seconds the fork server spends importing
    PyTorch: the command says it was interrupted (exit code 130), instead of the server dying of it and the
    command of an EOFError."""
    objective = _objective(tmp_path)
    proc = subprocess.Popen(_command(tmp_path, "--objective", f"{objective}:slow", "--n-trials", "6", "--epochs",
                                     "8", "--workers", "2"),
                            cwd=tmp_path, env=_environment_without_storage(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(b"forkserver" in command for _, command in _children(proc.pid)):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"no fork server started: {proc.communicate()}")
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Error" not in err and "Traceback" not in err, err[-3000:]
    assert "interrupted" in err


def test_the_environment_can_ask_for_spawned_workers_and_a_wrong_value_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(START_ENV, "spawn")
    with _start_method() as ctx:
        assert ctx.get_start_method() == "spawn" and forkserver._forkserver._forkserver_pid is None
    monkeypatch.setenv(START_ENV, "fork")
    with pytest.raises(ConfigError, match=r"\$TUNER_WORKER_START must be 'forkserver' \(the default\) or 'spawn' "
                                          r"\(got 'fork'\)"):
        with _start_method():
            pass


def test_a_worker_whose_cuda_cannot_start_says_so_and_how_to_spawn_instead(monkeypatch: pytest.MonkeyPatch):
    import torch

    _check_cuda()  # this process: CUDA can start (or there is none)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    with pytest.raises(RuntimeError, match="set TUNER_WORKER_START=spawn"):
        _check_cuda()


def test_a_refused_start_leaves_the_environment_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import optuna

    from tuner.study._record import StudyKey
    from tuner.study._workers import run_workers

    url = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(study_name="e", storage=url).set_user_attr(StudyKey.SPEC, {"name": "e"})
    monkeypatch.setenv(START_ENV, "fork")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with pytest.raises(ConfigError, match=START_ENV):
        run_workers("e", url, 2)
    assert "OMP_NUM_THREADS" not in os.environ  # the threads the workers would have had


def test_the_pool_ends_without_waiting_for_reports_it_has(tmp_path: Path):
    """Every worker that ends by itself sends its report before it exits: the supervisor reads them all and
    returns, without a last wait on an empty queue (half a second at the end of every pool)."""
    script = tmp_path / "reports.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing.queues
        import queue
        import tuner

        real_get = multiprocessing.queues.Queue.get
        empty = []

        def get(self, *args, **kwargs):
            try:
                return real_get(self, *args, **kwargs)
            except queue.Empty:
                empty.append(kwargs.get("timeout"))
                raise

        multiprocessing.queues.Queue.get = get

        def train(ctx):
            ctx.report(0, 1.0)
            return 1.0

        if __name__ == "__main__":
            result = tuner.tune(train, space="lr-only", n_trials=4, epochs=1, workers=2, pruner="none",
                                storage="sqlite:///q.db", study_name="q", verbose=False, known_starts=False)
            print("trials", len(result.study.trials), "empty waits", empty)
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trials 4 empty waits []" in done.stdout, done.stdout + done.stderr


def _threads() -> tuple[int, int]:
    """PyTorch's threads, and the most threads a BLAS library of this process (NumPy's OpenBLAS) uses."""
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return __import__("torch").get_num_threads(), max(blas, default=0)


def _parent_and_threads(out, environ) -> None:
    from tuner.study._workers import _take_environment

    before = _threads()
    _take_environment(environ)
    out.put((os.getppid(), before, _threads()))


def test_a_server_started_early_serves_the_pool_and_stops_with_its_block(monkeypatch: pytest.MonkeyPatch):
    """``early_server``: the server starts as the study is prepared, the pool forks its workers from it (their
    parent), a worker takes the pool's threads (OMP_NUM_THREADS, which the server did not know as it loaded
    PyTorch), and the server stops at the block's end, or at once where the study runs in one process."""
    from tuner.study._workers import _environ, early_server, no_pool

    server = forkserver._forkserver
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # as the server loads PyTorch
    with early_server(True):
        pid = server._forkserver_pid
        assert pid is not None and _SERVER.locked()
        with _environ({"OMP_NUM_THREADS": "1"}), _start_method() as ctx:  # as run_workers starts its pool
            assert ctx.get_start_method() == "forkserver"
            out = ctx.Queue()
            proc = ctx.Process(target=_parent_and_threads, args=(out, dict(os.environ)))
            proc.start()
            parent, before, after = out.get(timeout=120)
            proc.join()
        assert server._forkserver_pid == pid  # the pool's end leaves it to the block
    assert parent == pid and before[0] == 2 and after == (1, min(1, before[1]))  # PyTorch's and BLAS threads
    assert server._forkserver_pid is None and not _SERVER.locked()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)

    with early_server(True):
        pid = server._forkserver_pid
        no_pool()  # auto chose one process: stopped now
        assert server._forkserver_pid is None and not _SERVER.locked()
        with _start_method() as ctx:  # a pool after all would start a server of its own
            assert ctx.get_start_method() == "forkserver" and server._forkserver_pid not in (None, pid)
    assert server._forkserver_pid is None


def test_no_server_starts_early_where_no_pool_is_likely_or_workers_are_spawned(monkeypatch: pytest.MonkeyPatch):
    from tuner.study import _autoworkers
    from tuner.study._workers import early_server, pool_likely

    server = forkserver._forkserver
    monkeypatch.delenv("TUNER_WORKERS", raising=False)
    monkeypatch.setattr(_autoworkers, "usable_cores", lambda: 2)
    assert pool_likely("2", None, None) and pool_likely("auto", 30.0, None) and pool_likely(1, None, "cpu,cpu")
    # devices are counted, not checked (nor PyTorch loaded): preparing the study checks them, after the spec
    assert pool_likely("auto", None, "cuda:0, cuda:7") and not pool_likely("auto", 30.0, "nosuch")
    assert not pool_likely("1", 30.0, None) and not pool_likely("auto", None, None)
    assert not pool_likely("auto", 5.0, None) and not pool_likely("auto", None, "cpu")
    monkeypatch.setattr(_autoworkers, "usable_cores", lambda: 1)
    assert not pool_likely("auto", 30.0, None)
    with early_server(False):
        assert server._forkserver_pid is None
    monkeypatch.setenv(START_ENV, "spawn")
    with early_server(True):
        assert server._forkserver_pid is None and not _SERVER.locked()
    monkeypatch.setenv(START_ENV, "fork")  # a wrong value: said before any study is created or opened
    with pytest.raises(ConfigError, match=START_ENV):
        with early_server(True):
            pass
    assert server._forkserver_pid is None and not _SERVER.locked()


def test_a_wrong_start_method_is_refused_before_the_command_creates_anything(tmp_path: Path):
    env = {**_environment_without_storage(), START_ENV: "fork"}
    done = subprocess.run([*_command(tmp_path, "--objective", _objective(tmp_path), "--workers", "2", "--timeout",
                                     "30", "--n-trials", "2", "--epochs", "1")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.startswith("error: $TUNER_WORKER_START must be") and len(done.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic_objective.py"]
