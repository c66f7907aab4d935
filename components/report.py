"""Stage 5 component: the paper-style RFT-vs-SFT report and the regression check."""

from kfp import dsl
from kfp.dsl import HTML, Input, Metrics, Output


def report_stage(config_json: str, run_id: str, evaluations: Input[list[Metrics]], report: Output[HTML]):
    """Tables with Δ rows, plots and the regression summary, from the MLflow runs of the experiment."""
    from vrft.components.report import run

    run(config_json, run_id, evaluations, report)


def run(config_json: str, run_id: str, evaluations, report) -> str:
    import json
    from dataclasses import replace

    from vrft.components.runtime import open_stage
    from vrft.report import build_report

    with open_stage("report", config_json, run_id, params=lambda c: {"report": c.report}) as stage:
        if not stage.tracker.enabled:
            raise ValueError("report: the report reads MLflow runs; set pipeline.tracking_uri or $MLFLOW_TRACKING_URI")
        upstream = [e.metadata.get("uri", "") for e in evaluations]
        # This stage's MLflow run is the report's run: build_report must not start another one.
        config = replace(stage.config.report, log_to_mlflow=False)
        result = build_report(config, stage.local_dir("report"), tracking_uri=stage.tracker.tracking_uri,
                              experiment=stage.config.experiment.name)
        regressions = len(result.regression_summary.get("regressions", []))
        if regressions:
            # The notice goes into the published report; it is POSTed too when $VRFT_WEBHOOK_URL is set
            # (the URL embeds a token: it comes from the vrft-notify secret, never the config).
            from vrft.io import read_manifest, write_manifest
            from vrft.pipelines.notify import notify

            notify(result.output_dir / "regression.json", markdown_path=result.output_dir / "regression-notice.md")
            kept = {k: v for k, v in read_manifest(result.output_dir).items() if k != "files"}
            write_manifest(result.output_dir, kept)  # the notice is part of the published report
        uri = stage.publish(result.output_dir, report, "report")
        stage.tracker.set_tags({"regression_status": result.regression_summary.get("status", "")})
        stage.tracker.log_metrics({"regressions": float(regressions),
                                   "tables": float(len(result.tables))})
        stage.tracker.log_artifacts(result.output_dir, "report")
        report.metadata["evaluations"] = upstream
        report.metadata["markdown"] = uri + result.markdown.name
        report.metadata["regressions"] = regressions
        print(json.dumps({"report": uri, "regressions": report.metadata["regressions"]}))
        return uri


def component(image: str):
    return dsl.component(report_stage, base_image=image, install_kfp_package=False)
