"""vrft.pipelines.kfp_client against a local fake of the Kubeflow Pipelines v2beta1 REST API.

The fake (pytest-httpserver on 127.0.0.1, a free port) answers the endpoints kfp.Client 2.17
calls for our functions, from kfp_server_api's generated clients: healthz, experiments list/create,
runs create/list, recurringruns create/list/delete. It records every request so that the tests can
check what reached the server: the pipeline spec (with its Kubernetes secret references), the
parameters, the converted cron, the concurrency and catch-up policy and the experiment id.
(No ``from __future__ import annotations`` here: kfp reads the component's annotations as types.)
"""

import doctest
import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from kfp import compiler, dsl, kubernetes
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from vrft.components.cluster import config_map_env_spec, image_refs, secret_env_spec
from vrft.pipelines import kfp_client
from vrft.pipelines.kfp_client import KfpError, to_kfp_cron

REGISTRY, TAG = "registry.example.com/ml", "0.1.0"
API = "/apis/v2beta1"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeState:
    """What the fake server holds; ``token`` makes it demand ``Authorization: Bearer <token>``."""

    token: str | None = None
    token_exempt_healthz: bool = False
    tag_name: str | None = "2.5.0"  # the backend version healthz reports (None: not reported)
    redirect_to: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    recurring: list[dict[str, Any]] = field(default_factory=list)
    clock: int = 0

    def stamp(self) -> str:
        self.clock += 1
        return f"2026-11-21T02:00:{self.clock:02d}Z"

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


def handle(state: FakeState, request: Request) -> Response:
    """Answer one request to the fake API from ``state``, recording it first."""
    raw = request.get_data()
    body = json.loads(raw) if raw else None
    query = parse_qs(request.query_string.decode())
    headers = {k.lower(): v for k, v in request.headers.items()}
    state.requests.append(Recorded(request.method, request.path, query, headers, body))
    if state.redirect_to:
        return _reply(302, {}, location=state.redirect_to)
    exempt = state.token_exempt_healthz and request.path == f"{API}/healthz"
    if state.token and not exempt and request.headers.get("Authorization") != f"Bearer {state.token}":
        return _reply(401, {"error": "Unauthenticated", "code": 16, "message": "invalid bearer token"})
    route = getattr(FakeKfpRoutes, f"_{request.method.lower()}_{_route(request.path)}", None)
    if route is None:
        return _reply(
            404, {"error": "Not Found", "code": 5, "message": f"no route {request.method} {request.path}"}
        )
    status, payload = route(state, request.path, query, body)
    return _reply(status, payload)


def _reply(status: int, payload: dict[str, Any], location: str | None = None) -> Response:
    headers = {"Location": location} if location else {}
    return Response(json.dumps(payload), status=status, headers=headers, content_type="application/json")


