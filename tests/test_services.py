"""Local services for real: SeaweedFS S3 on loopback, the MLflow store in it, start/stop/up/down,
and their lifetime: tied to the process that started them, or left up until `down`.

One SeaweedFS instance serves the module (started once); the start/stop tests use their own state
directories with a copy of its already-created MLflow database, so only one start pays for the
MLflow table creation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest
from botocore.exceptions import ClientError

from vrft.pipelines.local.services import (
    CREDENTIALS_FILE,
    STATE_FILE,
    LocalServices,
    ServicesError,
    down,
    port_is_open,
    process_alive,
    up,
)
from vrft.storage import STORE_ROOT_ENV, ArtifactIntegrityError, ArtifactStore, MiB, S3ArtifactStore
from vrft.tracking import PARENT_RUN_ENV, Tracker, TrackingStoreError

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    with LocalServices(tmp_path_factory.mktemp("svc") / "state") as running:
        yield running


@pytest.fixture
def service_env(services: LocalServices, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = services.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    return env


def state_dir_with_db(services: LocalServices, tmp_path: Path) -> Path:
    """A fresh state directory whose MLflow tables already exist (copied), so starting is quick."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(services.db_path, state / "mlflow.db")
    return state


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on."""
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}


def assert_nothing_left(pid: int, ports: dict[str, int]) -> None:
    assert not process_alive(pid), f"SeaweedFS pid {pid} still runs"
    assert [p for p in ports.values() if port_is_open(p)] == []
    assert [s for p in ports.values() for s in Path("/tmp").glob(f"seaweedfs-*-{p}.sock")] == [], (
        "sockets left"
    )


def test_seaweedfs_listens_on_loopback_only_with_private_credentials(services: LocalServices) -> None:
    ports = services.ports
    listening = listening_sockets(services.pid)
    assert listening, "found the server's listening sockets"
    assert {address for address, _ in listening} <= {"127.0.0.1", "::1"}
    assert {port for _, port in listening} <= set(ports.values())
    assert services.s3_endpoint == f"http://127.0.0.1:{ports['s3']}"

    credentials = services.state_dir / CREDENTIALS_FILE
    assert credentials.stat().st_mode & 0o777 == 0o600
    access_key, secret_key = services.credentials()
    for public in (services.state_dir / STATE_FILE, services.log_file):
        assert secret_key not in public.read_text()
    wrong = boto3.client(
        "s3",
        endpoint_url=services.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key[::-1],
    )
    with pytest.raises(ClientError, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        wrong.list_objects_v2(Bucket=services.bucket)


def test_artifacts_round_trip_through_seaweedfs(service_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    (src / "sub" / "deeper").mkdir(parents=True)
    big = os.urandom(11 * MiB)
    (src / "model.safetensors").write_bytes(big)
    (src / "sub" / "config.json").write_text('{"hidden": 64}\n')
    (src / "sub" / "deeper" / "empty").write_bytes(b"")
    store = ArtifactStore.from_uri(service_env[STORE_ROOT_ENV], multipart_threshold=5 * MiB)
    assert isinstance(store, S3ArtifactStore) and store.endpoint_url == service_env["AWS_ENDPOINT_URL"]
    uri = store.upload_dir(src, "runs/r1/grpo/checkpoint")
    etag = store.client.head_object(Bucket=store.bucket, Key="runs/r1/grpo/checkpoint/model.safetensors")[
        "ETag"
    ]
    assert etag.strip('"').endswith("-3"), f"expected a 3-part multipart upload, got ETag {etag}"
    out = store.download_dir(uri, tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == big
    assert (out / "sub" / "config.json").read_text() == '{"hidden": 64}\n'
    assert (out / "sub" / "deeper" / "empty").read_bytes() == b""

    key = "runs/r1/grpo/checkpoint/sub/config.json"
    damages = [(b'{"hidden": 65}\n', "SHA-256 differs"), (b'{"hidden"', "truncated"), (None, "missing")]
    for data, message in damages:
        if data is None:
            store.client.delete_object(Bucket=store.bucket, Key=key)
        else:
            store.client.put_object(Bucket=store.bucket, Key=key, Body=data)
        with pytest.raises(ArtifactIntegrityError, match=message) as info:
            store.download_dir(uri, tmp_path / "again")
        assert info.value.uri == f"s3://{store.bucket}/{key}"
        assert not (tmp_path / "again").exists()


def test_mlflow_runs_go_to_sqlite_and_artifacts_to_seaweedfs(
    services: LocalServices, service_env: dict[str, str]
) -> None:
    tracker = Tracker()
    assert tracker.tracking_uri == services.tracking_uri
    with tracker.parent_run("services-test", "pipeline") as parent_id:
        with tracker.stage_run("dataset", params={"shots": 4}) as stage_id:
            tracker.log_dict("config.json", {"shots": 4})
    assert parent_id and stage_id
    s3 = boto3.client("s3")  # configured by service_env alone
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=services.bucket, Prefix="mlflow/")["Contents"]]
    assert [k for k in keys if k.endswith(f"/{stage_id}/artifacts/config.json")], keys


def test_up_reuses_running_services_and_start_refuses_a_second_instance(services: LocalServices) -> None:
    again = up(services.state_dir)
    assert again.pid == services.pid
    with pytest.raises(ServicesError, match="already run"):
        LocalServices(services.state_dir).start()
    hint = services.ui_hint()
    assert f"--backend-store-uri sqlite:///{services.db_path}" in hint and services.s3_endpoint in hint
    assert "AWS_SHARED_CREDENTIALS_FILE=" in hint and services.credentials()[1] not in hint


def test_context_manager_stops_everything_and_prints_no_secret(
    services: LocalServices, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    state = state_dir_with_db(services, tmp_path)
    (state / STATE_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "start_time": "1"}))  # stale
    with LocalServices(state) as local:
        pid, ports = local.pid, local.ports
        assert port_is_open(ports["s3"])
        secret = local.credentials()[1]
        hint = local.ui_hint()
    assert_nothing_left(pid, ports)
    assert not (state / STATE_FILE).exists() and local.status() == "stopped"
    assert "artifacts need `vrft up` first" in local.ui_hint() and hint != local.ui_hint()
    out, err = capfd.readouterr()
    assert secret not in out + err


UP_PROCESS = textwrap.dedent("""
    import sys
    from vrft.pipelines.local.services import up
    print(up(sys.argv[1]).pid)
