"""How a vrft process stops when it is told to: SIGTERM unwinds it like Ctrl-C.

``timeout``, ``kill``, a stopped pipeline run or a deleted pod send SIGTERM. Python's default
ends the process on the spot, mid-write, with MLflow runs left RUNNING and scratch directories
behind; vrft turns it into the exception :class:`Terminated` instead, so every ``finally`` and
context manager runs: stage runs end KILLED, temporary directories go, child process groups are
stopped. Each kind of process installs it once, at its entry: the ``vrft`` command
(:func:`vrft.cli.main`) and a stage process (:func:`vrft.stage.open_stage`, when nothing in the
process has taken SIGTERM over before it, as under a pipeline).
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so every cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by signal {self.signum}"


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def unwind_on_sigterm(*, only_if_default: bool = False) -> Any:
    """Make SIGTERM raise :class:`Terminated` in this process; return the previous handler, or
    ``None`` when nothing was changed (not the main thread, or ``only_if_default`` and SIGTERM is
    already handled by someone else)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if only_if_default and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def restore_sigterm(previous: Any) -> None:
    """Put back the handler :func:`unwind_on_sigterm` replaced (``None``: nothing to put back)."""
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
