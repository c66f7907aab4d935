"""Submit, schedule and list vrft runs on a Kubeflow Pipelines cluster.

Everything that talks to a KFP API server goes through ``kfp.Client`` (kfp 2.17, the v2beta1 REST
API). Failures that a person can fix become one-line :class:`KfpError` messages: an unreachable
host, rejected credentials, a login redirect, a missing experiment. Before the first API call the
host's ``/apis/v2beta1/healthz`` is probed with a timeout, so that a wrong URL or token fails in
seconds instead of in kfp's 5 x 5 s healthz retry loop.

What the DAG and the cluster manifests must agree on (images, secrets, service account, GPU
nodes) is named in :mod:`vrft.components.cluster`.

KFP cron expressions have six fields, the first being seconds (robfig/cron): :func:`to_kfp_cron`
turns the usual five-field ``"0 2 * * *"`` (02:00 every day) into ``"0 0 2 * * *"``. The
scheduler evaluates them in the time zone of the KFP controller, UTC on a stock install.

>>> to_kfp_cron("0 2 * * *")
'0 0 2 * * *'
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from vrft.components.cluster import PIPELINE_SERVICE_ACCOUNT

if TYPE_CHECKING:
    import kfp

HEALTHZ_PATH = "/apis/v2beta1/healthz"
_RECURRING_RUNS_PAGE = 100


class KfpError(RuntimeError):
    """A Kubeflow Pipelines call failed for a reason worth one line to the user."""


class RunInfo(NamedTuple):
    """One pipeline run, as listed by :func:`list_runs`."""

    id: str
    name: str
    state: str
    created_at: datetime | None


class ScheduleInfo(NamedTuple):
    """One recurring run, as listed by :func:`list_schedules`."""

    id: str
    name: str
    cron: str
    status: str
    experiment_id: str
    max_concurrency: int | None
    no_catchup: bool | None


def to_kfp_cron(expression: str) -> str:
    """A cron expression in KFP's six-field form (seconds first); five-field crons get ``0`` seconds.

    Six-field expressions and descriptors such as ``@daily`` pass through unchanged.

    >>> to_kfp_cron("30 1 * * 1-5")
    '0 30 1 * * 1-5'
    >>> to_kfp_cron("@daily")
    '@daily'
    """
    text = expression.strip()
    if text.startswith("@"):
        return text
    fields = text.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ValueError(
        f"cron {expression!r}: expected 5 fields (minute hour day month weekday), or 6 with seconds first"
    )


def run_url(host: str, run_id: str) -> str:
    """The KFP UI address of a run."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def check_host(host: str, *, existing_token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Probe the KFP API's healthz endpoint; raise :class:`KfpError` with the reason when it fails.

    Returns the healthz answer (``tag_name``: the backend version, ``multi_user``), ``{}`` if it is
    not a JSON object.
    """
    if not host.startswith(("http://", "https://")):
        raise KfpError(f"KFP host {host!r}: give a URL with its scheme, e.g. http://localhost:8080")
    url = host.rstrip("/") + HEALTHZ_PATH
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if existing_token:
        request.add_header("Authorization", f"Bearer {existing_token}")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise KfpError(_http_error_message(host, exc.code, exc.headers.get("Location"))) from None
    except TimeoutError:
        raise KfpError(f"cannot reach Kubeflow Pipelines at {host}: no answer within {timeout:g} s") from None
    except urllib.error.URLError as exc:
        raise KfpError(f"cannot reach Kubeflow Pipelines at {host}: {_reason(exc.reason)}") from None
    except OSError as exc:
        raise KfpError(f"cannot reach Kubeflow Pipelines at {host}: {_reason(exc)}") from None
    try:
        health = json.loads(body)
    except ValueError:
        return {}
    return health if isinstance(health, dict) else {}


def check_backend_version(
    package_path: str | Path, host: str, health: Mapping[str, Any], backend_version: str | None = None
) -> None:
    """Refuse (one-line :class:`KfpError`) a backend older than the compiled package needs; print
    one warning line per feature it would silently drop (:mod:`vrft.pipelines.backend_version`).

    ``backend_version`` replaces the version the server reports (for servers that report none).
    """
    from vrft.pipelines.backend_version import check_backend, load_package, requirements

    spec, platform = load_package(package_path)
    tag = backend_version or str(health.get("tag_name") or "")
    result = check_backend(tag, requirements(spec, platform), host=host)
    if result.problem:
        raise KfpError(result.problem)
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)


def connect(
    host: str, namespace: str | None = None, *, existing_token: str | None = None, timeout: float = 10.0
) -> kfp.Client:
    """A ``kfp.Client`` for ``host`` after :func:`check_host` has seen the API answer.

    ``namespace`` is the Kubeflow profile namespace of a multi-user install; leave it ``None`` for a
    standalone (single-user) KFP. ``existing_token`` is sent as a bearer token.
    """
    import kfp

    check_host(host, existing_token=existing_token, timeout=timeout)
    with warnings.catch_warnings(), _translate_errors(host):
        warnings.simplefilter("ignore", FutureWarning)  # kfp's "only works with KFP >= 2.0.0-beta.2"
        return kfp.Client(
            host=host.rstrip("/"), namespace=namespace or "kubeflow", existing_token=existing_token
        )


def submit(
    package_path: str | Path,
    host: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    namespace: str | None = None,
    *,
    existing_token: str | None = None,
    create_experiment: bool = True,
    service_account: str | None = PIPELINE_SERVICE_ACCOUNT,
    backend_version: str | None = None,
) -> str:
    """Create a run of a compiled pipeline package in ``experiment``; return the run id.

    Nothing is created on a backend older than the package needs (:func:`check_backend_version`).

    The experiment is created when missing unless ``create_experiment`` is false, in which case a
    missing experiment is a :class:`KfpError`. ``params`` are the pipeline parameters; secrets are
    not parameters (the compiled spec references Kubernetes Secrets, see :func:`vrft.components.cluster.secret_env_spec`).
    ``service_account=None`` leaves the choice to KFP (``pipeline-runner`` / ``default-editor``).
    """
    package = _package(package_path)
    client = _connect_for(package, host, namespace, existing_token, backend_version)
    with _translate_errors(host), contextlib.redirect_stdout(io.StringIO()):  # kfp prints UI links
        experiment_id = _experiment_id(client, experiment, namespace, create=create_experiment, host=host)
        result = client.create_run_from_pipeline_package(
            pipeline_file=str(package),
            arguments=dict(params),
            run_name=run_name,
            experiment_id=experiment_id,
            service_account=service_account,
        )
    return result.run_id


def schedule(
    package_path: str | Path,
    host: str,
    experiment: str,
    job_name: str,
    cron: str,
    params: Mapping[str, Any],
    max_concurrency: int = 1,
    no_catchup: bool = True,
    namespace: str | None = None,
    *,
    existing_token: str | None = None,
    create_experiment: bool = True,
    replace: bool = False,
    service_account: str | None = PIPELINE_SERVICE_ACCOUNT,
    backend_version: str | None = None,
) -> str:
    """Create a recurring run (e.g. the nightly benchmark rerun); return its id.

    ``cron`` may have five fields (converted by :func:`to_kfp_cron`) or six. ``no_catchup`` keeps a
    paused schedule from backfilling every missed night when it resumes. A schedule of the same name
    in the experiment is an error, or is deleted first when ``replace`` is true. Nothing is
    created on a backend older than the package needs (:func:`check_backend_version`).
    """
    package = _package(package_path)
    kfp_cron = to_kfp_cron(cron)
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    client = _connect_for(package, host, namespace, existing_token, backend_version)
    with _translate_errors(host), contextlib.redirect_stdout(io.StringIO()):  # kfp prints UI links
        experiment_id = _experiment_id(client, experiment, namespace, create=create_experiment, host=host)
        for existing in _recurring_runs(client, experiment_id=experiment_id):
            if existing.display_name != job_name:
                continue
            if not replace:
                raise KfpError(
                    f"a schedule named {job_name!r} already exists in experiment {experiment!r} "
                    f"(id {existing.recurring_run_id}); delete it first or replace it"
                )
            client.delete_recurring_run(existing.recurring_run_id)
        recurring = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=kfp_cron,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=dict(params),
            pipeline_package_path=str(package),
            service_account=service_account,
        )
    return recurring.recurring_run_id


def list_schedules(
    host: str,
    experiment: str | None = None,
    namespace: str | None = None,
    *,
    existing_token: str | None = None,
) -> list[ScheduleInfo]:
    """The recurring runs of ``experiment`` (all visible ones if ``None``)."""
    client = connect(host, namespace, existing_token=existing_token)
    with _translate_errors(host):
        experiment_id = None
        if experiment is not None:
            experiment_id = _experiment_id(client, experiment, namespace, create=False, host=host)
        return [
            _schedule_info(r)
            for r in _recurring_runs(client, experiment_id=experiment_id, namespace=namespace)
        ]


def delete_schedule(
    host: str, schedule_ref: str, namespace: str | None = None, *, existing_token: str | None = None
) -> str:
    """Delete a recurring run given its id or its unique name; return the id deleted."""
    client = connect(host, namespace, existing_token=existing_token)
    with _translate_errors(host):
        found = list(_recurring_runs(client, namespace=namespace))
        by_id = [r for r in found if r.recurring_run_id == schedule_ref]
        matches = by_id or [r for r in found if r.display_name == schedule_ref]
        if not matches:
            raise KfpError(f"no schedule with id or name {schedule_ref!r} on {host}")
        if len(matches) > 1:
            ids = ", ".join(r.recurring_run_id for r in matches)
            raise KfpError(f"several schedules are named {schedule_ref!r} ({ids}); delete one by id")
        client.delete_recurring_run(matches[0].recurring_run_id)
        return matches[0].recurring_run_id


def list_runs(
    host: str,
    experiment: str | None = None,
    limit: int = 20,
    namespace: str | None = None,
    *,
    existing_token: str | None = None,
) -> list[RunInfo]:
    """The ``limit`` most recent runs of ``experiment`` (of all experiments if ``None``), newest first."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    client = connect(host, namespace, existing_token=existing_token)
    with _translate_errors(host):
        experiment_id = None
        if experiment is not None:
            experiment_id = _experiment_id(client, experiment, namespace, create=False, host=host)
        response = client.list_runs(
            page_size=limit, sort_by="created_at desc", experiment_id=experiment_id, namespace=namespace
        )
    return [
        RunInfo(run.run_id, run.display_name or "", run.state or "UNKNOWN", run.created_at)
        for run in (response.runs or [])[:limit]
    ]


