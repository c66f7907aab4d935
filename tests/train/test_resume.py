"""Resuming: a GRPO run killed with SIGKILL mid-training, then resumed, ends where an uninterrupted run ends.

Setup: 4 training rows, one prompt per step, so an epoch is 4 steps; 8 steps, a checkpoint every 3.
The run is killed once checkpoint-6 is complete and step 7 has started (its rows are recorded), so
the resume starts in the second epoch, two batches into it: the case trl's stock sampler gets
wrong (it would replay the first epoch's order).

What is verified, against an uninterrupted run with the same seed:
* the resumed run starts from checkpoint-6 and stops at step 8 (max_steps), not 14 or 2;
* ``samples.jsonl`` lists each step 1..8 exactly once, with the same dataset rows per step as the
  uninterrupted run: no replayed rows, the data position is restored (including the epoch's order);
  step 7's rows equal those the killed process had started on;
* the learning rate logged at every step equals the uninterrupted run's (scheduler restored);
* the completions sampled after the resume and the final weights equal the uninterrupted run's,
  which holds only if the optimizer state and the RNG states were restored too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from vrft.config import from_dict, to_dict
from vrft.io import sha256_file
from vrft.models.config import ModelConfig
from vrft.train import GRPOStageConfig, SFTStageConfig, latest_checkpoint, train_grpo, train_sft
from vrft.train.callbacks import read_jsonl
from vrft.train.checkpoints import is_complete_checkpoint

RUNNER = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from vrft.config import from_dict
    from vrft.models.config import ModelConfig
    from vrft.train import GRPOStageConfig, train_grpo
    config, dataset, output, model = json.loads(sys.argv[1])
    train_grpo(from_dict(GRPOStageConfig, config), dataset, output, model=ModelConfig(**model))
""")


