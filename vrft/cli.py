"""The ``vrft`` command line: one sub-command per stage, plus the pipeline commands.

Commands take an experiment YAML and ``section.key=value`` overrides, torchtune-style:
``vrft train grpo configs/coco_8cat.yaml -d data/ -o out/ grpo.max_steps=25 model.name_or_path=/models/q2vl``.
Every stage command calls the same library function as the Kubeflow component of that stage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from vrft import __version__
from vrft.config import ConfigError
from vrft.signals import Terminated, restore_sigterm, unwind_on_sigterm

# The default experiment ships inside the package (configs/default.yaml links to it), so `vrft run`
# with no config works from any directory.
DEFAULT_CONFIG = str(Path(__file__).resolve().parent / "resources" / "default.yaml")


class CommandError(Exception):
    """An error to print as one line, without a traceback."""


def _experiment(args: argparse.Namespace):
    from vrft.experiment import load_experiment

    return load_experiment(args.config, args.overrides)


def _check_outputs(
    args: argparse.Namespace,
    config,
    output: Path | str | None,
    *,
    kind: str = "",
    checkpoint: Path | str | None = None,
    tracking_uri: str = "",
) -> None:
    """Refuse the command's output where it would replace one of its inputs (see :mod:`vrft.inputs`),
    before anything is read or written; every command that writes goes through here."""
    from vrft.inputs import check_outputs, command_inputs

    if output is None:
        return
    inputs = command_inputs(
        getattr(args, "config", None),
        config,
        dataset=getattr(args, "dataset", None),
        checkpoint=checkpoint,
        gate=getattr(args, "gate", None),
        evaluations=getattr(args, "evaluations", None) or (),
        tracking_uri=tracking_uri,
    )
    check_outputs(output, inputs, overwrite=getattr(args, "overwrite", False), kind=kind)


def _check_tracking_environment() -> None:
    """A command that logs to ``MLFLOW_TRACKING_URI`` checks it before its work, not at its first log."""
    from vrft.inputs import check_tracking_uri

    check_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", ""), what="MLFLOW_TRACKING_URI")


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from vrft.models.tiny import build_tiny_model

    print(build_tiny_model(args.output_dir, family=args.family, seed=args.seed))
    return 0


def _cmd_dataset_build(args: argparse.Namespace) -> int:
    from vrft.data.build import build_dataset
    from vrft.stage import open_stage
    from vrft.tracking import STAGE_DATASET

    config = _experiment(args)
    _check_outputs(args, config, args.output_dir, kind="dataset")
    _check_tracking_environment()
    with open_stage("dataset", config, kind=STAGE_DATASET, params=lambda c: {"dataset": c.dataset}) as stage:
        result = build_dataset(config.dataset, args.output_dir, overwrite=args.overwrite)
        stage.tracker.log_metrics({f"rows/{split}": n for split, n in result.num_rows.items()})
    counts = ", ".join(f"{split}: {n}" for split, n in result.num_rows.items())
    print(f"{result.output_dir} ({counts})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from vrft.io import atomic_write_text
    from vrft.stage import open_stage
    from vrft.tracking import STAGE_TRAIN, Tracker, report_method
    from vrft.train import MlflowTarget, train_grpo, train_sft
    from vrft.train.callbacks import MLFLOW_RUN_FILE

    config = _experiment(args)
    _check_outputs(args, config, args.output_dir)
    _check_tracking_environment()
    method = args.train_command
    train = {"grpo": train_grpo, "sft": train_sft}[method]
    if args.tracking_run_id:  # launched by a pipeline stage: its processes log into the stage's MLflow run
        result = train(
            getattr(config, method),
            args.dataset,
            args.output_dir,
            model=config.model.materialized(),
            tracking=MlflowTarget(run_id=args.tracking_run_id),
        )
    else:
        # Tracked (when a tracking URI is known) like the pipeline's training stage: the same stage
        # wrapper, FAILED with the error if training raises; a resumed training continues its run.
        tracker = Tracker(config.pipeline.tracking_uri or None)
        run_file = Path(args.output_dir) / MLFLOW_RUN_FILE
        with open_stage(
            method,
            config,
            kind=STAGE_TRAIN,
            method=report_method(method),
            params={"model": config.model, method: getattr(config, method)},
            resume_run_id=_previous_run(tracker, run_file),
            tracker=tracker,
        ) as stage:
            try:
                tracking = None
                if stage.mlflow_run_id:
                    tracking = MlflowTarget(uri=tracker.tracking_uri or "", run_id=stage.mlflow_run_id)
                result = train(
                    getattr(config, method),
                    args.dataset,
                    args.output_dir,
                    model=config.model.materialized(),
                    tracking=tracking,
                )
            finally:
                if stage.mlflow_run_id and run_file.parent.is_dir():
                    atomic_write_text(run_file, json.dumps({"run_id": stage.mlflow_run_id}) + "\n")
    rank = f" (rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']})" if "RANK" in os.environ else ""
    print(f"{method}{rank}: {result.global_step} steps; model: {result.final_dir}")
    return 0


def _previous_run(tracker, run_file: Path) -> str | None:
    """The MLflow run of an earlier `vrft train` into the same output directory, if it is in this store."""
    if not tracker.enabled or not run_file.is_file():
        return None
    try:
        run_id = json.loads(run_file.read_text(encoding="utf-8"))["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run_id if isinstance(run_id, str) and tracker.run_exists(run_id) else None


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vrft.evaluate import evaluate_checkpoint
    from vrft.report.runs import evaluation_metrics
    from vrft.stage import open_stage
    from vrft.tracking import STAGE_EVALUATE, evaluation_tags

    config = _experiment(args)
    checkpoint = _checkpoint_argument(args.checkpoint)
    _check_outputs(args, config, args.output_dir, kind="evaluation", checkpoint=checkpoint)
    _check_tracking_environment()
    model = config.model.materialized()
    if checkpoint is not None:
        # The checkpoint's own family decides how its boxes are read; a family set in the config
        # must agree with it (evaluate_checkpoint refuses a contradiction in one line).
        model = replace(model, name_or_path=str(checkpoint))
    # Tracked (when a tracking URI is known) like the pipeline's evaluation stage: what `vrft report` reads.
    with open_stage(
        f"evaluate-{args.label}",
        config,
        kind=STAGE_EVALUATE,
        method=args.label,
        params={"model": config.model, "evaluate": config.evaluate},
    ) as stage:
        result = evaluate_checkpoint(
            config.evaluate,
            args.dataset,
            args.output_dir,
            model=model,
            label=args.label,
            overwrite=args.overwrite,
            gate=args.gate,
            context=stage.tags,
        )
        stage.tracker.set_tags(evaluation_tags(result))
        stage.tracker.log_metrics(evaluation_metrics(result))
        stage.tracker.log_artifacts(result.output_dir, "evaluation")
    print(
        json.dumps(
            {
                "label": result.label,
                "task": result.task,
                result.primary_metric: result.metrics.get(result.primary_metric),
                "output_dir": str(result.output_dir),
            }
        )
    )
    return 0


def _checkpoint_argument(value: str | None) -> Path | None:
    """``-m``: a model directory, or a ``tiny://`` name as configs accept it (resolved to its directory)."""
    from vrft.models.config import TINY_SCHEME, ModelConfig

    if not value:
        return None
    if value.startswith(TINY_SCHEME):
        return Path(ModelConfig(name_or_path=value).materialized().name_or_path)
    path = Path(value)
    if not path.exists() and (value.count("/") > 1 or value.startswith(("/", ".", "~"))):
        raise CommandError(f"-m {value}: no such checkpoint directory")
    return path