class FakeKfpRoutes:
    """The endpoints the fake answers: ``_<method>_<route>`` (see ``_route``)."""

    @staticmethod
    def _get_healthz(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        health: dict[str, Any] = {"commit_sha": "unknown", "multi_user": False}
        if state.tag_name is not None:
            health["tag_name"] = state.tag_name
        return 200, health

    @staticmethod
    def _get_experiments(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        found = state.experiments
        if "filter" in query:
            predicate = json.loads(query["filter"][0])["predicates"][0]
            assert predicate["key"] == "display_name"
            found = [e for e in found if e["display_name"] == predicate["stringValue"]]
        return 200, ({"experiments": found, "total_size": len(found)} if found else {})

    @staticmethod
    def _post_experiments(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": body["display_name"],
            "created_at": state.stamp(),
            "storage_state": "AVAILABLE",
        }
        state.experiments.append(experiment)
        return 200, experiment

    @staticmethod
    def _post_runs(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": state.stamp()}
        state.runs.append(run)
        return 200, run

    @staticmethod
    def _get_runs(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        runs = state.runs
        if "experiment_id" in query:
            runs = [r for r in runs if r["experiment_id"] == query["experiment_id"][0]]
        assert query.get("sort_by") == ["created_at desc"]
        runs = sorted(runs, key=lambda r: r["created_at"], reverse=True)[: int(query["page_size"][0])]
        return 200, {"runs": runs, "total_size": len(runs)} if runs else {}

    @staticmethod
    def _post_recurringruns(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        recurring = {
            **body,
            "recurring_run_id": str(uuid.uuid4()),
            "status": "ENABLED",
            "created_at": state.stamp(),
        }
        state.recurring.append(recurring)
        return 200, recurring

    @staticmethod
    def _get_recurringruns(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        found = state.recurring
        if "experiment_id" in query:
            found = [r for r in found if r["experiment_id"] == query["experiment_id"][0]]
        # The real server names this field in camelCase, and so does kfp_server_api's model.
        return 200, {"recurringRuns": found, "total_size": len(found)} if found else {}

    @staticmethod
    def _delete_recurringruns_id(state: FakeState, path: str, query: dict, body: Any) -> tuple[int, dict]:
        recurring_id = path.rsplit("/", 1)[1]
        kept = [r for r in state.recurring if r["recurring_run_id"] != recurring_id]
        if len(kept) == len(state.recurring):
            return 404, {"error": "NotFound", "code": 5, "message": f"recurring run {recurring_id} not found"}
        state.recurring[:] = kept
        return 200, {}


def _route(path: str) -> str:
    parts = path.removeprefix(API + "/").split("/")
    return parts[0] if len(parts) == 1 else f"{parts[0]}_id"


@dataclass
class FakeKfpServer:
    url: str


@pytest.fixture(autouse=True)
def isolated_kfp_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.Client reads ~/.config/kfp/context.json; keep the developer's out of the tests."""
    from kfp.client import client

    monkeypatch.setattr(client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("KF_PIPELINES_DEFAULT_EXPERIMENT_NAME", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def state() -> FakeState:
    return FakeState()


@pytest.fixture
def server(state: FakeState, httpserver_ipv4: HTTPServer) -> Iterator[FakeKfpServer]:
    """The fake on pytest-httpserver (127.0.0.1, a free port): every path goes to ``handle``."""
    httpserver_ipv4.expect_request(re.compile(".*")).respond_with_handler(lambda r: handle(state, r))
    yield FakeKfpServer(f"http://127.0.0.1:{httpserver_ipv4.port}")
    httpserver_ipv4.check_assertions()  # an assertion inside the fake fails the test that tripped it


@dsl.component(base_image=image_refs(REGISTRY, TAG)["dataset"], install_kfp_package=False)
def build_dataset(shots: int, config_uri: str) -> str:
    return f"{config_uri}#{shots}"


@dsl.pipeline(name="vrft-stand-in")
def stand_in(shots: int = 1, config_uri: str = "s3://vrft/configs/default.yaml") -> None:
    task = build_dataset(shots=shots, config_uri=config_uri)
    for secret, mapping in secret_env_spec("dataset").items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=mapping)
    for config_map, mapping in config_map_env_spec().items():
        kubernetes.use_config_map_as_env(task, config_map_name=config_map, config_map_key_to_env=mapping)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kfp") / "stand_in.yaml"
    compiler.Compiler().compile(stand_in, str(path))
    return path


PARAMS = {"shots": 4, "config_uri": "s3://vrft/configs/coco_8cat.yaml"}


def _assert_carries_package(body: dict[str, Any]) -> None:
    """The body embeds the compiled spec: image, pipeline name, and the secret/config-map references."""
    spec = body["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "vrft-stand-in"
    executor = spec["pipeline_spec"]["deploymentSpec"]["executors"]["exec-build-dataset"]
    assert executor["container"]["image"] == f"{REGISTRY}/vrft-cpu:{TAG}"
    k8s = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-build-dataset"
    ]
    secrets = {
        s["secretName"]: {k["secretKey"]: k["envVar"] for k in s["keyToEnv"]} for s in k8s["secretAsEnv"]
    }
    assert secrets == secret_env_spec("dataset")
    config_maps = {
        c["configMapName"]: {k["configMapKey"]: k["envVar"] for k in c["keyToEnv"]}
        for c in k8s["configMapAsEnv"]
    }
    assert config_maps == config_map_env_spec()
    assert "REPLACE_ME" not in json.dumps(body)  # names of secrets travel, never values
    assert body["runtime_config"]["parameters"] == PARAMS
    assert body["service_account"] == kfp_client.PIPELINE_SERVICE_ACCOUNT


def test_submit_creates_the_experiment_and_a_run_with_spec_parameters_and_secrets(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    run_id = kfp_client.submit(package, server.url, "vrft-nightly", "coco-8cat 4-shot", PARAMS)

    [created] = state.calls("POST", f"{API}/experiments")
    assert created.body["display_name"] == "vrft-nightly"
    [run] = state.calls("POST", f"{API}/runs")
    assert run.body["experiment_id"] == state.experiments[0]["experiment_id"]
    assert run.body["display_name"] == "coco-8cat 4-shot"
    _assert_carries_package(run.body)
    assert run_id == state.runs[0]["run_id"]
    assert not state.calls("POST", f"{API}/pipelines/upload")  # the spec travels inside the run


def test_submit_reuses_an_existing_experiment(server: FakeKfpServer, state: FakeState, package: Path) -> None:
    first = kfp_client.submit(package, server.url, "vrft-nightly", "one", PARAMS)
    second = kfp_client.submit(package, server.url, "vrft-nightly", "two", PARAMS)

    assert first != second
    assert len(state.calls("POST", f"{API}/experiments")) == 1
    assert {r["experiment_id"] for r in state.runs} == {state.experiments[0]["experiment_id"]}


def test_submit_to_a_missing_experiment_without_creation_is_a_clear_error(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    with pytest.raises(KfpError, match=r"experiment 'nowhere' does not exist on http://127\.0\.0\.1:\d+"):
        kfp_client.submit(package, server.url, "nowhere", "run", PARAMS, create_experiment=False)
    assert not state.calls("POST", f"{API}/experiments")
    assert not state.runs


def test_submit_needs_a_compiled_package(server: FakeKfpServer, tmp_path: Path) -> None:
    with pytest.raises(KfpError, match="does not exist; compile it first"):
        kfp_client.submit(tmp_path / "missing.yaml", server.url, "e", "r", {})


def test_schedule_sends_the_converted_cron_concurrency_catchup_and_parameters(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    recurring_id = kfp_client.schedule(
        package, server.url, "vrft-nightly", "coco-8cat nightly", "0 2 * * *", PARAMS, max_concurrency=1
    )

    [call] = state.calls("POST", f"{API}/recurringruns")
    body = call.body
    assert recurring_id == state.recurring[0]["recurring_run_id"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert "periodic_schedule" not in body["trigger"]
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "coco-8cat nightly"
    assert body["experiment_id"] == state.experiments[0]["experiment_id"]
    _assert_carries_package(body)


def test_schedule_refuses_a_duplicate_name_unless_replacing(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    first = kfp_client.schedule(package, server.url, "vrft-nightly", "nightly", "0 2 * * *", PARAMS)
    with pytest.raises(KfpError, match="a schedule named 'nightly' already exists"):
        kfp_client.schedule(package, server.url, "vrft-nightly", "nightly", "0 3 * * *", PARAMS)

    second = kfp_client.schedule(
        package, server.url, "vrft-nightly", "nightly", "0 3 * * *", PARAMS, replace=True, no_catchup=False
    )
    assert [r["recurring_run_id"] for r in state.recurring] == [second]
    assert state.calls("DELETE", f"{API}/recurringruns/{first}")
    assert state.recurring[0]["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert state.recurring[0]["no_catchup"] is False


def test_list_and_delete_schedules(server: FakeKfpServer, state: FakeState, package: Path) -> None:
    coco = kfp_client.schedule(package, server.url, "vrft-nightly", "coco", "0 2 * * *", PARAMS)
    lvis = kfp_client.schedule(
        package, server.url, "vrft-nightly", "lvis", "30 3 * * 1-5", PARAMS, max_concurrency=2
    )

    listed = {s.name: s for s in kfp_client.list_schedules(server.url, "vrft-nightly")}
    assert listed["lvis"].cron == "0 30 3 * * 1-5"
    assert listed["lvis"].max_concurrency == 2
    assert listed["coco"].no_catchup is True
    assert listed["coco"].status == "ENABLED"
    assert listed["coco"].id == coco

    assert kfp_client.delete_schedule(server.url, "lvis") == lvis  # by name
    assert kfp_client.delete_schedule(server.url, coco) == coco  # by id
    assert kfp_client.list_schedules(server.url) == []
    with pytest.raises(KfpError, match="no schedule with id or name 'coco'"):
        kfp_client.delete_schedule(server.url, "coco")


def test_schedules_are_listed_in_the_context_namespace_without_namespace(
    server: FakeKfpServer, state: FakeState, tmp_path: Path
) -> None:
    """kfp's list_recurring_runs sends no namespace unless given one: a multi-user Kubeflow would get
    an unscoped request. The client's user namespace (kfp's context file) fills in, as kfp's list_runs does."""
    (tmp_path / "kfp-context.json").write_text(json.dumps({"namespace": "team-vision"}))
    kfp_client.list_schedules(server.url)
    with pytest.raises(KfpError, match="no schedule"):
        kfp_client.delete_schedule(server.url, "nightly")
    listed = state.calls("GET", f"{API}/recurringruns")
    assert len(listed) == 2
    assert all(call.query.get("namespace") == ["team-vision"] for call in listed)


def test_several_experiments_of_one_name_are_a_clear_error(server: FakeKfpServer, state: FakeState) -> None:
    state.experiments += [
        {
            "experiment_id": str(uuid.uuid4()),
            "display_name": "vrft",
            "created_at": state.stamp(),
            "storage_state": "AVAILABLE",
        }
        for _ in range(2)
    ]
    with pytest.raises(KfpError, match="several experiments are named 'vrft'.*pass --namespace"):
        kfp_client.list_schedules(server.url, "vrft")


def test_list_runs_newest_first_limited_to_an_experiment(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    for name in ("a", "b", "c"):
        kfp_client.submit(package, server.url, "vrft-nightly", name, PARAMS)
    kfp_client.submit(package, server.url, "other", "elsewhere", PARAMS)

    runs = kfp_client.list_runs(server.url, "vrft-nightly", limit=2)

    assert [(r.name, r.state) for r in runs] == [("c", "PENDING"), ("b", "PENDING")]
    assert runs[0].created_at is not None and runs[0].created_at > runs[1].created_at
    id_, name, state_, created = runs[0]  # a plain (id, name, state, created_at) tuple too
    assert (name, state_) == ("c", "PENDING") and id_ == runs[0].id and created == runs[0].created_at
    assert len(kfp_client.list_runs(server.url, limit=10)) == 4
    with pytest.raises(KfpError, match="experiment 'missing' does not exist"):
        kfp_client.list_runs(server.url, "missing")


def test_a_closed_port_is_an_unreachable_host() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        KfpError, match=rf"cannot reach Kubeflow Pipelines at http://127\.0\.0\.1:{port}: connection refused"
    ):
        kfp_client.list_runs(f"http://127.0.0.1:{port}")


def test_a_host_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(KfpError, match=r"no answer within 0\.3 s"):
            kfp_client.check_host(host, timeout=0.3)


def test_bad_credentials_are_reported_and_good_ones_sent(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    state.token = "good-token"
    with pytest.raises(KfpError, match=r"rejected the credentials \(HTTP 401\)"):
        kfp_client.submit(package, server.url, "vrft-nightly", "run", PARAMS, existing_token="stale-token")
    assert not state.runs

    kfp_client.submit(package, server.url, "vrft-nightly", "run", PARAMS, existing_token="good-token")
    assert state.calls("POST", f"{API}/runs")[0].headers["authorization"] == "Bearer good-token"


def test_credentials_rejected_after_the_health_check_are_reported(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    state.token, state.token_exempt_healthz = "good-token", True
    with pytest.raises(KfpError, match=r"rejected the credentials \(HTTP 401\)"):
        kfp_client.schedule(package, server.url, "vrft-nightly", "n", "0 2 * * *", PARAMS)


def test_a_login_redirect_asks_for_authentication(server: FakeKfpServer, state: FakeState) -> None:
    state.redirect_to = "https://kubeflow.example.com/dex/auth"
    with pytest.raises(
        KfpError, match=r"redirected to a login page \(HTTP 302 to https://kubeflow\.example\.com/dex/auth\)"
    ):
        kfp_client.list_schedules(server.url)


def test_a_host_without_the_api_is_reported(server: FakeKfpServer) -> None:
    with pytest.raises(KfpError, match="does not serve the Kubeflow Pipelines v2 API"):
        kfp_client.check_host(server.url + "/not-kfp")


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 2 * * *", "0 0 2 * * *"),
        ("  15 4 1 * *  ", "0 15 4 1 * *"),
        ("5 0 2 * * *", "5 0 2 * * *"),
        ("@daily", "@daily"),
    ],
)
def test_to_kfp_cron(cron: str, expected: str) -> None:
    assert to_kfp_cron(cron) == expected


@pytest.mark.parametrize("cron", ["", "0 2 * *", "0 0 0 2 * * *"])
def test_to_kfp_cron_rejects_wrong_field_counts(cron: str) -> None:
    with pytest.raises(ValueError, match="expected 5 fields"):
        to_kfp_cron(cron)


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(kfp_client).failed == 0


# --- the backend version the compiled pipeline needs (vrft.pipelines.backend_version) ---


@dsl.component(base_image=image_refs(REGISTRY, TAG)["evaluate"], install_kfp_package=False)
def score(item: str) -> str:
    return item


@dsl.component(base_image=image_refs(REGISTRY, TAG)["report"], install_kfp_package=False)
def gather(scores: list) -> str:
    return ",".join(scores)


@dsl.pipeline(name="vrft-loop-stand-in")
def loop_stand_in() -> None:
    """What the nested DAG compiles to: a ParallelFor whose outputs one task collects."""
    with dsl.ParallelFor(items=["a", "b"]) as item:
        scored = score(item=item)
        kubernetes.add_pod_label(scored, "vrft.dev/client", "true")
    gather(scores=dsl.Collected(scored.output))


@dsl.pipeline(name="vrft-hardened-stand-in")
def hardened_stand_in(shots: int = 1, config_uri: str = "s3://vrft/configs/default.yaml") -> None:
    task = build_dataset(shots=shots, config_uri=config_uri)
    task.set_retry(num_retries=2)
    kubernetes.set_security_context(task, run_as_user=1000, run_as_group=1000, run_as_non_root=True)


@pytest.fixture(scope="module")
def loop_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kfp") / "loop.yaml"
    compiler.Compiler().compile(loop_stand_in, str(path))
    return path


@pytest.fixture(scope="module")
def hardened_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kfp") / "hardened.yaml"
    compiler.Compiler().compile(hardened_stand_in, str(path))
    return path


def _features(path: Path) -> dict[str, tuple[int, int, int]]:
    from vrft.pipelines import backend_version

    return {r.feature: r.version for r in backend_version.requirements(*backend_version.load_package(path))}


def test_requirements_follow_what_the_package_uses(package: Path, loop_package: Path, hardened_package):
    from vrft.pipelines import backend_version as bv

    assert set(_features(package)) == {bv.KUBERNETES_CONFIG.feature}
    loop = _features(loop_package)
    assert loop[bv.ITERATOR_OUTPUTS.feature] == (2, 14, 0)
    assert bv.needed_version(bv.requirements(*bv.load_package(loop_package))) == (2, 14, 0)
    hardened = bv.requirements(*bv.load_package(hardened_package))
    assert {r.feature for r in hardened} == {
        bv.KUBERNETES_CONFIG.feature,
        bv.ROOT_RETRIES.feature,
        bv.SECURITY_CONTEXT.feature,
    }
    assert bv.needed_version(hardened) == (2, 4, 1)  # the security context is dropped, not fatal


def test_a_backend_too_old_for_the_package_is_refused_before_anything_is_created(
    server: FakeKfpServer, state: FakeState, loop_package: Path
) -> None:
    with pytest.raises(KfpError) as failure:
        kfp_client.submit(loop_package, server.url, "vrft-nightly", "run", {})
    message = str(failure.value)
    assert len(message.splitlines()) == 1
    assert "runs backend 2.5.0, but this pipeline needs 2.14.0 or later" in message
    assert "kubeflow/pipelines#11725" in message
    with pytest.raises(KfpError, match="needs 2.14.0 or later"):
        kfp_client.schedule(loop_package, server.url, "vrft-nightly", "n", "0 2 * * *", {})
    assert [r.method for r in state.requests] == ["GET"] * len(state.requests)  # healthz only

    state.tag_name = "2.14.0"
    kfp_client.submit(loop_package, server.url, "vrft-nightly", "run", {})
    assert len(state.runs) == 1


def test_the_strict_2_4_0_driver_is_refused_for_any_vrft_package(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    state.tag_name = "2.4.0"
    with pytest.raises(KfpError, match=r"runs backend 2\.4\.0, but this pipeline needs 2\.4\.1 or later"):
        kfp_client.submit(package, server.url, "vrft-nightly", "run", PARAMS)
    assert not state.runs and not state.experiments


def test_a_backend_without_a_version_is_refused_unless_one_is_given(
    server: FakeKfpServer, state: FakeState, package: Path
) -> None:
    state.tag_name = None
    with pytest.raises(KfpError, match=r"does not report its version .*--backend-version"):
        kfp_client.submit(package, server.url, "vrft-nightly", "run", PARAMS)
    assert not state.runs
    kfp_client.submit(package, server.url, "vrft-nightly", "run", PARAMS, backend_version="2.5.0")
    assert len(state.runs) == 1


def test_a_dropped_security_context_is_a_warning_not_a_refusal(
    server: FakeKfpServer, state: FakeState, hardened_package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kfp_client.submit(hardened_package, server.url, "vrft-nightly", "run", PARAMS)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ignores the tasks' securityContext" in err[0] and "2.16.0" in err[0]
    assert len(state.runs) == 1

    state.tag_name = "2.16.0"
    kfp_client.submit(hardened_package, server.url, "vrft-nightly", "run", PARAMS)
    assert capsys.readouterr().err == ""


def test_backend_version_docstring_examples_hold() -> None:
    from vrft.pipelines import backend_version

    assert doctest.testmod(backend_version).failed == 0
