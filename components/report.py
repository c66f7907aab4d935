"""Stage 5 component: the paper-style RFT-vs-SFT report and the regression check."""

from kfp import dsl
from kfp.dsl import HTML, Input, Metrics, Output


def report_stage(config_json: str, run_id: str, evaluations: Input[Metrics], report: Output[HTML]):
    """Tables with Δ rows, plots and the regression summary, from this run's evaluations
    (``evaluations``: the last sweep iteration's collect, which lists them all); the KFP UI shows
    the HTML."""
    from vrft.components.report import run

    run(config_json, run_id, evaluations, report)


class _Ref:
    """An evaluation known by URI and manifest hash, shaped like the artifacts ``Stage.fetch`` reads
    (which checks the downloaded manifest against that hash)."""

    def __init__(self, uri: str, manifest_sha256: str) -> None:
        self.metadata = {"uri": uri, "manifest_sha256": manifest_sha256}


def run(config_json: str, run_id: str, evaluations, report) -> str:
    import json
    from dataclasses import replace

    from vrft.components.runtime import open_stage
    from vrft.report import build_report
    from vrft.report.build import log_on_pipeline_run, log_report

    with open_stage("report", config_json, run_id, params=lambda c: {"report": c.report}) as stage:
        refs = list(evaluations.metadata.get("evaluations") or [])
        if not refs:
            raise ValueError("report: no evaluation reached the report (the collected list is empty)")
        dirs = [
            stage.fetch(_Ref(ref["uri"], ref.get("manifest_sha256", "")), f"evaluation-{n}-{ref['label']}")
            for n, ref in enumerate(refs)
        ]
        # This stage's MLflow run is the report's run: build_report must not start another one.
        config = replace(stage.config.report, log_to_mlflow=False)
        tracking_uri = stage.tracker.tracking_uri if stage.tracker.enabled else ""
        result = build_report(
            config,
            stage.local_dir("report"),
            tracking_uri=tracking_uri,
            experiment=stage.config.experiment.name,
            evaluations=dirs,
            sources=[ref["uri"] for ref in refs],
            run_id=stage.run_id,
        )
        regressions = len(result.regression_summary.get("regressions", []))
        if regressions:
            # The notice goes into the published report; it is POSTed too when $VRFT_WEBHOOK_URL is set
            # (the URL embeds a token: it comes from the vrft-notify secret, never the config).
            from vrft.io import read_manifest, write_manifest
            from vrft.report.notify import notify

            notify(
                result.output_dir / "regression.json",
                markdown_path=result.output_dir / "regression-notice.md",
            )
            kept = {k: v for k, v in read_manifest(result.output_dir).items() if k != "files"}
            write_manifest(result.output_dir, kept)  # the notice is part of the published report
        uri = stage.publish(result.output_dir, report, "report")
        # The KFP UI renders an HTML artifact's file: the self-contained page itself; the pointer to
        # the full report directory stays in the metadata.
        with open(report.path, "w", encoding="utf-8") as f:
            f.write(result.html.read_text(encoding="utf-8"))
        log_report(stage.tracker, result)
        # The pipeline run carries the comparison and the report, so MLflow's runs table shows RFT
        # vs SFT per pipeline run (see vrft.report.comparison).
        log_on_pipeline_run(stage.tracker, result, stage.config.experiment.name, stage.config.experiment.name)
        report.metadata["evaluations"] = [ref["uri"] for ref in refs]
        report.metadata["markdown"] = uri + result.markdown.name
        report.metadata["regressions"] = regressions
        print(json.dumps({"report": uri, "regressions": report.metadata["regressions"]}))
        return uri


def component(image: str):
    return dsl.component(report_stage, base_image=image, install_kfp_package=False)