@contextlib.contextmanager
def _bounded_mlflow_http():
    """MLflow retries a failing HTTP request for minutes by default; a report gives up within one."""
    bounds = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    previous = {key: os.environ.get(key) for key in bounds}
    for key, value in bounds.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cmd_report(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vrft.inputs import check_tracking_uri
    from vrft.report import build_report
    from vrft.report.build import log_report
    from vrft.stage import open_stage
    from vrft.tracking import STAGE_REPORT, Tracker

    config = _experiment(args)
    sources = (
        ("--tracking-uri", args.tracking_uri),
        ("pipeline.tracking_uri", config.pipeline.tracking_uri),
        ("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", "")),
    )
    given_by, tracking_uri = next(((what, uri) for what, uri in sources if uri), ("", ""))
    if not tracking_uri and not args.evaluations:
        raise CommandError(
            "the report reads MLflow runs: pass --tracking-uri or set MLFLOW_TRACKING_URI "
            "(or name the evaluation directories with --evaluations)"
        )
    _check_outputs(args, config, args.output_dir, kind="report", tracking_uri=tracking_uri)
    check_tracking_uri(tracking_uri, what=given_by, must_exist=True)
    experiment = args.experiment or config.experiment.name
    log = config.report.log_to_mlflow and bool(tracking_uri)
    with (
        _bounded_mlflow_http(),
        open_stage(
            "report",
            config,
            kind=STAGE_REPORT,
            params={"report": config.report},
            tracker=Tracker(tracking_uri) if log else Tracker.off(),
            experiment=experiment,
        ) as stage,
    ):
        # This command's stage run is the report's run: build_report must not start another one.
        result = build_report(
            replace(config.report, log_to_mlflow=False),
            args.output_dir,
            tracking_uri=tracking_uri,
            experiment=experiment,
            overwrite=args.overwrite,
            evaluations=args.evaluations or None,
        )
        log_report(stage.tracker, result)
    print(result.html)
    print(result.markdown)
    flagged = len(result.regression_summary.get("regressions", []))
    if flagged:
        print(
            f"{flagged} metric(s) regressed against the previous run; see {result.output_dir}",
            file=sys.stderr,
        )
    return 3 if flagged and args.fail_on_regression else 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    from vrft.pipelines.preflight import PreflightError, run_preflight

    report = run_preflight(_experiment(args), source=str(args.config))
    print(report.text())
    if not report.ok:
        raise PreflightError(report.refusal())
    return 0


