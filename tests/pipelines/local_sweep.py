"""The suite's one end-to-end `vrft run` (fixture ``local_sweep_run`` in this folder's conftest): the
default experiment as a two-shot sweep with fewer steps and images. Every test that needs a finished
local run (tests/pipelines/test_local_run.py) or its report numbers to compare another backend
against (tests/pipelines/airflow/) shares it: each pipeline run costs minutes on a 2-core machine."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"
# The default (colour of a shape, the shipped pre-trained tiny base) over two shot counts, with fewer
# steps and images.
SWEEP = [
    "experiment.shots=[1,2]",
    "grpo.max_steps=2",
    "sft.max_steps=2",
    "grpo.save_steps=1",
    "sft.save_steps=1",
    "evaluate.max_eval_images=8",
    "dataset.train.n_images=32",
]
