"""Stage 1 component: few-shot dataset construction (vrft.data.build.build_dataset)."""

from kfp import dsl
from kfp.dsl import Dataset, Output


def dataset_stage(config_json: str, iteration: str, dataset: Output[Dataset]):
    """Build the experiment's train/eval sets and publish them to the artifact store."""
    from vrft.components.dataset import run

    run(config_json, "", dataset, iteration=iteration)


def run(config_json: str, run_id: str, dataset, *, iteration: str = "") -> str:
    from vrft.components.runtime import open_stage
    from vrft.data.build import build_dataset

    with open_stage(
        "dataset", config_json, run_id, iteration=iteration, params=lambda c: {"dataset": c.dataset}
    ) as stage:
        result = build_dataset(stage.config.dataset, stage.local_dir("dataset"))
        stage.tracker.log_metrics({f"rows/{split}": n for split, n in result.num_rows.items()})
        return stage.publish(result.output_dir, dataset, "dataset")


def component(image: str):
    return dsl.component(dataset_stage, base_image=image, install_kfp_package=False)