def _preflight(args: argparse.Namespace) -> None:
    """The preflight of `vrft run/submit/schedule`: refuses in one line before anything starts.

    `vrft run` prints its one-line summary with its progress; `vrft submit/schedule` stay quiet on
    success (their output is the run or schedule id; `vrft preflight` shows the whole report).
    """
    if args.ignore_preflight:
        return
    from vrft.pipelines.preflight import check_preflight

    report = check_preflight(_experiment(args), source=str(args.config))
    if args.func is _cmd_run:
        print(report.summary(), flush=True)


def _cmd_run(args: argparse.Namespace) -> int:
    from vrft.pipelines.local import run_local, summary

    if args.output_dir:
        _check_outputs(args, _experiment(args), args.output_dir)
        if Path(args.output_dir).exists() or Path(args.output_dir).is_symlink():
            # Checked before the pipeline runs: the report is written there only at its end.
            raise CommandError(
                f"{args.output_dir}: already exists; --output-dir must name a new directory for the "
                "report (remove it, or choose another)"
            )
    _preflight(args)
    result = run_local(
        args.config, args.overrides, state_dir=args.state_dir, output_dir=args.output_dir, runner=args.runner
    )
    print(summary(result))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from vrft.pipelines.local import up

    services = up(Path(args.state_dir) / "services")
    print(f"S3: {services.s3_endpoint}  MLflow: {services.tracking_uri}")
    print(services.ui_hint())
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from vrft.pipelines.local import down

    print("stopped" if down(Path(args.state_dir) / "services") else "nothing was running")
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from vrft.pipelines.dag import compile_pipeline

    _check_outputs(args, _experiment(args), args.output)
    print(compile_pipeline(args.config, args.output, args.overrides, target=args.target))
    return 0


