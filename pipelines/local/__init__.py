"""``vrft run``, ``vrft up`` and ``vrft down``: the pipeline on this machine.

* :mod:`~vrft.pipelines.local.services`: a loopback-only S3 server (SeaweedFS) and an MLflow store;
* :mod:`~vrft.pipelines.local.supervisor`: nothing a run starts outlives it (process groups, a
  watchdog for SIGKILL);
* :mod:`~vrft.pipelines.local.runner`: runs the task plan, task after task, with a stage cache
  (:mod:`~vrft.pipelines.local.cache`); each task in its own process
  (:mod:`~vrft.pipelines.local.task`, forked warm by :mod:`~vrft.pipelines.local.forkserver`) or
  container (:mod:`~vrft.pipelines.local.docker`).
"""

from vrft.pipelines.local.errors import PipelineFailed
from vrft.pipelines.local.runner import DEFAULT_STATE_DIR, RUNNERS, LocalRunResult, run_local, summary
from vrft.pipelines.local.services import LocalServices, ServicesError, down, up

__all__ = [
    "DEFAULT_STATE_DIR",
    "RUNNERS",
    "LocalRunResult",
    "LocalServices",
    "PipelineFailed",
    "ServicesError",
    "down",
    "run_local",
    "summary",
    "up",
]