""")


def test_down_in_another_process_stops_services_left_up(services: LocalServices, tmp_path: Path) -> None:
    state = state_dir_with_db(services, tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", UP_PROCESS, str(state)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    pid = int(result.stdout.strip())
    local = LocalServices(state)
    assert local.status() == "running" and local.pid == pid, "still running after `up` exited"
    ports = local.ports
    assert down(state) is True
    assert_nothing_left(pid, ports)
    assert local.status() == "stopped" and not (state / "run").exists()
    assert down(state) is False


def test_stale_state_is_detected_and_never_signalled(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    local = LocalServices(state)
    assert local.status() == "stopped"
    with pytest.raises(ServicesError, match="not running"):
        local.env()

    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    (state / STATE_FILE).write_text(json.dumps({"pid": int(finished.stdout), "start_time": None}))
    assert local.status() == "stale"

    # A live process with the recorded pid but another start time: pid reuse, not our server.
    (state / STATE_FILE).write_text(json.dumps({"pid": os.getpid(), "start_time": "0"}))
    assert local.status() == "stale"
    assert down(state) is False, "a stale state is cleared without signalling its pid"
    assert not (state / STATE_FILE).exists()

    (state / STATE_FILE).write_text("{not json")
    assert local.status() == "stale"
    assert down(state) is False and local.status() == "stopped"


THREADS_OUTLIVE_MAIN = textwrap.dedent("""
    import ctypes, socket, sys, threading, time
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    print(server.getsockname()[1], flush=True)
    threading.Thread(target=time.sleep, args=(float(sys.argv[1]),)).start()
    ctypes.CDLL(None).pthread_exit(None)  # the main thread ends; the process and its socket live on
""")


def test_a_process_whose_main_thread_exited_is_alive_while_other_threads_run() -> None:
    # A Go server (SeaweedFS) stopping looks like this: the process is a zombie, the port is still open.
    child = subprocess.Popen(
        [sys.executable, "-c", THREADS_OUTLIVE_MAIN, "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(child.stdout.readline())
        leader_state = lambda: psutil.Process(child.pid).status()  # noqa: E731
        assert wait_for(lambda: leader_state() == psutil.STATUS_ZOMBIE, 10), "the main thread did not exit"
        assert port_is_open(port)
        assert process_alive(child.pid), "counted as exited while a thread still holds its port"
    finally:
        child.wait(30)
    assert not process_alive(child.pid) and not port_is_open(port)


TIED_PROCESS = textwrap.dedent("""
    import json, sys, time
    from vrft.pipelines.local.services import LocalServices
    services = LocalServices(sys.argv[1]).start(tied=True)
    print(json.dumps({"pid": services.pid, "ports": services.ports}), flush=True)
    time.sleep(600)
