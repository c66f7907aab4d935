"""Stage 4 component: evaluate the base model, or a trained checkpoint, on the eval split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


def evaluate_stage(config_json: str, iteration: str, label: str, dataset: Input[Dataset],
                   evaluation: Output[Metrics], checkpoint: Input[Model] = None):
    """Evaluate ``checkpoint`` (the base model when absent) and publish predictions and metrics."""
    from vrft.components.evaluate import run

    run(config_json, "", label, dataset, evaluation, checkpoint, iteration=iteration)


def run(config_json: str, run_id: str, label: str, dataset, evaluation, checkpoint=None, *,
        iteration: str = "") -> str:
    from dataclasses import replace

    from vrft.components.runtime import open_stage
    from vrft.evaluate import evaluate_checkpoint
    from vrft.report.tracking import evaluation_metrics, evaluation_tags

    params = lambda c: {"model": c.model, "evaluate": c.evaluate}  # noqa: E731
    with open_stage(f"evaluate-{label}", config_json, run_id, iteration=iteration, stage="evaluate",
                    params=params, method=label) as stage:
        data_dir = stage.fetch(dataset, "dataset")
        model = stage.config.model.materialized()
        if checkpoint is not None:
            # A trained checkpoint keeps the base model's family and resolution settings.
            trained = stage.fetch(checkpoint, "checkpoint") / "final"
            model = replace(model, name_or_path=str(trained), family=model.resolved_family())
        result = evaluate_checkpoint(stage.config.evaluate, data_dir, stage.local_dir(f"evaluation-{label}"),
                                     model=model, label=label)
        stage.tracker.set_tags(evaluation_tags(result))
        stage.tracker.log_metrics(evaluation_metrics(result))
        evaluation.log_metric(result.primary_metric, float(result.metrics.get(result.primary_metric, 0.0)))
        return stage.publish(result.output_dir, evaluation, f"evaluation-{label}")


def component(image: str):
    return dsl.component(evaluate_stage, base_image=image, install_kfp_package=False)
