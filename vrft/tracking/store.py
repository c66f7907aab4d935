"""Whether an MLflow store can be used, said in one line naming it."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be used; the message names it (and says what to do)."""


def check_sqlite_store(path: str | Path) -> None:
    """Raise :class:`TrackingStoreError` naming ``path`` if it exists and is not a sound sqlite
    database (MLflow itself reports that as pages of sqlalchemy tracebacks)."""
    path = Path(path)
    if not path.exists():
        return
    problem = ""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            row = db.execute("PRAGMA quick_check").fetchone()
            if not row or row[0] != "ok":
                problem = f"integrity check: {row[0] if row else 'no answer'}"
    except sqlite3.Error as exc:
        problem = f"sqlite: {exc}"
    if problem:
        raise TrackingStoreError(
            f"{path}: not a usable MLflow store ({problem}); move it away (a fresh "
            "store is created in its place) or restore it from a backup"
        )


def sqlite_store_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, else ``None``."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None