""")


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.1)
    return condition()


def test_services_tied_to_a_process_die_when_it_is_killed(services: LocalServices, tmp_path: Path) -> None:
    state = state_dir_with_db(services, tmp_path)
    owner = subprocess.Popen(
        [sys.executable, "-c", TIED_PROCESS, str(state)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        started = json.loads(owner.stdout.readline())
        assert LocalServices(state).owner_pid() == owner.pid and LocalServices(state).status() == "running"
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        assert wait_for(lambda: not process_alive(started["pid"]), 30), (
            "SeaweedFS outlived the process it belonged to"
        )
        assert wait_for(lambda: not [p for p in started["ports"].values() if port_is_open(p)], 10)
        local = LocalServices(state)
        assert local.status() == "stale"
        assert down(state) is False and local.status() == "stopped"
        assert [
            s for p in started["ports"].values() for s in Path("/tmp").glob(f"seaweedfs-*-{p}.sock")
        ] == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        down(state)


def test_orphaned_services_are_adopted_by_up_and_replaced_by_a_run(
    services: LocalServices, tmp_path: Path
) -> None:
    state = state_dir_with_db(services, tmp_path)
    local = up(state)
    try:
        pid = local.pid
        finished = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        record = json.loads((state / STATE_FILE).read_text())
        record["owner"] = {"pid": int(finished.stdout), "start_time": "1"}  # a `vrft run` that was killed
        (state / STATE_FILE).write_text(json.dumps(record))
        assert local.status() == "orphaned"
        assert up(state).pid == pid and local.status() == "running" and local.owner_pid() is None  # adopted

        (state / STATE_FILE).write_text(json.dumps(record))
        ports = local.ports
        replaced = LocalServices(state).start(tied=True)  # what `vrft run` does with an orphan
        assert replaced.pid != pid and not process_alive(pid)
        assert replaced.owned_by_this_process()
        assert not [p for p in ports.values() if port_is_open(p) and p not in replaced.ports.values()]
    finally:
        down(state)


def test_up_refuses_services_that_belong_to_a_live_run(services: LocalServices, tmp_path: Path) -> None:
    state = state_dir_with_db(services, tmp_path)
    with LocalServices(state) as local:  # tied to this process, like a run's
        assert local.owned_by_this_process()
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            record = json.loads((state / STATE_FILE).read_text())
            record["owner"] = {"pid": sleeper.pid, "start_time": None}
            (state / STATE_FILE).write_text(json.dumps(record))
            with pytest.raises(
                ServicesError, match=f"belong to a `vrft run` in progress \\(pid {sleeper.pid}\\)"
            ):
                up(state)
        finally:
            sleeper.kill()
            sleeper.wait()


def test_a_corrupted_mlflow_db_is_one_error_naming_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "mlflow.db").write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(
        TrackingStoreError, match=f"^{re.escape(str(state / 'mlflow.db'))}: not a usable MLflow store"
    ):
        LocalServices(state).start()
    assert LocalServices(state).status() == "stopped", "nothing was started"


# -- issue 21, round 3: nothing killed by mistake, one start per state dir, private files ----------

HOLD_IN_USE = textwrap.dedent("""
    import sys
    from vrft.pipelines.local.services import LocalServices
    with LocalServices(sys.argv[1]).in_use():  # what a `vrft run` holds while it uses the services
        print("held", flush=True)
        sys.stdin.read()
""")


def test_a_watchdog_stops_only_the_services_it_registered(services: LocalServices, tmp_path: Path) -> None:
    from vrft.pipelines.local.supervisor import _watchdog

    state = state_dir_with_db(services, tmp_path)
    first = up(state)
    killed_run = first.identity()  # what a run's watchdog registered before the run was SIGKILLed
    try:
        assert down(state) is True
        second = up(state)  # the next run's services, same state directory
        now = second.identity()
        assert now != killed_run
        _watchdog([f"+services {killed_run[0]} {killed_run[1]!r} {state}\n".encode()])
        assert process_alive(*now), "the watchdog of a dead run stopped the next run's services"
        assert LocalServices(state).status() == "running" and LocalServices(state).identity() == now

        _watchdog([f"+services {now[0]} {now[1]!r} {state}\n".encode()])  # its own registration
        assert not process_alive(*now) and LocalServices(state).status() == "stopped"
    finally:
        down(state)


def test_down_refuses_while_a_run_uses_the_services(
    services: LocalServices, short_tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vrft.cli import main

    state = short_tmp_path / "vrft" / "services"  # the layout of `--state-dir tmp/vrft`
    state.mkdir(parents=True)
    shutil.copyfile(services.db_path, state / "mlflow.db")
    local = up(state)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_USE, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            ServicesError, match=f"a `vrft run` in progress \\(pid {holder.pid}\\).*not stopped"
        ):
            down(state)
        capsys.readouterr()
        assert main(["down", "--state-dir", str(state.parent)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"vrft down: error: {state}: a `vrft run` in progress (pid {holder.pid})"), err
        assert local.status() == "running", "down stopped services a run was using"
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert down(state) is True, "once the run is over, down stops them"


UP_ONCE = textwrap.dedent("""
    import json, sys
    from vrft.pipelines.local.services import up
    services = up(sys.argv[1])
    print(json.dumps({"pid": services.pid, "s3": services.s3_endpoint}), flush=True)
