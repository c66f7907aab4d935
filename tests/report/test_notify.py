"""vrft.report.notify: the Markdown notice and the webhook POST, against a local HTTP server
(pytest-httpserver)."""

from __future__ import annotations

import doctest
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from vrft.report import notify

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
SUMMARY = {
    "run_id": "run-42",
    "config": f"s3://AKIAEXAMPLE:{SECRET}@vrft/configs/coco_8cat.yaml?X-Amz-Signature={SECRET}",
    "regressions": [
        {"metric": "rft/coco/mAP", "previous": 0.41234, "current": 0.38, "drop": 0.03234},
        {"metric": "rft/coco/AP|cat", "previous": 0.5, "current": 0.25, "drop": 0.25},
    ],
    "mlflow": {"tracking_password": SECRET},
}


class Hook:
    """The webhook endpoint (pytest-httpserver on 127.0.0.1): records the POSTs it receives and
    answers with ``status``."""

    def __init__(self, server: HTTPServer, status: int = 200) -> None:
        self.server = server
        server.expect_request(f"/hooks/T000/{SECRET}", method="POST").respond_with_data("ok", status=status)

    @property
    def url(self) -> str:
        return self.server.url_for(f"/hooks/T000/{SECRET}")

    @property
    def received(self) -> list[tuple[str, dict[str, str], Any]]:
        return [
            (request.path, {k.lower(): v for k, v in request.headers.items()}, request.get_json())
            for request, _ in self.server.log
        ]


@pytest.fixture
def hook(request: pytest.FixtureRequest, httpserver_ipv4: HTTPServer) -> Iterator[Hook]:
    yield Hook(httpserver_ipv4, getattr(request, "param", 200))
    httpserver_ipv4.check_assertions()  # no request the hook did not expect


@pytest.fixture
def summary_path(tmp_path: Path) -> Path:
    path = tmp_path / "regressions.json"
    path.write_text(json.dumps(SUMMARY))
    return path


@pytest.fixture(autouse=True)
def no_webhook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(notify.WEBHOOK_ENV, raising=False)


def test_notify_writes_markdown_and_posts_it_without_secrets(hook: Hook, summary_path: Path) -> None:
    markdown_path = notify.notify(summary_path, hook.url)

    text = markdown_path.read_text()
    assert markdown_path == summary_path.with_suffix(".md")
    assert text.startswith(
        "**vrft nightly: 2 regressions** in run `run-42` (config `s3://vrft/configs/coco_8cat.yaml`)"
    )
    assert "| rft/coco/mAP | 0.4123 | 0.38 | 0.03234 |" in text
    assert "| rft/coco/AP\\|cat | 0.5 | 0.25 | 0.25 |" in text  # a pipe in a name cannot break the table
    [(path, headers, body)] = hook.received
    assert path == f"/hooks/T000/{SECRET}"
    assert headers["content-type"] == "application/json"
    assert body == {"text": text.rstrip("\n")}
    assert SECRET not in json.dumps(body) and "AKIAEXAMPLE" not in json.dumps(body)


def test_the_webhook_url_can_come_from_the_environment(
    hook: Hook, summary_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url)
    notify.notify(summary_path)
    assert len(hook.received) == 1


def test_a_clean_night_is_written_but_sent_only_on_request(hook: Hook, tmp_path: Path) -> None:
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps({"run_id": "run-43", "config": {"name": "coco_8cat"}, "regressions": []}))

    out = notify.notify(clean, hook.url, markdown_path=tmp_path / "notice.md")
    assert out.read_text() == "**vrft nightly: no regression** in run `run-43` (config `coco_8cat`)\n"
    assert hook.received == []

    notify.notify(clean, hook.url, only_regressions=False)
    assert [body["text"] for _, _, body in hook.received] == [out.read_text().rstrip("\n")]


@pytest.mark.parametrize("hook", [500], indirect=True)
def test_a_failing_webhook_is_logged_not_raised_and_its_token_stays_out_of_the_log(
    hook: Hook, summary_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=notify.__name__):
        out = notify.notify(summary_path, hook.url)
    assert out.is_file()
    assert len(hook.received) == 1
    assert "webhook to http://127.0.0.1 failed: HTTP 500" in caplog.text
    assert SECRET not in caplog.text


def test_an_unreachable_or_silent_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with socket.socket() as silent, caplog.at_level(logging.WARNING, logger=notify.__name__):
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        assert notify.post_webhook(f"http://127.0.0.1:{port}/x", "t", timeout=1) is False
        assert notify.post_webhook(f"http://127.0.0.1:{silent.getsockname()[1]}/x", "t", timeout=0.2) is False
        assert notify.post_webhook("file:///etc/passwd", "t") is False
    assert "Connection refused" in caplog.text
    assert "no answer within 0.2 s" in caplog.text
    assert "not an http(s) URL" in caplog.text


def test_load_summary_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"mAP": 0.4}))
    with pytest.raises(ValueError, match="not a regression summary"):
        notify.load_summary(path)


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(notify, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