def by_step(path: Path, key: str) -> dict[int, Any]:
    records = [r for r in read_jsonl(path) if key in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"{path.name}: a step was recorded twice: {steps}"
    return {r["step"]: r[key] for r in records}


def kill_after(process: subprocess.Popen, run: Path, checkpoint: int, timeout: float = 240) -> dict[str, Any]:
    """SIGKILL ``process`` once ``checkpoint-N`` is complete and step N + 1 has begun; its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"the run ended before it could be killed:\n{process.stderr.read()[-3000:]}"
        )
        started = [r for r in read_jsonl(run / "samples.jsonl") if r["step"] == checkpoint + 1]
        if started and is_complete_checkpoint(run / f"checkpoint-{checkpoint}"):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return started[0]
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"checkpoint-{checkpoint} did not appear within {timeout} s")


def test_sigkill_then_resume_matches_an_uninterrupted_run(
    tiny_model: ModelConfig,
    shapes_dataset: Path,
    tmp_path: Path,
    token_reward: str,
    fast_grpo: dict[str, Any],
) -> None:
    settings = {**fast_grpo, "reward": token_reward, "learning_rate": 1e-2, "max_steps": 8, "save_steps": 3}
    config = from_dict(GRPOStageConfig, settings)
    reference = train_grpo(config, shapes_dataset, tmp_path / "reference", model=tiny_model)
    assert reference.global_step == 8

    run = tmp_path / "run"
    arguments = json.dumps([settings, str(shapes_dataset), str(run), to_dict(tiny_model)])
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    killed_step = kill_after(process, run, checkpoint=6)
    assert process.returncode == -signal.SIGKILL
    assert not (run / "final").exists(), "the run finished before the kill"
    assert latest_checkpoint(run) == run / "checkpoint-6"

    resumed = train_grpo(config, shapes_dataset, run, model=tiny_model)  # resume: auto (the default)
    assert resumed.resumed_from == run / "checkpoint-6"
    assert resumed.global_step == 8

    rows = by_step(run / "samples.jsonl", "rows")
    assert sorted(rows) == list(range(1, 9))
    assert rows == by_step(tmp_path / "reference" / "samples.jsonl", "rows")
    assert rows[7] == killed_step["rows"]
    learning_rates = by_step(run / "train_log.jsonl", "learning_rate")
    assert sorted(learning_rates) == list(range(1, 9))
    assert learning_rates == by_step(tmp_path / "reference" / "train_log.jsonl", "learning_rate")

    def completions(output: Path) -> list[tuple[int, str]]:
        return [
            (r["step"], r["completion"]) for r in read_jsonl(output / "completions.jsonl") if r["step"] > 6
        ]

    assert completions(run) == completions(tmp_path / "reference")
    expected, actual = (
        load_file(reference.final_dir / "model.safetensors"),
        load_file(resumed.final_dir / "model.safetensors"),
    )
    assert expected.keys() == actual.keys()
    assert all(torch.allclose(expected[k], actual[k], atol=1e-6) for k in expected)
    base = load_file(Path(tiny_model.name_or_path) / "model.safetensors")
    assert not all(torch.equal(base[k], actual[k]) for k in base), "nothing was trained: the check is vacuous"


def test_sft_lora_resume_matches_an_uninterrupted_run(
    tiny_model: ModelConfig, shapes_dataset: Path, tmp_path: Path
) -> None:
    """The LoRA adapter, optimizer, scheduler and data order come back from a checkpoint in the
    second epoch (4 rows, one per step): same losses after the resume, same merged weights."""
    config = from_dict(
        SFTStageConfig,
        {
            "max_steps": 6,
            "save_steps": 5,
            "warmup_steps": 0,
            "learning_rate": 1e-2,
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": False,
        },
    )
    reference = train_sft(config, shapes_dataset, tmp_path / "reference", model=tiny_model)
    shutil.copytree(tmp_path / "reference" / "checkpoint-5", tmp_path / "run" / "checkpoint-5")

    resumed = train_sft(config, shapes_dataset, tmp_path / "run", model=tiny_model)
    assert (resumed.resumed_from, resumed.global_step) == (tmp_path / "run" / "checkpoint-5", 6)
    assert by_step(tmp_path / "run" / "train_log.jsonl", "loss") == {
        6: by_step(tmp_path / "reference" / "train_log.jsonl", "loss")[6]
    }
    expected = load_file(reference.final_dir / "model.safetensors")
    actual = load_file(resumed.final_dir / "model.safetensors")
    assert all(torch.allclose(expected[k], actual[k], atol=1e-6) for k in expected)


# --- the GRPO stage killed on its pod and run again on a fresh one (vrft.train.remote_checkpoints) ---

STAGE_RUNNER = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from kfp import dsl
    from vrft.components.train import grpo_stage
    config_json, iteration, dataset_metadata, output = json.loads(sys.argv[1])
    dataset = dsl.Dataset(name="dataset", uri=dataset_metadata["uri"], metadata=dataset_metadata)
    checkpoint = dsl.Model(name="checkpoint", uri=output)
    grpo_stage(config_json, iteration, dataset, checkpoint)
    print("PUBLISHED " + json.dumps(checkpoint.metadata))
""")
BUCKET = "vrft-resume"


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto's S3 server on a loopback port: the environment a cluster pod gets for its store."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing-key",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name in ("AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        server.stop()


def _stage_process(arguments: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", STAGE_RUNNER, arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
    )