""")


def test_concurrent_ups_start_one_server_and_all_print_it(services: LocalServices, tmp_path: Path) -> None:
    state = state_dir_with_db(services, tmp_path)
    ups = [
        subprocess.Popen(
            [sys.executable, "-c", UP_ONCE, str(state)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        for _ in range(4)
    ]
    try:
        answers = [json.loads(p.communicate(timeout=240)[0]) for p in ups]
        assert all(p.returncode == 0 for p in ups)
        assert len({json.dumps(a, sort_keys=True) for a in answers}) == 1, answers
        pid = answers[0]["pid"]
        assert LocalServices(state).pid == pid and port_is_open(int(answers[0]["s3"].rsplit(":", 1)[1]))
        data_dir = str(state / "s3")
        weeds = [
            p.pid
            for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "weed" and f"-dir={data_dir}" in (p.info["cmdline"] or [])
        ]
        assert weeds == [pid], f"SeaweedFS servers on {data_dir}: {weeds}"
    finally:
        down(state)


def test_the_state_dir_and_every_file_in_it_are_private(services: LocalServices, service_env) -> None:
    boto3.client("s3").put_object(Bucket=services.bucket, Key="modes/probe.txt", Body=b"x" * 4096)
    # SeaweedFS gives its volume-info files (.vif) 0644 whatever the umask; they sit in the 0700 data
    # directory, which no other user can enter.
    wider = [
        f"{path} {stat_mode:o}"
        for path in [services.state_dir, *services.state_dir.rglob("*")]
        if not path.is_symlink()
        and (stat_mode := path.stat().st_mode & 0o777) & 0o077
        and not (path.suffix == ".vif" and path.parent == services.state_dir / "s3")
    ]
    assert wider == [], "readable by other users: " + ", ".join(wider)
    assert services.state_dir.stat().st_mode & 0o777 == 0o700
    assert (services.state_dir / "s3").stat().st_mode & 0o777 == 0o700
    assert (services.state_dir / "s3").is_dir() and services.db_path.is_file() and services.log_file.is_file()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not an ini file at all\n", "not an AWS credentials file"),
        (bytes(range(256)) * 4, "not UTF-8 text"),
        (b"[default]\naws_access_key_id =\naws_secret_access_key =\n", "aws_access_key_id is empty"),
        (b"[default]\naws_access_key_id = vrftkey\n", "aws_secret_access_key is missing"),
        (b"[other]\naws_access_key_id = vrftkey\n", "aws_access_key_id is missing"),
    ],
    ids=["garbage", "random-bytes", "empty-values", "no-secret", "no-default-section"],
)
def test_bad_credentials_are_one_line_naming_the_file_and_start_nothing(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / CREDENTIALS_FILE).write_bytes(content)
    with pytest.raises(
        ServicesError, match=f"^{re.escape(str(state / CREDENTIALS_FILE))}: .*{expected}"
    ) as err:
        LocalServices(state).start()
    assert "\n" not in str(err.value) and "REDACTED" not in str(err.value)
    assert LocalServices(state).status() == "stopped" and not (state / STATE_FILE).exists()


def test_the_log_tail_never_redacts_an_empty_or_one_character_secret(tmp_path: Path) -> None:
    local = LocalServices(tmp_path)
    local.log_file.write_text("volume server started\nerror: disk\n")
    assert local._log_tail("") == "volume server started\nerror: disk"
    assert local._log_tail("e") == "volume server started\nerror: disk"
    assert local._log_tail("disk") == "volume server started\nerror: REDACTED"


def test_a_deleted_s3_data_dir_gives_working_services_and_reruns_cached_stages(
    services: LocalServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `rm -rf <state>/services/s3` the next start serves an empty bucket: a cached stage result
    is not intact (its task runs again) and new artifacts and MLflow runs are written as before."""
    from vrft.experiment import load_experiment
    from vrft.io import MANIFEST_NAME, sha256_file, write_manifest
    from vrft.pipelines.local.cache import StageCache
    from vrft.pipelines.plan import build_plan

    state = state_dir_with_db(services, tmp_path)
    task = build_plan(load_experiment(REPO / "configs" / "default.yaml")).tasks[0]
    cache = StageCache(tmp_path / "stage-cache", code="c")
    local = tmp_path / "dataset"
    local.mkdir()
    (local / "rows.bin").write_bytes(b"rows" * 1000)
    write_manifest(local, {})
    try:
        for round_ in ("before", "after"):
            with LocalServices(state) as running:
                for key, value in running.env().items():
                    monkeypatch.setenv(key, value)
                store = ArtifactStore.from_uri(running.env()[STORE_ROOT_ENV])
                if round_ == "after":
                    hit, why = cache.lookup(cache.key(task, {}))
                    assert hit is None and "not intact" in why and "no manifest.json" in why, why
                uri = store.upload_dir(local, f"runs/{round_}/dataset")
                cache.record(
                    cache.key(task, {}),
                    task,
                    round_,
                    {"dataset": {"uri": uri, "manifest_sha256": sha256_file(local / MANIFEST_NAME)}},
                )
                assert cache.lookup(cache.key(task, {}))[0].run_id == round_
                with Tracker().parent_run("deleted-s3", round_) as parent:
                    Tracker().log_dict("config.json", {"round": round_})
                assert parent
            shutil.rmtree(state / "s3")
    finally:
        down(state)


