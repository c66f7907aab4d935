"""What a command reads, in one place, so that what it writes can never replace it.

Every stage command (``vrft dataset build``, ``train``, ``evaluate``, ``report``, ``compile``, ``run``)
checks its output against all of its inputs before it reads or writes anything
(:func:`check_outputs`): the experiment config file, the experiment's source data, model
directory, DeepSpeed and SAM files and MLflow store (:func:`experiment_inputs`), and the
command's own inputs (dataset, checkpoint, gate, evaluations, tracking store:
:func:`command_inputs`). An output that is, contains or lies inside any of them is refused, even
with ``--overwrite`` (which would delete the input). ``--overwrite`` itself replaces only an
earlier output of the same kind (:func:`check_replaceable`): a directory with the
``manifest.json`` that ``vrft`` writes, or an empty directory — never an unrelated file or folder.

The MLflow tracking URI a command reads or writes is checked here too (:func:`check_tracking_uri`):
its scheme, whether a store that must be read exists, and whether a server answers at all, within
seconds rather than after MLflow's minutes of retries.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> _ = (root / "exp.yaml").write_text("{}")
>>> check_outputs(root, {"config file": root / "exp.yaml"})
Traceback (most recent call last):
...
vrft.io.OutputOverlapError: ...: output contains the config file (.../exp.yaml); choose an output outside every input
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from vrft.io import MANIFEST_NAME, ManifestError, check_output_apart, local_store_path, read_manifest

if TYPE_CHECKING:
    from vrft.experiment import ExperimentConfig

#: The ``format`` of the manifest each kind of output carries (:mod:`vrft.data.build`,
#: :mod:`vrft.evaluate.run`, :mod:`vrft.report.build`).
OUTPUT_FORMATS = {"dataset": "vrft.dataset/", "evaluation": "vrft.evaluation/", "report": "vrft.report/"}

#: URI schemes MLflow's tracking client accepts besides its file store (mlflow.tracking registry).
MLFLOW_SCHEMES = (
    "sqlite",
    "http",
    "https",
    "postgresql",
    "mysql",
    "mssql",
    "databricks",
    "databricks-uc",
    "uc",
)
#: How long a tracking server may take to accept a connection before the command gives up.
TRACKING_PROBE_TIMEOUT_S = 10.0


class NotReplaceableError(ValueError):
    """``--overwrite`` was asked to replace something that is not an earlier output of the command."""


class TrackingUriError(ValueError):
    """A tracking URI MLflow cannot use, a store that is not there, or a server that does not answer."""


InputPaths = Mapping[str, str | os.PathLike[str] | None]


def experiment_inputs(config: ExperimentConfig) -> dict[str, Path | None]:
    """The local files and directories an experiment reads, named by their config key."""
    from vrft.data.sources import input_paths

    inputs: dict[str, Path | None] = {}
    inputs.update(input_paths(config.dataset.train, "dataset.train"))
    if config.dataset.eval is not None:
        inputs.update(input_paths(config.dataset.eval, "dataset.eval"))
    inputs["model.name_or_path"] = config.model.local_dir()
    for section in (config.grpo, config.sft):
        if config_file := _local_file(section.deepspeed):
            inputs[f"{section.section}.deepspeed"] = config_file
    if config_file := _local_file(config.evaluate.sam_checkpoint):
        inputs["evaluate.sam_checkpoint"] = config_file
    inputs["pipeline.tracking_uri"] = _local_store(config.pipeline.tracking_uri)
    return inputs


def command_inputs(
    config_file: str | os.PathLike[str] | None,
    config: ExperimentConfig | None,
    *,
    dataset: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    gate: str | os.PathLike[str] | None = None,
    evaluations: Sequence[str | os.PathLike[str]] = (),
    tracking_uri: str = "",
) -> dict[str, Path | None]:
    """Everything one command reads: its config file, the experiment's inputs and its own."""
    inputs: dict[str, Path | None] = {"config file": Path(config_file) if config_file else None}
    if config is not None:
        inputs.update(experiment_inputs(config))
    inputs["dataset"] = Path(dataset) if dataset else None
    inputs["checkpoint"] = Path(checkpoint) if checkpoint else None
    inputs["gate"] = Path(gate) if gate else None
    for i, directory in enumerate(evaluations):
        inputs[f"evaluations[{i}]"] = Path(directory)
    inputs["MLflow store"] = _local_store(tracking_uri)
    inputs["MLflow store (MLFLOW_TRACKING_URI)"] = _local_store(os.environ.get("MLFLOW_TRACKING_URI", ""))
    return inputs


