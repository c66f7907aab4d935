"""The object store's pod, as its manifest runs it, seen from another pod: only the S3 port answers.

The containers of the rendered vrft-s3 Deployment run with their own commands and arguments (the
real ``weed`` binary, the forwarder from the ConfigMap) in a private network namespace, the pod;
their shared /tmp volume is a private mount, /data a temporary directory. A second namespace, the
client pod, is joined to it by a veth pair, as pods are by the CNI. From there the S3 port takes
signed requests, and every other port the pod listens on (the master, volume server, filer and the
S3 gateway's gRPC port, whose PutIdentity call needs no credentials) refuses the connection, while
it answers on the pod's loopback. A gateway bound to all interfaces, as before, fails the check.

Needs root (network and mount namespaces), as on the developers' machines and CI.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vrft.pipelines.local.services import weed_binary

POD_IP, CLIENT_IP = "10.231.0.1", "10.231.0.2"
KEY, SECRET = "testing-access-key", "testing-secret-key"

PROBE = textwrap.dedent("""
    import json, socket, sys
    host, ports = sys.argv[1], json.loads(sys.argv[2])
    found = {}
    for port in ports:
        with socket.socket() as s:
            s.settimeout(2)
            try:
                s.connect((host, port))
                found[port] = "open"
            except ConnectionRefusedError:
                found[port] = "refused"
            except OSError as exc:
                found[port] = type(exc).__name__
    print(json.dumps(found))
""")
S3_CLIENT = textwrap.dedent("""
    import sys, boto3
    from botocore.config import Config
    s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
                      aws_secret_access_key=sys.argv[3], region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))
    s3.put_object(Bucket="vrft", Key="probe/hello.txt", Body=b"hello")
    print(s3.get_object(Bucket="vrft", Key="probe/hello.txt")["Body"].read().decode())
""")


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """A pod's and a client's network namespace, joined by a veth pair; removed afterwards."""
    tag = f"{os.getpid() % 100000}"
    pod, client = f"vrft-pod-{tag}", f"vrft-cl-{tag}"
    _run("ip", "netns", "add", pod)
    _run("ip", "netns", "add", client)
    try:
        _run("ip", "link", "add", f"vp{tag}", "type", "veth", "peer", "name", f"vc{tag}")
        _run("ip", "link", "set", f"vp{tag}", "netns", pod)
        _run("ip", "link", "set", f"vc{tag}", "netns", client)
        for ns, link, ip in ((pod, f"vp{tag}", POD_IP), (client, f"vc{tag}", CLIENT_IP)):
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", link)
            _run("ip", "-n", ns, "link", "set", link, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        yield pod, client
    finally:
        _run("ip", "netns", "del", pod, check=False)
        _run("ip", "netns", "del", client, check=False)


FILES = "/mnt"  # where a container sees the test's files (its /tmp is the pod's volume)


def _outside_the_pod_tmp() -> list[Path]:
    """The checkout and this interpreter's environment, where they lie under /tmp (outermost only)."""
    candidates = sorted({Path(__file__).resolve().parents[2], Path(sys.prefix).resolve()})
    under_tmp = [p for p in candidates if p.is_relative_to("/tmp")]
    return [p for p in under_tmp if not any(p != q and p.is_relative_to(q) for q in under_tmp)]


class Pod:
    """Containers started in one network namespace with a shared private /tmp, stopped at the end."""

    def __init__(self, netns: str, files: Path) -> None:
        self.netns = netns
        self.files = files
        self.tmp = files / "pod-tmp"
        self.tmp.mkdir(parents=True)
        self.logs = files
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        # A mount namespace per container (private propagation: nothing leaks to the host) with the
        # pod's /tmp volume bound over /tmp, as the kubelet does, and the test's files on /mnt. What
        # the container runs (this interpreter, weed, the editable install) lives in the checkout and
        # its environment; one that sits under /tmp (a CI clone there) is bound back at its own path,
        # as an image has its programs outside the volume.
        keep = []
        for i, path in enumerate(_outside_the_pod_tmp()):
            (self.files / f"keep-{i}").mkdir(exist_ok=True)
            keep.append((shlex.quote(str(path)), f"{FILES}/keep-{i}"))
        script = " && ".join(
            [
                f"mount --bind {shlex.quote(str(self.files))} {FILES}",
                *(f"mount --bind {path} {spare}" for path, spare in keep),
                f"mount --bind {shlex.quote(str(self.tmp))} /tmp",
                *(f"mkdir -p {path} && mount --bind {spare} {path}" for path, spare in keep),
                f"exec {shlex.join(argv)}",
            ]
        )
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", self.netns, "unshare", "--mount", "sh", "-c", script],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.logs.glob("*.log")))