def _published(process: subprocess.Popen, timeout: float = 600) -> tuple[dict[str, str], str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    line = next(line for line in out.splitlines() if line.startswith("PUBLISHED "))
    return json.loads(line.removeprefix("PUBLISHED ")), out


def test_the_grpo_stage_killed_on_its_pod_resumes_on_a_fresh_one_step_for_step(
    tiny_model: ModelConfig,
    shapes_dataset: Path,
    tmp_path: Path,
    token_reward: str,
    fast_grpo: dict[str, Any],
    s3_server: dict[str, str],
) -> None:
    """The stage as KFP runs it on a cluster (checkpoint mirroring on, a scratch work dir, the run id
    from the environment) is SIGKILLed after its step-6 checkpoint reached the store; its scratch is
    deleted (a new pod gets an empty volume); the same command runs again and must give the
    uninterrupted run's losses, rewards, data rows and weights, step for step."""
    from vrft.components.runtime import stage_config_json
    from vrft.components.train import UPLOAD_CHECKPOINTS_ENV
    from vrft.experiment import ExperimentConfig
    from vrft.stage import RUN_ID_ENV, WORK_DIR_ENV
    from vrft.storage import ArtifactStore, download_dir, run_prefix, upload_dir

    root = f"s3://{BUCKET}/artifacts"
    dataset_uri = upload_dir(shapes_dataset, f"{root}/datasets/shapes/")
    dataset = {"uri": dataset_uri, "manifest_sha256": sha256_file(shapes_dataset / "manifest.json")}
    settings = {**fast_grpo, "reward": token_reward, "learning_rate": 1e-2, "max_steps": 8, "save_steps": 3}
    config = from_dict(
        ExperimentConfig,
        {"experiment": {"name": "resume"}, "model": to_dict(tiny_model), "grpo": settings,
         "pipeline": {"artifact_root": root, "train_resources": {"gpus": 0}}},  # one process, as on one GPU
    )  # fmt: skip
    config_json, iteration = stage_config_json(config, "grpo"), "shots-2"

    def run_env(run_id: str, scratch: Path) -> dict[str, str]:
        return {RUN_ID_ENV: run_id, WORK_DIR_ENV: str(scratch), UPLOAD_CHECKPOINTS_ENV: "1"}

    def arguments(name: str) -> str:
        return json.dumps([config_json, iteration, dataset, str(tmp_path / "kfp" / name / "checkpoint")])

    reference, _ = _published(_stage_process(arguments("reference"), run_env("reference", tmp_path / "s0")))

    scratch = tmp_path / "scratch"
    mirror = ArtifactStore.from_uri(run_prefix(root, "attempts", iteration, "grpo", "checkpoints"))
    first = _stage_process(arguments("attempt"), run_env("attempts", scratch))
    deadline = time.monotonic() + 300
    while True:
        assert first.poll() is None, (
            f"the stage ended before it could be killed:\n{first.stderr.read()[-3000:]}"
        )
        assert time.monotonic() < deadline, "checkpoint-6 never reached the store"
        logs = list(scratch.glob("vrft-grpo-*/grpo/samples.jsonl"))
        if mirror.exists("checkpoint-6") and logs and any(r["step"] == 7 for r in read_jsonl(logs[0])):
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert mirror.children() == ["checkpoint-3", "checkpoint-6"]  # keep N = save_total_limit (2)
    shutil.rmtree(scratch)  # the new pod's scratch volume is empty

    second, output = _published(_stage_process(arguments("attempt"), run_env("attempts", scratch)))
    assert f"resuming from {mirror.root_uri}checkpoint-6/ (step 6)" in output
    assert mirror.children() == []  # the mirrored checkpoints go once the model is published

    published = {name: download_dir(meta["uri"], tmp_path / name) for name, meta in
                 (("reference", reference), ("resumed", second))}  # fmt: skip
    for key in ("loss", "reward", "learning_rate"):
        expected = by_step(published["reference"] / "train_log.jsonl", key)
        assert sorted(expected) == list(range(1, 9))
        assert by_step(published["resumed"] / "train_log.jsonl", key) == pytest.approx(expected, abs=1e-6), (
            key
        )
    assert by_step(published["resumed"] / "samples.jsonl", "rows") == by_step(
        published["reference"] / "samples.jsonl", "rows"
    )
    expected, actual = (
        load_file(published[n] / "final" / "model.safetensors") for n in ("reference", "resumed")
    )
    assert expected.keys() == actual.keys()
    assert all(torch.allclose(expected[k], actual[k], atol=1e-6) for k in expected)
    base = load_file(Path(tiny_model.name_or_path) / "model.safetensors")
    assert not all(torch.equal(base[k], actual[k]) for k in base), "nothing was trained: the check is vacuous"