def _cmd_airflow(args: argparse.Namespace) -> int:
    from vrft.experiment import load_experiment
    from vrft.pipelines.airflow.local import config_overrides, run_airflow_test, summary, write_dag_file

    overrides = [*args.overrides, *config_overrides(args.executor, getattr(args, "cron", None))]
    if args.airflow_command == "dag":
        config = load_experiment(args.config, overrides)
        _check_outputs(args, config, args.output)
        print(write_dag_file(config, args.output))
        return 0
    if args.output_dir:
        _check_outputs(args, load_experiment(args.config, overrides), args.output_dir)
    result = run_airflow_test(args.config, overrides, state_dir=args.state_dir, output_dir=args.output_dir)
    print(summary(result))
    return 0


def _compiled(args: argparse.Namespace, directory: str) -> Path:
    from vrft.pipelines.dag import FRESH_OVERRIDES, compile_pipeline

    overrides = list(args.overrides)
    if getattr(args, "fresh", False):  # `vrft schedule --fresh`: nothing is reused, every night
        overrides += FRESH_OVERRIDES
    return compile_pipeline(args.config, Path(directory) / "pipeline.yaml", overrides, target="cluster")


def _cmd_submit(args: argparse.Namespace) -> int:
    from vrft.pipelines.kfp_client import run_url, submit

    config = _experiment(args)
    _preflight(args)
    with tempfile.TemporaryDirectory() as tmp:
        run_id = submit(
            _compiled(args, tmp),
            args.host,
            args.experiment or config.experiment.name,
            args.run_name or f"vrft-{config.experiment.name}",
            {},
            args.namespace,
            existing_token=args.token,
            backend_version=args.backend_version,
        )
    print(run_id)
    print(run_url(args.host, run_id))
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from vrft.pipelines import kfp_client

    if args.list:
        for item in kfp_client.list_schedules(
            args.host, args.experiment or None, args.namespace, existing_token=args.token
        ):
            print(f"{item.id}  {item.name}  {item.cron}  {item.status}")
        return 0
    if args.delete:
        kfp_client.delete_schedule(args.host, args.delete, args.namespace, existing_token=args.token)
        print(f"deleted {args.delete}")
        return 0
    if not args.config or not args.cron:
        raise CommandError("schedule needs CONFIG and --cron (or --list / --delete ID)")
    config = _experiment(args)
    _preflight(args)
    with tempfile.TemporaryDirectory() as tmp:
        schedule_id = kfp_client.schedule(
            _compiled(args, tmp),
            args.host,
            args.experiment or config.experiment.name,
            args.name or f"vrft-{config.experiment.name}-nightly",
            args.cron,
            {},
            namespace=args.namespace,
            replace=args.replace,
            existing_token=args.token,
            backend_version=args.backend_version,
        )
    print(schedule_id)
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from vrft.pipelines.kfp_client import list_runs

    for run in list_runs(
        args.host, args.experiment or None, args.limit, args.namespace, existing_token=args.token
    ):
        print("  ".join(str(field) for field in run))
    link = _comparison_link(args.experiment)
    if link:
        print(f"RFT vs SFT per run in MLflow: {link}")
    return 0