# Requests that write (or list) data on one SeaweedFS component or another: the master's file-id
# assignment, volume growth and collection (bucket) deletion, the filer's and a volume server's
# uploads and deletes, S3's unsigned put/delete/list.
UNAUTHENTICATED_REQUESTS = [
    ("GET", "/dir/assign"),
    ("POST", "/dir/assign"),
    ("GET", "/vol/grow?count=1"),
    ("GET", "/col/delete?collection=vrft"),
    ("PUT", "/buckets/vrft/intruder.txt"),
    ("POST", "/buckets/vrft/intruder.txt"),
    ("DELETE", "/buckets/vrft/probe/kept.txt"),
    ("GET", "/buckets/vrft/"),
    ("POST", "/1,01637037d6"),
    ("DELETE", "/1,01637037d6"),
    ("PUT", "/vrft/intruder.txt"),
    ("DELETE", "/vrft/probe/kept.txt"),
    ("GET", "/vrft?list-type=2"),
]


def _answer(port: int, method: str, path: str, tls: bool) -> int | str:
    """The HTTP status a request without credentials gets (plain or TLS without a client certificate),
    or the error that stopped it."""
    import http.client
    import ssl

    try:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, body=b"intruder" if method in ("PUT", "POST") else None)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__


def _speaks_plaintext_grpc(port: int) -> bool:
    """Whether ``port`` answers an HTTP/2 connection preface in the clear (a plaintext gRPC server does,
    with a SETTINGS frame): then anyone could call it, e.g. to be assigned a file id with a write JWT."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        try:
            frame = sock.recv(9)
        except OSError:
            return False
    return len(frame) == 9 and frame[3] == 4


def test_no_port_of_the_services_accepts_an_unauthenticated_request(
    services: LocalServices, service_env: dict[str, str]
) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=services.bucket, Key="probe/kept.txt", Body=b"kept")
    ports = services.ports
    assert set(ports.values()) == {port for _, port in listening_sockets(services.pid)}, "a port not probed"
    accepted = [
        f"{name}:{port} {'https' if tls else 'http'} {method} {path} -> {status}"
        for name, port in ports.items()
        for tls in (False, True)
        for method, path in UNAUTHENTICATED_REQUESTS
        if isinstance(status := _answer(port, method, path, tls), int) and 200 <= status < 300
    ]
    assert accepted == [], "accepted without credentials:\n" + "\n".join(accepted)
    grpc_in_clear = [f"{name}:{port}" for name, port in ports.items() if _speaks_plaintext_grpc(port)]
    assert grpc_in_clear == [], f"plaintext gRPC (no client certificate needed): {grpc_in_clear}"
    assert s3.get_object(Bucket=services.bucket, Key="probe/kept.txt")["Body"].read() == b"kept"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=services.bucket).get("Contents", [])]
    assert not [k for k in keys if "intruder" in k], keys
    assert (services.state_dir / "security.toml").stat().st_mode & 0o777 == 0o600
