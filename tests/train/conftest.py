"""Shared inputs for the training tests: a tiny Qwen2-VL and a tiny shapes dataset built by the dataset stage."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vrft.config import from_dict
from vrft.data import DatasetConfig, build_dataset
from vrft.models.config import ModelConfig

# Small pixel bounds keep the tiny model at 4-16 vision tokens per image.


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One torch thread: on a CPU shared with other jobs, two threads mostly wait on each other."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tiny_qwen2: ModelConfig) -> ModelConfig:
    return tiny_qwen2


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Detection on synthetic shapes: 4 train rows (2 shots x circle, square), 64x48 images."""
    tmp = tmp_path_factory.mktemp("shapes")
    config = from_dict(
        DatasetConfig,
        {
            "train": {"kind": "shapes", "path": str(tmp / "source"), "n_images": 24, "image_size": [64, 48]},
            "shots": 2,
            "categories": ["circle", "square"],
            "eval_max_per_category": 2,
        },
    )
    return build_dataset(config, tmp / "dataset", progress=False).output_dir


TOKEN_REWARD_PLUGIN = textwrap.dedent('''
    FIRST_ORDINARY_ID = 14  # the tiny tokenizer's special tokens (incl. end of turn) come first

    def token_fraction(completion_ids, **columns):
        """Fraction of completion tokens whose id is an ordinary multiple of 8 (about 1 in 8 ids)."""
        return [sum(t >= FIRST_ORDINARY_ID and t % 8 == 0 for t in ids) / max(len(ids), 1)
                for ids in completion_ids]
''')


@pytest.fixture
def token_reward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A reward plugin a random tiny policy earns about 12% of the time (visual rewards: never).

    Returns its dotted path; the module's directory is on sys.path and on PYTHONPATH (for subprocesses).
    """
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "token_reward_plugin.py").write_text(TOKEN_REWARD_PLUGIN)
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    )
    return "token_reward_plugin:token_fraction"


@pytest.fixture
def fast_grpo() -> dict[str, Any]:
    """GRPO settings that keep a tiny-model step well under a second on a shared 2-core CPU."""
    return {
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 8,
        "gradient_checkpointing": False,
        "save_steps": 1000,
    }