def _comparison_link(experiment: str) -> str:
    """The MLflow UI page of ``experiment``'s pipeline runs with their comparison metrics, where the
    tracking URI ($MLFLOW_TRACKING_URI) is an MLflow server (its UI is at the same address)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not experiment or not uri.startswith(("http://", "https://")):
        return ""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from vrft.report.comparison import comparison_url

    # A link is a courtesy: an unreachable server costs seconds, not MLflow's minutes of retries.
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
        os.environ.setdefault(name, value)
    try:
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except (MlflowException, OSError):
        return ""
    return comparison_url(found.experiment_id, uri) if found is not None else ""


def _cmd_reward(args: argparse.Namespace) -> int:
    from vrft.config import parse_override
    from vrft.rewards import Reward, resolve_reward

    reward = resolve_reward(args.name)
    text = sys.stdin.read() if args.completion == "-" else args.completion
    columns = {}
    for item in args.column:
        keys, value = parse_override(item)
        columns[".".join(keys)] = [value]
    if isinstance(reward, Reward):
        result = reward.breakdown([text], **columns)[0].as_dict()
    else:
        result = {"overall": _plugin_score(args.name, reward, text, columns)}
    print(json.dumps(result))
    return 0


def _plugin_score(name: str, reward, text: str, columns: dict) -> float:
    """Call a plugin reward as trl does (``f(completions, **columns) -> list[float]``); what it raises
    or returns instead is the plugin's fault, said in one line."""
    import math

    if not callable(reward):
        raise CommandError(f"reward {name}: {type(reward).__name__} is not callable")
    try:
        scores = reward([text], **columns)
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CommandError(f"reward {name}: raised {type(exc).__name__}: {first}") from None
    valid = isinstance(scores, (list, tuple)) and len(scores) == 1
    score = scores[0] if valid else None
    if not (isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)):
        raise CommandError(
            f"reward {name}: returned {_short(scores)}; a reward returns a list of one finite number "
            "per completion"
        )
    return float(score)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cmd_prompt(args: argparse.Namespace) -> int:
    from vrft.config import parse_override
    from vrft.data.common import MAX_IMAGE_SIDE
    from vrft.models.coords import BoxConvention
    from vrft.prompts import render_prompt

    values = {}
    for item in args.value:
        keys, value = parse_override(item)
        values[".".join(keys)] = str(value)
    for flag, value in (("--width", args.width), ("--height", args.height)):
        if value is not None and not 0 < value <= MAX_IMAGE_SIDE:
            raise CommandError(
                f"{flag} {value}: an image side is a whole number of pixels from 1 to {MAX_IMAGE_SIDE}"
            )
    convention = BoxConvention.for_family(args.family)
    print(render_prompt(args.name, convention=convention, width=args.width, height=args.height, **values))
    return 0


def _config_args(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    if optional:
        parser.add_argument(
            "config",
            nargs="?",
            default=DEFAULT_CONFIG,
            help="experiment YAML (default: the packaged default experiment, configs/default.yaml)",
        )
    else:
        parser.add_argument("config", type=Path, help="experiment YAML (see configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value, e.g. grpo.max_steps=25; every field is documented in its section's "
        "dataclass (python -m pydoc vrft.experiment.ExperimentConfig)",
    )


def _backend_version_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend-version",
        default=None,
        metavar="VERSION",
        help="the KFP backend's version, for servers whose healthz reports none (default: as reported)",
    )


def _kfp_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", required=True, help="Kubeflow Pipelines API URL, e.g. http://localhost:8080"
    )
    parser.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")
    parser.add_argument(
        "--experiment", default="", help="KFP experiment (default: the config's experiment.name)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("KFP_TOKEN"),
        help="bearer token for the KFP API (default $KFP_TOKEN)",
    )