def probe(netns: str, host: str, ports: list[int]) -> dict[int, str]:
    result = _run("ip", "netns", "exec", netns, sys.executable, "-c", PROBE, host, json.dumps(ports))
    return {int(k): v for k, v in json.loads(result.stdout).items()}


def listeners(netns: str) -> dict[int, str]:
    """TCP port -> local address of everything listening in ``netns``."""
    found = {}
    for line in _run("ip", "netns", "exec", netns, "ss", "-ltnH").stdout.splitlines():
        address = line.split()[3]
        host, _, port = address.rpartition(":")
        found[int(port)] = host
    return found


def _manifest_containers(render: Any) -> tuple[dict[str, dict[str, Any]], str]:
    docs = render("overlays/lab")
    [deployment] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "vrft-s3"]
    spec = deployment["spec"]["template"]["spec"]
    [config_map] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("vrft-s3-forward")
    ]
    return {c["name"]: c for c in spec["containers"]}, config_map["data"]["forward.py"]


def _pod_argv(container: dict[str, Any]) -> list[str]:
    """The container's command line with the pod's paths mapped to the test's files on /mnt: /data (the
    PVC), the forwarder from the ConfigMap."""
    argv = [*container["command"], *container.get("args", [])]
    programs = {
        "weed": str(weed_binary()),
        "python": sys.executable,
        "/opt/forward/forward.py": f"{FILES}/forward.py",
    }
    return [programs.get(arg, arg).replace("-dir=/data", f"-dir={FILES}/data") for arg in argv]


@pytest.mark.timeout(300)
def test_only_the_s3_port_is_reachable_from_another_pod(render: Any, namespaces, tmp_path: Path) -> None:
    pod_ns, client_ns = namespaces
    containers, forward_source = _manifest_containers(render)
    assert set(containers) == {"seaweedfs", "s3", "s3-port"}
    files = tmp_path / "files"
    (files / "data").mkdir(parents=True)
    (files / "forward.py").write_text(forward_source)
    credentials = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    assert {e["name"] for e in containers["s3"]["env"]} == set(credentials)

    pod = Pod(pod_ns, files)
    try:
        for name in ("seaweedfs", "s3", "s3-port"):
            argv = _pod_argv(containers[name])
            pod.start(name, argv, credentials if name == "s3" else None)
            if name != "s3-port":  # let the next one find its upstream
                time.sleep(1)
        s3_port = containers["s3-port"]["ports"][0]["containerPort"]
        endpoint = f"http://{POD_IP}:{s3_port}"
        deadline = time.monotonic() + 180
        while True:
            done = _run(
                "ip", "netns", "exec", client_ns, sys.executable, "-c", S3_CLIENT, endpoint, KEY, SECRET,
                check=False,
            )  # fmt: skip
            if done.returncode == 0:
                break
            assert time.monotonic() < deadline, f"S3 never answered:\n{done.stderr[-1500:]}\n{pod.log_tail()}"
            time.sleep(2)
        assert done.stdout.strip() == "hello"  # signed requests from the client pod work

        listening = listeners(pod_ns)
        grpc = int(next(a for a in containers["s3"]["args"] if a.startswith("-port.grpc=")).split("=")[1])
        assert grpc in listening and 8888 in listening, listening  # the gateway's gRPC port, the filer
        assert {port: host for port, host in listening.items() if host != "127.0.0.1"} == {s3_port: "0.0.0.0"}
        others = sorted(set(listening) - {s3_port})
        from_client = probe(client_ns, POD_IP, [s3_port, *others])
        assert from_client.pop(s3_port) == "open"
        assert set(from_client.values()) == {"refused"}, from_client
        from_inside = probe(pod_ns, "127.0.0.1", others)
        assert set(from_inside.values()) == {"open"}, (
            from_inside
        )  # the ports exist; only the pod reaches them

        # The check can fail: the gateway as the manifest ran it before (-ip.bind=0.0.0.0) exposes gRPC.
        exposed = [
            a.replace("-ip.bind=127.0.0.1", "-ip.bind=0.0.0.0")
            .replace("-port=8334", "-port=8434")
            .replace(f"-port.grpc={grpc}", "-port.grpc=18434")
            .replace("seaweedfs-s3.sock", "seaweedfs-s3-old.sock")
            for a in _pod_argv(containers["s3"])
        ]
        pod.start("s3-all-interfaces", exposed, credentials)
        deadline = time.monotonic() + 120
        while probe(client_ns, POD_IP, [18434])[18434] != "open":
            assert time.monotonic() < deadline, f"the control gateway never listened:\n{pod.log_tail()}"
            time.sleep(2)
    finally:
        pod.stop()
