"""``vrft run``, ``vrft up`` and ``vrft down``: the pipeline on this machine.

* :mod:`~vrft.pipelines.local.services`: a loopback-only S3 server (SeaweedFS) and an MLflow store;
* :mod:`~vrft.pipelines.local.supervisor`: nothing a run starts outlives it (process groups, a
  watchdog for SIGKILL);
* :mod:`~vrft.pipelines.local.runner`: runs the task plan, task after task, with a stage cache
  (:mod:`~vrft.pipelines.local.cache`); each task in its own process
  (:mod:`~vrft.pipelines.local.task`, forked warm by :mod:`~vrft.pipelines.local.forkserver`) or
  container (:mod:`~vrft.pipelines.local.docker`).
"""

# Lazy (PEP 562): `python -m vrft.pipelines.local.task` and `... .forkserver` import this package
# first, and runpy warns in every task's log when it has already imported the module it is to run.
from vrft._lazy import lazy_exports

_EXPORTS = {
    "PipelineFailed": "vrft.pipelines.local.errors",
    "DEFAULT_STATE_DIR": "vrft.pipelines.local.runner",
    "RUNNERS": "vrft.pipelines.local.runner",
    "LocalRunResult": "vrft.pipelines.local.runner",
    "run_local": "vrft.pipelines.local.runner",
    "summary": "vrft.pipelines.local.runner",
    "LocalServices": "vrft.pipelines.local.services",
    "ServicesError": "vrft.pipelines.local.services",
    "down": "vrft.pipelines.local.services",
    "up": "vrft.pipelines.local.services",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
