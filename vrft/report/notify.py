"""The nightly regression notice: a short Markdown summary and an optional webhook POST.

The report stage compares a nightly run with the previous nightly run of the same config and writes
``{"regressions": [{"metric", "previous", "current", "drop"}, ...], "run_id": ..., "config": ...}``.
:func:`notify` turns that into Markdown (written next to the report, for humans and the KFP UI)
and, when a webhook URL is configured, POSTs ``{"text": markdown}`` to it: the shape Slack,
Mattermost, Rocket.Chat and Google Chat incoming webhooks accept.

Only the run id, the config name and the regression numbers go out; credentials embedded in URLs
and query strings (pre-signed links) are stripped. A webhook URL usually embeds a token, so it comes
from the environment (``VRFT_WEBHOOK_URL``, the ``vrft-notify`` Secret) or config, and is never
logged beyond its host. A failed POST is logged, never raised: a notice must not fail the run.

>>> print(render_markdown({"run_id": "r1", "config": "coco.yaml", "regressions": [
...     {"metric": "rft/mAP", "previous": 0.41, "current": 0.38, "drop": 0.03}]}))
**vrft nightly: 1 regression** in run `r1` (config `coco.yaml`)
<BLANKLINE>
| metric | previous | current | drop |
| --- | ---: | ---: | ---: |
| rft/mAP | 0.41 | 0.38 | 0.03 |
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_ENV = "VRFT_WEBHOOK_URL"

log = logging.getLogger(__name__)

_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_URL_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]+)[?#]\S*")


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read and check a regression summary JSON written by the report stage."""
    summary = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(summary, dict) or not isinstance(summary.get("regressions"), list):
        raise ValueError(f"{path}: not a regression summary (expected an object with a 'regressions' list)")
    return summary


def render_markdown(summary: Mapping[str, Any]) -> str:
    """A short Markdown notice: headline, then one table row per regressed metric."""
    regressions = summary.get("regressions") or []
    where = f"in run `{_clean(summary.get('run_id', 'unknown'))}` (config `{_config_name(summary.get('config'))}`)"
    if not regressions:
        return f"**vrft nightly: no regression** {where}"
    noun = "regression" if len(regressions) == 1 else "regressions"
    lines = [
        f"**vrft nightly: {len(regressions)} {noun}** {where}",
        "",
        "| metric | previous | current | drop |",
        "| --- | ---: | ---: | ---: |",
    ]
    for item in regressions:
        cells = [_clean(item.get("metric", "?"))] + [
            _number(item.get(k)) for k in ("previous", "current", "drop")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def post_webhook(url: str, text: str, *, timeout: float = 10.0) -> bool:
    """POST ``{"text": text}`` as JSON; True on a 2xx answer, False (logged) on anything else."""
    parts = urlsplit(url)
    target = f"{parts.scheme}://{parts.hostname}" if parts.hostname else "an invalid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        log.warning("webhook not sent: %s is not an http(s) URL", target)
        return False
    request = urllib.request.Request(
        url,
        data=json.dumps({"text": text}).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return True
    except urllib.error.HTTPError as exc:
        log.warning("webhook to %s failed: HTTP %s", target, exc.code)
    except TimeoutError:
        log.warning("webhook to %s failed: no answer within %g s", target, timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        log.warning("webhook to %s failed: %s", target, reason)
    return False


def notify(
    summary_path: str | Path,
    webhook_url: str | None = None,
    *,
    markdown_path: str | Path | None = None,
    only_regressions: bool = True,
    timeout: float = 10.0,
) -> Path:
    """Write the Markdown notice (default: beside the summary, ``.md``) and POST it if configured.

    The webhook URL is ``webhook_url`` or else ``$VRFT_WEBHOOK_URL``; with neither nothing is sent.
    With ``only_regressions`` a clean night is written but not sent. Returns the Markdown path.
    """
    summary = load_summary(summary_path)
    text = render_markdown(summary)
    out = Path(markdown_path) if markdown_path is not None else Path(summary_path).with_suffix(".md")
    out.write_text(text + "\n", encoding="utf-8")
    url = webhook_url or os.environ.get(WEBHOOK_ENV, "").strip()
    if url and (summary["regressions"] or not only_regressions):
        post_webhook(url, text, timeout=timeout)
    return out


def _config_name(config: Any) -> str:
    """A config path or name for the headline; a whole inline config is never sent."""
    if isinstance(config, Mapping):
        config = config.get("name") or "inline config"
    return _clean(config if config is not None else "unknown")


def _clean(value: Any) -> str:
    """Text safe for one Markdown cell: URL credentials and query strings removed, pipes escaped."""
    text = _URL_QUERY.sub(r"\1", _URL_USERINFO.sub(r"\1", str(value)))
    return " ".join(text.split()).replace("|", "\\|").replace("`", "'")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _clean(value) if value is not None else "-"
    return f"{value:.4g}"