def _ignore_preflight_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ignore-preflight",
        action="store_true",
        help="start even if `vrft preflight` finds a problem (memory estimate over pipeline.gpu_memory, "
        "prompts that cannot hold their image tokens); the check is skipped",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vrft",
        description="Visual Reinforcement Fine-Tuning for Qwen2-VL / Qwen2.5-VL: few-shot data, GRPO with "
        "verifiable visual rewards, an SFT baseline, evaluation and RFT-vs-SFT reports.",
    )
    parser.add_argument("--version", action="version", version=f"vrft {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (also: {DEBUG_ENV}=1); `vrft run` always "
        "writes it to the run's log file",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the whole pipeline locally (task after task, local S3 + MLflow)")
    _config_args(run, optional=True)
    run.add_argument(
        "--state-dir", default=".vrft", help="services, caches and the KFP local root (default .vrft)"
    )
    run.add_argument(
        "--output-dir", default=None, help="where to put the report (default outputs/RUN_ID/report)"
    )
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: stages in this environment (default); docker: each stage in its own "
        "container of the CPU image named by pipeline.image_registry/image_tag (DOCKER_HOST)",
    )
    _ignore_preflight_arg(run)
    run.set_defaults(func=_cmd_run)

    preflight = sub.add_parser(
        "preflight",
        help="image tokens, prompt lengths, peak GPU memory per rank and GPUs at once, before anything runs",
    )
    _config_args(preflight, optional=True)
    preflight.set_defaults(func=_cmd_preflight)

    dataset = sub.add_parser("dataset", help="stage 1: few-shot dataset construction")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    build = dataset_sub.add_parser("build", help="build the train/eval sets of one experiment")
    _config_args(build)
    build.add_argument("-o", "--output-dir", type=Path, required=True)
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier dataset (never an input, nor other files)",
    )
    build.set_defaults(func=_cmd_dataset_build)

    train = sub.add_parser("train", help="stages 2 and 3: GRPO training and the SFT baseline")
    train_sub = train.add_subparsers(dest="train_command", metavar="METHOD", required=True)
    for method, text in (
        ("grpo", "GRPO with verifiable visual rewards (Visual-RFT)"),
        ("sft", "the SFT baseline on the same data and step budget"),
    ):
        p = train_sub.add_parser(method, help=text)
        _config_args(p)
        p.add_argument(
            "-d", "--dataset", type=Path, required=True, help="a directory built by `vrft dataset build`"
        )
        p.add_argument(
            "-o",
            "--output-dir",
            type=Path,
            required=True,
            help="checkpoints, final model, logs (resumes here)",
        )
        p.add_argument(
            "--tracking-run-id", default="", help=argparse.SUPPRESS
        )  # the pipeline stage's MLflow run
        p.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate", help="stage 4: evaluate a base/SFT/RFT checkpoint (mAP, accuracy, mIoU)"
    )
    _config_args(evaluate)
    evaluate.add_argument(
        "-d", "--dataset", type=Path, required=True, help="a directory built by `vrft dataset build`"
    )
    evaluate.add_argument("-o", "--output-dir", type=Path, required=True)
    evaluate.add_argument(
        "-m",
        "--checkpoint",
        help="a trained model directory, or a tiny:// model as configs name it (default: the config's "
        "base model)",
    )
    evaluate.add_argument(
        "--label", default="base", choices=["base", "sft", "rft"], help="what the checkpoint is"
    )
    evaluate.add_argument(
        "--gate",
        type=Path,
        help="existence_gated: the base evaluation's directory (its gate.json), shared by every checkpoint",
    )
    evaluate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier evaluation (never an input, nor other files)",
    )
    evaluate.set_defaults(func=_cmd_evaluate)

    report = sub.add_parser(
        "report", help="stage 5: paper-style RFT-vs-SFT tables, plots and the regression check"
    )
    _config_args(report)
    report.add_argument("-o", "--output-dir", type=Path, required=True)
    report.add_argument(
        "--tracking-uri",
        default="",
        help="MLflow store (default: pipeline.tracking_uri or $MLFLOW_TRACKING_URI)",
    )
    report.add_argument(
        "--experiment", default="", help="MLflow experiment (default: the config's experiment.name)"
    )
    report.add_argument(
        "--evaluations",
        type=Path,
        nargs="+",
        help="tables from exactly these evaluation directories "
        "(MLflow then only for the regression history); default: the experiment's MLflow runs",
    )
    report.add_argument("--fail-on-regression", action="store_true", help="exit 3 when a metric regressed")
    report.add_argument(
        "--overwrite", action="store_true", help="replace an earlier report (never an input, nor other files)"
    )
    report.set_defaults(func=_cmd_report)

    up = sub.add_parser("up", help="start the local S3 and MLflow services and keep them running")
    up.add_argument("--state-dir", default=".vrft")
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop the local services started by `vrft up`")
    down.add_argument("--state-dir", default=".vrft")
    down.set_defaults(func=_cmd_down)

    comp = sub.add_parser("compile", help="compile the Kubeflow pipeline to IR YAML")
    _config_args(comp)
    comp.add_argument("-o", "--output", type=Path, default=Path("pipeline.yaml"))
    comp.add_argument(
        "--target",
        choices=["cluster", "local"],
        default="cluster",
        help="cluster (default): checked for the cluster first (artifact root, registry, each "
        "training stage's preflight), secrets, endpoints, timeouts and GPU volumes wired in",
    )
    comp.set_defaults(func=_cmd_compile)

    submit = sub.add_parser("submit", help="compile and submit a run to Kubeflow Pipelines")
    _config_args(submit)
    _kfp_args(submit)
    submit.add_argument("--run-name", default="")
    _backend_version_arg(submit)
    _ignore_preflight_arg(submit)
    submit.set_defaults(func=_cmd_submit)

    schedule = sub.add_parser("schedule", help="create, list or delete nightly recurring runs")
    schedule.add_argument("config", nargs="?", type=Path)
    schedule.add_argument("overrides", nargs="*")
    _kfp_args(schedule)
    schedule.add_argument("--cron", help='five-field cron, e.g. "0 2 * * *" (nightly at 02:00)')
    schedule.add_argument("--name", default="", help="recurring run name (default vrft-<experiment>-nightly)")
    schedule.add_argument("--replace", action="store_true", help="replace a recurring run of the same name")
    schedule.add_argument(
        "--fresh",
        action="store_true",
        help="retrain and re-evaluate every night (no cached stage); default: reuse the stages whose "
        "inputs and image are unchanged (the report always runs)",
    )
    schedule.add_argument("--list", action="store_true", help="list recurring runs")
    schedule.add_argument("--delete", metavar="ID_OR_NAME", help="delete a recurring run")
    _backend_version_arg(schedule)
    _ignore_preflight_arg(schedule)
    schedule.set_defaults(func=_cmd_schedule)

    airflow = sub.add_parser(
        "airflow", help="the pipeline as an Airflow DAG: write its DAG file, or test it here"
    )
    airflow_sub = airflow.add_subparsers(dest="airflow_command", metavar="ACTION", required=True)
    airflow_dag = airflow_sub.add_parser("dag", help="write the DAG file of an experiment (drop it in dags/)")
    _config_args(airflow_dag)
    airflow_dag.add_argument("-o", "--output", type=Path, required=True, help="the DAG file to write (*.py)")
    airflow_dag.add_argument(
        "--cron", help='the DAG\'s schedule, e.g. "0 2 * * *" (pipeline.airflow.schedule)'
    )
    airflow_test = airflow_sub.add_parser(
        "test", help="run the DAG with `airflow dags test` on a local AIRFLOW_HOME and local S3 + MLflow"
    )
    _config_args(airflow_test, optional=True)
    airflow_test.add_argument(
        "--state-dir",
        default=".vrft-airflow",
        help="AIRFLOW_HOME, services, task directories (default .vrft-airflow)",
    )
    airflow_test.add_argument(
        "--output-dir", default=None, help="where to put the report (default outputs/RUN_ID/report)"
    )
    for action, executors in (
        (airflow_dag, ("local", "docker", "kubernetes")),
        (airflow_test, ("local", "docker")),
    ):
        action.add_argument(
            "--executor",
            choices=executors,
            help="how each task runs (pipeline.airflow.executor): a local process, a DockerOperator "
            "container of the CPU image"
            + (", a KubernetesPodOperator pod" if "kubernetes" in executors else ""),
        )
    airflow.set_defaults(func=_cmd_airflow)

    runs = sub.add_parser("runs", help="list recent Kubeflow runs with their status")
    _kfp_args(runs)
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=_cmd_runs)

    tiny = sub.add_parser(
        "tiny-model", help="build a tiny random Qwen2-VL / Qwen2.5-VL offline (tests, default run)"
    )
    tiny.add_argument("output_dir", type=Path)
    tiny.add_argument("--family", choices=["qwen2_vl", "qwen2_5_vl"], default="qwen2_vl")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_tiny_model)

    reward = sub.add_parser("reward", help="score one completion with a reward and print its breakdown")
    reward.add_argument(
        "name", help="a registered name (detection, classification, ...) or package.module:function"
    )
    reward.add_argument("completion", help="the completion text, or - to read it from standard input")
    reward.add_argument(
        "column", nargs="*", help="dataset columns as key=value (YAML), e.g. 'solution_boxes=[[1,2,3,4]]'"
    )
    reward.set_defaults(func=_cmd_reward)

    prompt = sub.add_parser("prompt", help="render a named prompt template for a model family")
    prompt.add_argument("name", help="detection, classification, existence or grounding")
    prompt.add_argument("value", nargs="*", help="template values as key=value, e.g. category=cat")
    prompt.add_argument("--family", default="qwen2_vl", help="model family (config.model_type)")
    prompt.add_argument("--width", type=int, help="image width (needed by Qwen2.5-VL's absolute convention)")
    prompt.add_argument("--height", type=int, help="image height")
    prompt.set_defaults(func=_cmd_prompt)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from vrft.tracking import TrackingStoreError

    errors: list[type[BaseException]] = [
        ConfigError,
        CommandError,
        ValueError,
        KeyError,
        OSError,
        TrackingStoreError,
    ]
    try:
        from vrft.pipelines.kfp_client import KfpError
        from vrft.pipelines.local import PipelineFailed, ServicesError

        errors += [KfpError, PipelineFailed, ServicesError]
    except ImportError:  # the pipeline extra is not installed
        pass
    return tuple(errors)