def check_outputs(
    output: str | os.PathLike[str], inputs: InputPaths, *, overwrite: bool = False, kind: str = ""
) -> None:
    """Refuse ``output`` if it is, contains or lies inside one of ``inputs``; with ``overwrite``,
    also if it exists and is not an earlier output of ``kind`` (see :func:`check_replaceable`)."""
    check_output_apart(output, dict(inputs))
    if overwrite and kind:
        check_replaceable(output, kind)


def check_replaceable(output: str | os.PathLike[str], kind: str) -> None:
    """``--overwrite`` replaces only an earlier output of ``kind`` (its ``manifest.json`` says so), or
    an empty directory: an existing file or a folder of other things would be deleted without a trace.
    """
    path = Path(output)
    if not path.exists():
        return
    if path.is_dir():
        if not any(path.iterdir()):
            return
        try:
            found = read_manifest(path).get("format")
        except ManifestError:
            found = None
        if isinstance(found, str) and found.startswith(OUTPUT_FORMATS[kind]):
            return
        if isinstance(found, str) and found:
            other = next((k for k, prefix in OUTPUT_FORMATS.items() if found.startswith(prefix)), found)
            holds = f"holds a vrft {other}"
        else:
            holds = f"holds other files (no {MANIFEST_NAME} of a vrft {kind})"
    else:
        holds = "is a file"
    raise NotReplaceableError(
        f"{output}: --overwrite replaces only an earlier {kind} written by vrft, and this {holds}; "
        "remove it yourself or choose another output"
    )


def check_tracking_uri(uri: str, *, what: str, must_exist: bool = False) -> None:
    """Refuse a tracking URI MLflow cannot use, before any stage work, in one line naming ``what``
    gave it (``--tracking-uri``, ``MLFLOW_TRACKING_URI``, ...).

    A plain path or ``file://`` is MLflow's file store, which MLflow 3 refuses unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set; other schemes must be ones MLflow knows. ``must_exist``
    (a reader such as ``vrft report``): an ``sqlite:///`` file must be there, non-empty and sound —
    MLflow would otherwise create an empty store in its place. An ``http(s)://`` server must accept
    a connection within :data:`TRACKING_PROBE_TIMEOUT_S` (MLflow would retry for minutes).
    """
    if not uri:
        return
    scheme = urlparse(uri).scheme.split("+")[0].lower() if "://" in uri else ""
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            return
        raise TrackingUriError(
            f"{what} {uri}: a plain path or file:// is MLflow's file store, which this MLflow refuses; "
            "use sqlite:///PATH.db (a database file) or http(s)://HOST:PORT (a server)"
        )
    if scheme not in MLFLOW_SCHEMES:
        raise TrackingUriError(
            f"{what} {uri}: not an MLflow tracking URI (expected sqlite:///PATH.db, http(s)://HOST:PORT "
            f"or a database URL: {', '.join(MLFLOW_SCHEMES)})"
        )
    if scheme == "sqlite":
        _check_sqlite(uri, what, must_exist)
    elif scheme in ("http", "https"):
        _probe_server(uri, what)


def _check_sqlite(uri: str, what: str, must_exist: bool) -> None:
    from vrft.tracking import TrackingStoreError, check_sqlite_store, sqlite_store_path

    database = sqlite_store_path(uri)
    if database is None:
        raise TrackingUriError(f"{what} {uri}: an sqlite URI names its file as sqlite:///PATH")
    if must_exist:
        if not database.is_file():
            raise TrackingUriError(
                f"{what} {uri}: no MLflow store at {database} (nothing is created by reading; check the path)"
            )
        if database.stat().st_size == 0:
            raise TrackingUriError(f"{what} {uri}: {database} is an empty file, not an MLflow store")
    try:
        check_sqlite_store(database)
    except TrackingStoreError as exc:
        raise TrackingUriError(f"{what} {uri}: {exc}") from None


def _probe_server(uri: str, what: str) -> None:
    parsed = urlparse(uri)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise TrackingUriError(f"{what} {uri}: not a valid port") from None
    if not parsed.hostname:
        raise TrackingUriError(f"{what} {uri}: no host name")
    try:
        with socket.create_connection((parsed.hostname, port), timeout=TRACKING_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {TRACKING_PROBE_TIMEOUT_S:.0f} s"
        else:
            reason = (exc.strerror or str(exc)).lower()
        raise TrackingUriError(
            f"{what} {uri}: no MLflow server answers there ({reason}); start it or check the URI"
        ) from None


def _local_file(value: str) -> Path | None:
    return Path(value) if value and Path(value).is_file() else None


def _local_store(uri: str) -> Path | None:
    return local_store_path(uri) if uri else None
