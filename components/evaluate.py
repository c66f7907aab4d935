"""Stage 4 components: evaluate the base model, or a trained checkpoint, on the eval split; and
collect one sweep iteration's evaluations for the report."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


def evaluate_stage(
    config_json: str,
    iteration: str,
    label: str,
    dataset: Input[Dataset],
    evaluation: Output[Metrics],
    checkpoint: Input[Model] = None,
    gate: Input[Metrics] = None,
):
    """Evaluate ``checkpoint`` (the base model when absent) and publish predictions and metrics.

    ``gate``: the base evaluation, whose ``gate.json`` every trained checkpoint shares.
    """
    from vrft.components.evaluate import run

    run(config_json, "", label, dataset, evaluation, checkpoint, gate, iteration=iteration)


def collect_stage(
    sft: Input[Metrics],
    rft: Input[Metrics],
    evaluations: Output[Metrics],
    base: Input[Metrics] = None,
    previous: Input[Metrics] = None,
):
    """The previous iterations' evaluation references (``previous``, the last iteration's collect)
    followed by this iteration's base, SFT and RFT evaluations: what the report reads."""
    from vrft.components.evaluate import collect

    collect([("base", base), ("sft", sft), ("rft", rft)], evaluations, previous=previous)


def run(
    config_json: str,
    run_id: str,
    label: str,
    dataset,
    evaluation,
    checkpoint=None,
    gate=None,
    *,
    iteration: str = "",
) -> str:
    from dataclasses import replace

    from vrft.components.runtime import open_stage
    from vrft.evaluate import evaluate_checkpoint
    from vrft.report.comparison import INPUT_PREFIX
    from vrft.report.runs import evaluation_metrics
    from vrft.tracking import STAGE_EVALUATE, evaluation_tags

    params = lambda c: {"model": c.model, "evaluate": c.evaluate}  # noqa: E731
    with open_stage(
        f"evaluate-{label}",
        config_json,
        run_id,
        iteration=iteration,
        stage=STAGE_EVALUATE,
        params=params,
        method=label,
    ) as stage:
        data_dir = stage.fetch(dataset, "dataset")
        model = stage.config.model.materialized()
        if checkpoint is not None:
            # A trained checkpoint keeps the base model's resolution settings; its family is its own
            # (a family set in the config must agree with it: evaluate_checkpoint refuses otherwise).
            trained = stage.fetch(checkpoint, "checkpoint") / "final"
            model = replace(model, name_or_path=str(trained))
        gate_dir = stage.fetch(gate, "gate") if gate is not None else None
        # The artifacts it read (their URIs name the pipeline run that made them): the report says
        # which results a rerun reused from which run.
        inputs = {"dataset": dataset, "checkpoint": checkpoint, "gate": gate}
        read = {
            INPUT_PREFIX + name: artifact.metadata["uri"]
            for name, artifact in inputs.items()
            if artifact is not None and artifact.metadata.get("uri")
        }
        result = evaluate_checkpoint(
            stage.config.evaluate,
            data_dir,
            stage.local_dir(f"evaluation-{label}"),
            model=model,
            label=label,
            gate=gate_dir,
            context={**stage.tags, **read},
        )
        stage.tracker.set_tags(evaluation_tags(result))
        stage.tracker.log_metrics(evaluation_metrics(result))
        evaluation.log_metric(result.primary_metric, float(result.metrics.get(result.primary_metric, 0.0)))
        return stage.publish(result.output_dir, evaluation, f"evaluation-{label}")


def collect(labelled, evaluations, *, previous=None) -> list[dict]:
    """Record each evaluation's URI and manifest hash in ``evaluations``' metadata (and its file),
    after the references ``previous`` carries: the report reads exactly these, never "the newest
    runs" of the MLflow experiment. One collect per sweep iteration, each extending the last one's
    list, hands a whole sweep to the report through fixed signatures on any backend."""
    import json

    earlier = list((getattr(previous, "metadata", None) or {}).get("evaluations") or [])
    if previous is not None and not earlier:
        raise ValueError("collect: the previous iteration's list of evaluations is empty")
    refs = [
        {
            "label": label,
            "uri": artifact.metadata.get("uri", ""),
            "manifest_sha256": artifact.metadata.get("manifest_sha256", ""),
        }
        for label, artifact in labelled
        if artifact is not None
    ]
    missing = [r["label"] for r in refs if not (r["uri"] and r["manifest_sha256"])]
    if missing:
        raise ValueError(
            f"collect: evaluation(s) {', '.join(missing)} carry no artifact URI and manifest hash"
        )
    refs = earlier + refs
    evaluations.metadata["evaluations"] = refs
    with open(evaluations.path, "w", encoding="utf-8") as f:
        f.write(json.dumps(refs) + "\n")
    return refs


def component(image: str):
    return dsl.component(evaluate_stage, base_image=image, install_kfp_package=False)


def collect_component(image: str):
    return dsl.component(collect_stage, base_image=image, install_kfp_package=False)
