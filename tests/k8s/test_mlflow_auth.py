"""MLflow as k8s/base/mlflow runs it, with authentication on: a stage logs with the credentials the
pipeline already has (vrft-mlflow-credentials as environment variables); without them, nothing.

The rendered manifests' own scripts run here: the migration Job's (tracking and basic-auth schemas)
and the server's init container (waits for both, writes the auth configuration), then
``mlflow server`` with the Deployment's arguments, on a sqlite store and a loopback port instead of
PostgreSQL, S3 and 0.0.0.0. The client is vrft's tracking path in a fresh process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

USER, PASSWORD = "vrft-pipeline", "f3b1c0de5eed4a7b9c2d"
STAGE = textwrap.dedent("""
    from vrft.tracking import Tracker
    tracker = Tracker()
    with tracker.stage_run("train", params={"lr": 0.1}, tags={"vrft.test": "auth"}, run_name="grpo",
                           experiment="auth-check") as run_id:
        tracker.log_metrics({"loss": 0.5}, step=1, run_id=run_id)
    print(run_id)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _containers(render: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    docs = render("overlays/lab")
    workloads = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if "template" in d.get("spec", {})
    }
    server = workloads["vrft-mlflow"]
    [migrate] = workloads["vrft-mlflow-migrate"]["containers"]
    [wait] = server["initContainers"]
    return migrate, wait, server["containers"][0]


@pytest.mark.timeout(300)
def test_a_stage_logs_with_the_pipeline_credentials_and_nothing_gets_in_without(render: Any, tmp_path: Path):
    migrate, wait, server = _containers(render)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    auth_ini = tmp_path / "auth" / "basic_auth.ini"
    server_env = {e["name"]: e for e in server["env"]}
    # The server takes the pipeline's account and its own secret key from the Secrets.
    assert server_env["MLFLOW_AUTH_ADMIN_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "vrft-mlflow-credentials", "key": "MLFLOW_TRACKING_USERNAME"
    }  # fmt: skip
    assert (
        server_env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"]
        == "MLFLOW_TRACKING_PASSWORD"
    )
    assert (
        server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"]
        == "vrft-mlflow-server"
    )
    assert "--app-name=basic-auth" in server["args"]

    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_AUTH_CONFIG_PATH",
    ):
        env.pop(name, None)
    for container in (migrate, wait):  # the Job's migration, then the init container, with their variables
        assert container["command"][:2] == ["python", "-c"]
        own = {e["name"] for e in container["env"]}
        assert "MLFLOW_AUTH_CONFIG_PATH" not in own  # importing mlflow.server.auth would read it
        extra = {"AUTH_CONFIG_OUT": str(auth_ini)} if "AUTH_CONFIG_OUT" in own else {}
        # cwd: importing mlflow.server.auth writes its default database into the working directory
        done = subprocess.run([sys.executable, "-c", container["command"][2]], env={**env, **extra},
                              capture_output=True, text=True, timeout=180, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    assert "database_uri = sqlite" in auth_ini.read_text() and oct(auth_ini.stat().st_mode)[-3:] == "600"

    port = _free_port()
    loopback = {"--host": "127.0.0.1", "--port": str(port), "--workers": "1",
                "--artifacts-destination": (tmp_path / "artifacts").as_uri()}  # fmt: skip
    args = [
        f"{a.split('=')[0]}={loopback[a.split('=')[0]]}" if a.split("=")[0] in loopback else a
        for a in server["args"]
    ]
    # The Deployment's own settings (not its cluster addresses or secrets) hold here too.
    settings = {
        e["name"]: e["value"]
        for e in server["env"]
        if e["name"] in ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "AWS_DEFAULT_REGION")
    }
    assert settings["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    server_process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", *args],
        env={
            **env,
            **settings,
            "MLFLOW_AUTH_ADMIN_USERNAME": USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
        },  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server_process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "MLflow never became healthy"
                time.sleep(1)

        # Only the web server runs: no job runner or Huey consumers for MLflow's GenAI jobs (2.4 GiB
        # and 23 s of CPU at start, against a 3 GiB memory limit).
        tree = psutil.Process(server_process.pid).children(recursive=True)
        job_processes = [
            p.cmdline()
            for p in tree
            if any(part in " ".join(p.cmdline()) for part in ("huey", "mlflow.server.jobs"))
        ]
        assert not job_processes
        client = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        anonymous = subprocess.run(
            [sys.executable, "-c", STAGE], env=client, capture_output=True, text=True, timeout=120
        )
        assert anonymous.returncode != 0 and "401" in anonymous.stderr, anonymous.stderr[-1500:]
        wrong = {**client, "MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
        refused = subprocess.run(
            [sys.executable, "-c", STAGE], env=wrong, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode != 0 and "401" in refused.stderr

        pipeline = {**client, "MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
        logged = subprocess.run(
            [sys.executable, "-c", STAGE], env=pipeline, capture_output=True, text=True, timeout=120
        )
        assert logged.returncode == 0, logged.stderr[-2000:]
        run_id = logged.stdout.strip().splitlines()[-1]
        check = textwrap.dedent(f"""
            from mlflow.tracking import MlflowClient
            run = MlflowClient().get_run({run_id!r})
            print(run.data.metrics["loss"], run.info.status)
        """)
        read = subprocess.run(
            [sys.executable, "-c", check], env=pipeline, capture_output=True, text=True, timeout=120
        )
        assert read.stdout.split() == ["0.5", "FINISHED"], read.stderr[-1500:]
    finally:
        os.killpg(server_process.pid, signal.SIGTERM)
        try:
            server_process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server_process.pid, signal.SIGKILL)
            server_process.wait()
