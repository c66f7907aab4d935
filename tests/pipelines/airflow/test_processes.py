"""A local-process Airflow task's process: forked from one fork server under ``airflow dags test``
(``VRFT_FORK_SERVER=1``), a fresh interpreter otherwise; the same outcome either way."""

import psutil
import pytest

from tests.pipelines.airflow.conftest import failing_dataset_task_env
from vrft.pipelines.airflow import processes
from vrft.pipelines.local.forkserver import FORK_SERVER_ENV, ForkServer


def test_tasks_fork_only_when_asked():
    assert processes.forking_wanted({FORK_SERVER_ENV: "1"}) is True
    assert processes.forking_wanted({FORK_SERVER_ENV: "0"}) is False
    assert processes.forking_wanted({}) is False  # a deployment's task process runs one task


@pytest.mark.timeout(300)
def test_dags_test_forks_its_tasks_from_one_server_with_the_fresh_outcome(tmp_path, capsys, monkeypatch):
    """Two failing dataset tasks (more shots than the source has) forked from one server: each exits 1
    with the stage's reason in its output, as the fresh process does (test_task.py); a collect task
    before them starts fresh (no server is started for it), a report task after them is forked; the
    server ends when closed."""
    env = {**failing_dataset_task_env(tmp_path), FORK_SERVER_ENV: "1"}
    fresh_tasks = []

    def fresh(argv, _env):
        fresh_tasks.append(argv)
        return 0

    monkeypatch.setattr(processes, "_run_fresh", fresh)
    monkeypatch.setattr(processes, "_server", None)
    servers = []
    try:
        assert processes.run_entry_point("collect", ["--work-dir", str(tmp_path / "task-collect")], env) == 0
        assert processes._server is None and len(fresh_tasks) == 1
        for n in range(2):
            assert processes.run_entry_point("dataset", ["--work-dir", str(tmp_path / f"task-{n}")], env) == 1
            servers.append(processes._server)
            failure = [
                line for line in capsys.readouterr().out.splitlines() if line.startswith("vrft: task ")
            ]
            assert len(failure) == 1 and failure[0].startswith(
                "vrft: task shots-1000/dataset (Few-shot dataset (1000 shots)) failed:"
            ), failure
            assert (tmp_path / f"task-{n}" / "error.txt").is_file()
        assert isinstance(servers[0], ForkServer) and servers[1] is servers[0]
        assert processes.run_entry_point("report", ["--work-dir", str(tmp_path / "task-report")], env) == 1
        assert processes._server is servers[0] and len(fresh_tasks) == 1
        assert "failed:" in capsys.readouterr().out
        server = psutil.Process(servers[0].process.pid)
        assert server.is_running() and not server.children()  # the tasks ended and were reaped

        # Airflow stops a task while it runs (its timeout raises in the task's thread): the task and
        # the server, whose answer for it nobody will read, end; the next task gets a new server.
        def interrupted(*_, **__):
            raise KeyboardInterrupt

        monkeypatch.setattr(processes, "print", interrupted, raising=False)
        with pytest.raises(KeyboardInterrupt):
            processes.run_entry_point("dataset", ["--work-dir", str(tmp_path / "task-stopped")], env)
        monkeypatch.delattr(processes, "print")
        assert processes._server is None and servers[0].process.poll() is not None
        assert processes.run_entry_point("dataset", ["--work-dir", str(tmp_path / "task-after")], env) == 1
        assert isinstance(processes._server, ForkServer) and processes._server is not servers[0]
        assert "failed:" in capsys.readouterr().out
        servers.append(processes._server)
    finally:
        processes._close_server()
    assert all(s.process.poll() is not None for s in servers) and processes._server is None
