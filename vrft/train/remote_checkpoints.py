"""Training checkpoints mirrored to the artifact store, so that a stage restarted on a fresh pod resumes.

On a cluster a training stage works on a scratch volume that lives and dies with its pod: a
preempted or evicted pod comes back (KFP retries the task) with an empty disk. When
``$VRFT_CHECKPOINT_URI`` names a store prefix (the training component sets it to
``<artifact root>/runs/<run>/<iteration>/<method>/checkpoints/``), :class:`CheckpointUploader`
uploads every checkpoint the Trainer saves, as one artifact per step::

    checkpoints/checkpoint-N/checkpoint/...  the Trainer's checkpoint-N: weights, optimizer, scheduler,
                                             RNG states, trainer_state.json (step, epoch: the data position)
    checkpoints/checkpoint-N/logs/...        train_log.jsonl, samples.jsonl, completions.jsonl, config.json
                                             as they were at that save
    checkpoints/checkpoint-N/manifest.json   uploaded last: the SHA-256 and size of every file

Before training, :func:`restore_latest` downloads the newest *complete* one that is newer than
anything on the local disk, verified object by object against its manifest. An upload cut short
(no manifest yet) or a damaged object is skipped with one log line naming it, and the next older
one is tried. After each upload only the newest ``keep`` complete checkpoints stay in the store
(the stage's ``save_total_limit``, 2 by default; ``null`` keeps all), and leftovers of cut-short
uploads are deleted; :func:`delete_all` removes them once the stage has published its model.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from vrft.storage import ArtifactIntegrityError, ArtifactNotFoundError, ArtifactStore
from vrft.train.callbacks import COMPLETIONS_LOG, SAMPLES_LOG, TRAIN_LOG
from vrft.train.checkpoints import (
    CHECKPOINT_PATTERN,
    CHECKPOINT_URI_ENV,
    is_complete_checkpoint,
    latest_checkpoint,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PART = "checkpoint"
LOGS_PART = "logs"
RUN_FILES = (TRAIN_LOG, SAMPLES_LOG, COMPLETIONS_LOG, "config.json")
"""The run's own files saved beside each checkpoint: a restored run continues its logs."""


def _step(name: str) -> int:
    match = CHECKPOINT_PATTERN.match(name)
    return int(match.group(1)) if match else -1


def remote_checkpoints(store: ArtifactStore) -> list[str]:
    """``checkpoint-N`` names under the store's root, newest step first, complete or not."""
    return sorted((n for n in store.children() if _step(n) >= 0), key=_step, reverse=True)


def upload_checkpoint(checkpoint: Path, uri: str, *, keep: int | None) -> str:
    """Upload ``checkpoint`` (a ``checkpoint-N`` directory) and the run's logs beside it to
    ``uri/checkpoint-N/``, manifest last; then prune to the ``keep`` newest. Returns its URI."""
    checkpoint = Path(checkpoint)
    output_dir = checkpoint.parent
    staging = output_dir / f".upload-{checkpoint.name}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        # Hard links: a multi-GB optimizer state is not copied to be uploaded.
        shutil.copytree(checkpoint, staging / CHECKPOINT_PART, copy_function=_link_or_copy)
        (staging / LOGS_PART).mkdir()
        for name in RUN_FILES:  # still being appended to: copied, not linked
            if (output_dir / name).is_file():
                shutil.copy2(output_dir / name, staging / LOGS_PART / name)
        store = ArtifactStore.from_uri(uri)
        uploaded = store.upload_dir(staging, checkpoint.name, overwrite=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune(store, keep)
    return uploaded


def prune(store: ArtifactStore, keep: int | None) -> list[str]:
    """Delete all but the ``keep`` newest complete checkpoints (all kept when ``None``) and every
    incomplete one (an upload that was cut short); return the names deleted."""
    deleted = []
    complete = 0
    for name in remote_checkpoints(store):
        if store.exists(name):
            complete += 1
            if keep is None or complete <= keep:
                continue
        store.delete_dir(name)
        deleted.append(name)
    return deleted


def delete_all(uri: str) -> list[str]:
    """Delete every mirrored checkpoint under ``uri`` (once the stage's model is published)."""
    store = ArtifactStore.from_uri(uri)
    names = remote_checkpoints(store)
    for name in names:
        store.delete_dir(name)
    return names


@dataclass
class Restored:
    """What :func:`restore_latest` did: the checkpoint it put in place (None: nothing newer than the
    local disk), and one line per remote checkpoint it had to skip."""

    checkpoint: Path | None
    skipped: list[str] = field(default_factory=list)


def restore_latest(uri: str, output_dir: str | Path) -> Restored:
    """Put the newest complete mirrored checkpoint under ``uri`` into ``output_dir`` (with the run's
    logs as they were at that save), unless the local disk already has one as new."""
    output_dir = Path(output_dir)
    local = latest_checkpoint(output_dir)
    local_step = _step(local.name) if local is not None else -1
    store = ArtifactStore.from_uri(uri)
    result = Restored(None)
    for name in remote_checkpoints(store):
        if _step(name) <= local_step:
            break
        where = store.resolve(name).uri
        staging = output_dir / f".restore-{name}"
        try:
            store.download_dir(name, staging, overwrite=True)
        except ArtifactNotFoundError:
            result.skipped.append(f"skipping {where}: no manifest (its upload was cut short)")
            logger.warning(result.skipped[-1])
            continue
        except ArtifactIntegrityError as exc:
            what = exc.uri.removeprefix(where) if exc.uri.startswith(where) else exc.uri
            result.skipped.append(f"skipping {where}: {what}: {exc.problem}")
            logger.warning(result.skipped[-1])
            continue
        try:
            target = output_dir / name
            if target.exists():  # an incomplete local copy of the same step
                shutil.rmtree(target)
            os.replace(staging / CHECKPOINT_PART, target)
            for log in (staging / LOGS_PART).iterdir() if (staging / LOGS_PART).is_dir() else ():
                os.replace(log, output_dir / log.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not is_complete_checkpoint(target):
            result.skipped.append(f"skipping {where}: not a complete training state after download")
            logger.warning(result.skipped[-1])
            shutil.rmtree(target, ignore_errors=True)
            continue
        result.checkpoint = target
        return result
    return result


class CheckpointUploader(TrainerCallback):
    """Uploads each checkpoint the Trainer saves (:func:`upload_checkpoint`), from the main process.

    Every process waits for the upload: with several processes each writes its own shards and RNG
    state into the checkpoint, so the main one uploads only after all of them have saved.
    """

    def __init__(self, uri: str, keep: int | None) -> None:
        self.uri = uri
        self.keep = keep

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        _barrier()
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not is_complete_checkpoint(checkpoint):
                raise RuntimeError(f"{checkpoint}: the Trainer's save is incomplete; not uploading it")
            uploaded = upload_checkpoint(checkpoint, self.uri, keep=self.keep)
            logger.info("checkpoint of step %d uploaded to %s", state.global_step, uploaded)
        _barrier()


def uploader_from_env(keep: int | None) -> CheckpointUploader | None:
    """The uploader for ``$VRFT_CHECKPOINT_URI``, or None when it is unset."""
    uri = os.environ.get(CHECKPOINT_URI_ENV, "")
    return CheckpointUploader(uri, keep) if uri else None


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
