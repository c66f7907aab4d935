"""What never reaches the MLflow store: credentials, wherever they appear.

Every params/tags mapping and text the :class:`~vrft.tracking.Tracker` logs goes through
:func:`redact` / :func:`redact_text` first, so credentials from the environment or a config never
reach the store:

>>> redact({"s3.secret_key": "abc123xyz", "uri": "https://user:pw@example.org/x", "lr": 1e-6})
{'s3.secret_key': 'REDACTED', 'uri': 'https://REDACTED@example.org/x', 'lr': 1e-06}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "REDACTED"  # also valid inside MLflow metric and param names
# Shorter values of credential variables are not scrubbed from other text: replacing every "1"
# or "abc" would mangle it.
MIN_SECRET_LENGTH = 6

_SENSITIVE_WORDS = re.compile(
    r"SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY"
    r"|AUTHORIZATION"
)
# "pad_token", "eos_token", "vision_start_token" are tokenizer settings, not credentials.
_TOKENIZER_WORDS = {
    "PAD",
    "EOS",
    "BOS",
    "UNK",
    "SEP",
    "CLS",
    "MASK",
    "IMAGE",
    "VIDEO",
    "VISION",
    "START",
    "END",
}
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def is_sensitive_key(key: str) -> bool:
    """Whether a parameter, tag or environment variable name looks like it holds a credential.

    >>> [is_sensitive_key(k) for k in ("AWS_SECRET_ACCESS_KEY", "hub.hf_token", "db.password", "pad_token",
    ...                                "max_tokens", "AWS_ACCESS_KEY_ID", "model.name")]
    [True, True, True, False, False, True, False]
    """
    normalized = re.sub(r"[^A-Z0-9]+", "_", key.upper())
    if _SENSITIVE_WORDS.search(normalized):
        return True
    words = re.sub(r"[^A-Z0-9]+", "_", key.rsplit(".", 1)[-1].upper()).strip("_").split("_")
    return words[-1] == "TOKEN" and (len(words) == 1 or words[-2] not in _TOKENIZER_WORDS)


def env_secrets() -> set[str]:
    """Values of credential-like environment variables, to scrub wherever they appear."""
    return {v for k, v in os.environ.items() if is_sensitive_key(k) and len(v) >= MIN_SECRET_LENGTH}


def redact_text(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` with URL ``user:password@`` parts, the values of credential-like environment
    variables and ``extra_secrets`` replaced by ``REDACTED``."""
    return scrub(text, env_secrets() | set(extra_secrets))


def scrub(text: str, secrets: set[str]) -> str:
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def secrets_in(mapping: Mapping[str, Any]) -> set[str]:
    """String values held under credential-like keys, at any depth."""
    found: set[str] = set()
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            found |= secrets_in(value)
        elif is_sensitive_key(str(key)) and isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            found.add(value)
    return found


def _redact_value(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, Mapping):
        return _redact_mapping(value, secrets)
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub(value, secrets)
    return value


def _redact_mapping(mapping: Mapping[str, Any], secrets: set[str]) -> dict[str, Any]:
    return {
        scrub(str(key), secrets): REDACTED if is_sensitive_key(str(key)) else _redact_value(value, secrets)
        for key, value in mapping.items()
    }


def redact(mapping: Mapping[str, Any], extra_secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of ``mapping`` (nested) that is safe to log.

    Values under credential-like keys become ``REDACTED``; in every other key and string value,
    URL user info and the values of credential-like environment variables, of the mapping's own
    credential keys and ``extra_secrets`` are replaced by ``REDACTED``.
    """
    return _redact_mapping(mapping, env_secrets() | secrets_in(mapping) | set(extra_secrets))