def _connect_for(
    package: Path, host: str, namespace: str | None, token: str | None, backend_version: str | None
) -> kfp.Client:
    """:func:`connect` after checking that the backend can run ``package``."""
    health = check_host(host, existing_token=token)
    check_backend_version(package, host, health, backend_version)
    return connect(host, namespace, existing_token=token)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects instead of following them: on Kubeflow they lead to a login page."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _http_error_message(host: str, status: int, location: str | None) -> str:
    if status in (401, 403):
        return (
            f"Kubeflow Pipelines at {host} rejected the credentials (HTTP {status}): "
            "pass a valid token, e.g. from `kubectl -n NAMESPACE create token default-editor`"
        )
    if 300 <= status < 400:
        return (
            f"Kubeflow Pipelines at {host} redirected to a login page (HTTP {status} to {location}): "
            "the API needs authentication; pass a token"
        )
    if status == 404:
        return (
            f"{host} does not serve the Kubeflow Pipelines v2 API (HTTP 404 on {HEALTHZ_PATH}); check the URL"
        )
    return f"Kubeflow Pipelines at {host} answered HTTP {status} on {HEALTHZ_PATH}"


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    return str(reason)


@contextlib.contextmanager
def _translate_errors(host: str) -> Iterator[None]:
    """Turn kfp-server-api and urllib3 errors into one-line :class:`KfpError` messages."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        if exc.status in (401, 403):
            raise KfpError(_http_error_message(host, exc.status, None)) from None
        detail = _api_error_detail(exc.body) or exc.reason
        raise KfpError(f"Kubeflow Pipelines at {host} answered HTTP {exc.status}: {detail}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise KfpError(f"cannot reach Kubeflow Pipelines at {host}: {exc.__class__.__name__}") from None


def _api_error_detail(body: str | bytes | None) -> str:
    if not body:
        return ""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip().splitlines()[0][:200] if text.strip() else ""
    if not isinstance(payload, dict):
        return ""
    return str(payload.get("message") or payload.get("error") or "")[:200]


def _package(package_path: str | Path) -> Path:
    path = Path(package_path)
    if not path.is_file():
        raise KfpError(f"pipeline package {path} does not exist; compile it first (vrft compile)")
    return path


def _experiment_id(client: kfp.Client, name: str, namespace: str | None, *, create: bool, host: str) -> str:
    if create:
        return client.create_experiment(name=name, namespace=namespace).experiment_id
    try:
        return client.get_experiment(experiment_name=name, namespace=namespace).experiment_id
    except ValueError as exc:
        if str(exc).startswith("No experiment is found"):
            raise KfpError(
                f"experiment {name!r} does not exist on {host}; create it or submit with creation on"
            ) from None
        if str(exc).startswith("Multiple experiments"):
            raise KfpError(
                f"several experiments are named {name!r} on {host}"
                + ("" if namespace else "; pass --namespace to pick your profile's")
            ) from None
        raise


def _recurring_runs(
    client: kfp.Client, *, experiment_id: str | None = None, namespace: str | None = None
) -> Iterator[Any]:
    # kfp's list_runs falls back to the client's user namespace, list_recurring_runs does not: without
    # it a multi-user Kubeflow receives an unscoped request (and refuses it), so fall back here too.
    namespace = namespace or client.get_user_namespace() or None
    token = ""
    while True:
        page = client.list_recurring_runs(
            page_token=token, page_size=_RECURRING_RUNS_PAGE, experiment_id=experiment_id, namespace=namespace
        )
        yield from page.recurring_runs or []
        token = page.next_page_token or ""
        if not token:
            return


def _schedule_info(recurring: Any) -> ScheduleInfo:
    trigger = recurring.trigger
    if trigger is not None and trigger.cron_schedule is not None:
        cron = trigger.cron_schedule.cron or ""
    elif trigger is not None and trigger.periodic_schedule is not None:
        cron = f"every {trigger.periodic_schedule.interval_second} s"
    else:
        cron = ""
    return ScheduleInfo(
        id=recurring.recurring_run_id,
        name=recurring.display_name or "",
        cron=cron,
        status=recurring.status or recurring.mode or "UNKNOWN",
        experiment_id=recurring.experiment_id or "",
        max_concurrency=int(recurring.max_concurrency) if recurring.max_concurrency is not None else None,
        no_catchup=recurring.no_catchup,
    )