DEBUG_ENV = "VRFT_DEBUG"


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    """``--debug`` or ``VRFT_DEBUG`` set to anything but empty/0/false/no: show tracebacks."""
    if args is not None and getattr(args, "debug", False):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


#: The longest error line printed; the rest of a runaway message (a library's page of text) is cut.
MAX_ERROR_CHARS = 1000


def one_line(message: object) -> str:
    """An error message as one line: its lines joined, cut at :data:`MAX_ERROR_CHARS`.

    >>> one_line("File contains no section headers.\\nfile: 'creds', line: 1\\n")
    "File contains no section headers. | file: 'creds', line: 1"
    """
    text = " | ".join(line.strip() for line in str(message).splitlines() if line.strip())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on it)."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a non-file (captured in tests)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _not_utf8(argv: Sequence[str]) -> str | None:
    """The first argument that is not UTF-8 text (bytes of another encoding), shown escaped."""
    for item in argv:
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            return item.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = _not_utf8(argv)
    if bad is not None:
        # Paths end up in UTF-8 manifests, logs and MLflow; a codec error later would name nothing.
        print(
            f"vrft: error: argument '{bad}' is not UTF-8 text; rename the file or directory", file=sys.stderr
        )
        return 1
    # --debug is accepted anywhere on the line (`vrft run --debug`), not only before the command.
    debug_flag = "--debug" in argv[1:]
    argv = [argv[0], *(item for item in argv[1:] if item != "--debug")] if argv else argv
    # Overrides may come after options (`-o out grpo.max_steps=5`), which argparse alone rejects.
    args, extra = parser.parse_known_args(argv)
    args.debug = getattr(args, "debug", False) or debug_flag
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    if overrides and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *overrides]
        extra = [item for item in extra if item not in overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = debug_requested(args)
    previous_debug_env = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"  # stage processes of `vrft run` print their tracebacks too
    previous_sigterm = unwind_on_sigterm()  # SIGTERM unwinds like Ctrl-C: everything started is stopped
    config = getattr(args, "config", None)
    optional_config = args.func in (_cmd_run, _cmd_preflight)
    if optional_config and isinstance(config, str) and "=" in config and not Path(config).exists():
        # `vrft run grpo.max_steps=3`: no config given, only overrides of the default.
        args.config, args.overrides = DEFAULT_CONFIG, [config, *args.overrides]
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away (`vrft up | head -1`) shows here, not at exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_closed():  # another pipe (a child's): an error like any other
            print(f"vrft {args.command}: error: {exc}", file=sys.stderr)
            return 1
        _discard_stdout()  # the reader has what it wanted: nothing to report
        return 0
    except _known_errors() as exc:
        if debug:
            traceback.print_exc()
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"vrft {args.command}: error: {one_line(message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"vrft {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except Terminated as exc:
        if debug:
            traceback.print_exc()
        print(f"vrft {args.command}: terminated by signal {exc.signum}", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        if debug:
            traceback.print_exc()
        print(
            f"vrft {args.command}: error: {type(exc).__name__}: {one_line(exc)} "
            f"(unexpected; `vrft --debug {args.command} ...` shows where)",
            file=sys.stderr,
        )
        return 1
    finally:
        restore_sigterm(previous_sigterm)
        if previous_debug_env is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = previous_debug_env


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
