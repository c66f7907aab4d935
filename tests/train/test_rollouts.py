"""Why GRPO rollouts use ``model.generate``: trl 1.16's transformers continuous-batching ("paged")
rollout, ``use_transformers_paged`` / ``use_transformers_continuous_batching``, refuses a multimodal
processor (its ``generate_batch`` takes token ids only, so the images would be dropped). vrft's
prompts always carry an image, so that switch cannot serve them; this fails when trl starts
accepting it, the signal to try it against ``generate`` (see docs/training.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from vrft.models.config import ModelConfig

pytestmark = pytest.mark.timeout(120)


@pytest.mark.filterwarnings("ignore:`use_transformers_paged` is deprecated:FutureWarning")
def test_trl_refuses_paged_rollouts_for_a_vision_language_model(
    tiny_model: ModelConfig, tmp_path: Path
) -> None:
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to=[],
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=4,
        use_transformers_paged=True,
    )
    assert args.use_transformers_continuous_batching  # the deprecated name turns on the new switch
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "Detect the circle."}]}] * 2)
    with pytest.raises(ValueError, match="does not support multimodal models"):
        GRPOTrainer(
            model=tiny_model.load_model(),
            reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
            args=args,
            train_dataset=rows,
            processing_class=tiny_model.load_processor(),
        )
