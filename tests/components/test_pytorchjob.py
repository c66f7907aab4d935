"""The multi-node PyTorchJob spec: structure, Kubernetes schema of its pods, and its launch command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.client.rest import ApiException
from torch.distributed.run import get_args_parser

from vrft import storage
from vrft.cli import build_parser
from vrft.components import cluster
from vrft.components.pytorchjob import (
    CONTAINER_NAME,
    DATASET_DIR,
    MultiNodeTraining,
    PyTorchJobError,
    create_or_adopt,
    fetch_dataset_command,
    job_name,
    launch_command,
    owner_from_env,
    pytorchjob_manifest,
    run_pytorchjob,
    spec_digest,
    to_yaml,
)
from vrft.components.resources import CACHE_ENV
from vrft.io import write_manifest

IMAGE = cluster.image_refs("registry.example.com/ml", "0.1.0")["grpo"]


def _job(**changes: Any) -> MultiNodeTraining:
    fields: dict[str, Any] = {
        "name": "coco-grpo-3n",
        "method": "grpo",
        "config": "configs/coco_8cat.yaml",
        "image": IMAGE,
        "nodes": 3,
        "gpus_per_node": 8,
        "dataset": "s3://vrft/runs/r1/dataset/dataset/",
        "shared_pvc": "vrft-shared",
        "output_dir": "/shared/runs/r1/grpo",
        "overrides": ("grpo.max_steps=200",),
        "namespace": "kubeflow",
    }
    return MultiNodeTraining(**(fields | changes))


def test_one_master_and_nodes_minus_one_workers_with_a_gpu_each_process() -> None:
    manifest = pytorchjob_manifest(_job())

    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    annotations = manifest["metadata"].pop("annotations")
    assert annotations == {"vrft.dev/spec-sha256": spec_digest(manifest["spec"])}
    assert manifest["metadata"] == {
        "name": "coco-grpo-3n",
        "namespace": "kubeflow",
        "labels": {
            "app.kubernetes.io/part-of": "vrft",
            "vrft.dev/stage": "grpo",
            "vrft.dev/job": "coco-grpo-3n",
            "vrft.dev/client": "true",  # admitted to S3 and MLflow by k8s/base/network-policies
        },
    }
    spec = manifest["spec"]
    assert spec["nprocPerNode"] == "8"
    replicas = spec["pytorchReplicaSpecs"]
    assert {role: r["replicas"] for role, r in replicas.items()} == {"Master": 1, "Worker": 2}
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    assert spec["runPolicy"]["backoffLimit"] == 0  # retries belong to the pipeline task, not half a job


def test_the_pods_run_on_gpu_nodes_with_the_pipeline_secrets_and_a_shared_volume() -> None:
    pod = pytorchjob_manifest(_job())["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    [container] = pod["containers"]

    assert container["name"] == CONTAINER_NAME == "pytorch"
    assert container["image"] == IMAGE
    assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
    assert container["resources"]["limits"][cluster.GPU_RESOURCE] == "8"
    assert pod["nodeSelector"] == dict(cluster.GPU_NODE_SELECTOR)
    assert pod["tolerations"] == [dict(t) for t in cluster.GPU_TOLERATIONS]
    assert pod["serviceAccountName"] == cluster.PIPELINE_SERVICE_ACCOUNT
    for each in (container, *pod["initContainers"]):
        secrets: dict[str, dict[str, str]] = {}
        for env in each["env"]:
            if "valueFrom" in env:
                ref = env["valueFrom"]["secretKeyRef"]
                secrets.setdefault(ref["name"], {})[ref["key"]] = env["name"]
        assert secrets == cluster.secret_env_spec("grpo")
        assert each["envFrom"] == [{"configMapRef": {"name": cluster.ENDPOINTS_CONFIG_MAP}}]
        # Non-root on a read-only root file system: what it writes goes to volumes.
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["runAsNonRoot"] is True
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"name": "tmp", "mountPath": "/tmp"} in each["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shared"]["persistentVolumeClaim"] == {"claimName": "vrft-shared"}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "shared": "/shared",
        "dshm": "/dev/shm",
        "dataset": "/data",
        "scratch": "/scratch",
        "tmp": "/tmp",
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: env[k] for k in CACHE_ENV} == CACHE_ENV  # caches on the scratch volume
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert (requests["memory"], limits["memory"]) == ("56Gi", "64Gi")  # requests fit the node, limits cap
    assert requests[cluster.GPU_RESOURCE] == limits[cluster.GPU_RESOURCE] == "8"


def test_an_artifact_dataset_is_fetched_by_an_init_container_into_each_pod() -> None:
    pod = pytorchjob_manifest(_job())["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["image"] == IMAGE
    assert init["command"] == fetch_dataset_command("s3://vrft/runs/r1/dataset/dataset/")
    assert init["command"][-1] == DATASET_DIR == "/data/dataset"
    assert init["volumeMounts"] == [
        {"name": "dataset", "mountPath": "/data"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert {v["name"]: v for v in pod["volumes"]}["dataset"] == {"name": "dataset", "emptyDir": {}}
    assert pod["containers"][0]["command"][-5:-1] == [
        "--dataset",
        "/data/dataset",
        "--output-dir",
        "/shared/runs/r1/grpo",
    ]


def test_a_dataset_on_the_shared_volume_is_read_in_place() -> None:
    pod = pytorchjob_manifest(_job(dataset="/shared/runs/r1/dataset"))["spec"]["pytorchReplicaSpecs"][
        "Master"
    ]
    spec = pod["template"]["spec"]
    assert "initContainers" not in spec
    assert {v["name"] for v in spec["volumes"]} == {"shared", "dshm", "scratch", "tmp"}
    command = spec["containers"][0]["command"]
    assert command[command.index("--dataset") + 1] == "/shared/runs/r1/dataset"


def test_the_fetch_command_downloads_and_verifies_the_artifact(tmp_path: Path) -> None:
    source = tmp_path / "built"
    (source / "train").mkdir(parents=True)
    (source / "train" / "data.arrow").write_bytes(b"rows" * 100)
    write_manifest(source, {"stage": "dataset"})
    uri = storage.upload_dir(source, f"file://{tmp_path}/store/dataset/")
    _, flag, script, *args = fetch_dataset_command(uri, str(tmp_path / "pod" / "dataset"))
    (tmp_path / "pod").mkdir()

    fetched = subprocess.run([sys.executable, flag, script, *args], capture_output=True, text=True)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "pod" / "dataset" / "train" / "data.arrow").read_bytes() == b"rows" * 100

    (tmp_path / "store" / "dataset" / "train" / "data.arrow").write_bytes(b"swapped" * 100)
    _, flag, script, *args = fetch_dataset_command(uri, str(tmp_path / "pod" / "again"))
    tampered = subprocess.run([sys.executable, flag, script, *args], capture_output=True, text=True)
    assert tampered.returncode != 0
    assert "data.arrow" in tampered.stderr
    assert not (tmp_path / "pod" / "again").exists()


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.utils.latest_version()])
def test_the_pod_templates_satisfy_the_kubernetes_schema(version: str) -> None:
    for role, replica in pytorchjob_manifest(_job())["spec"]["pytorchReplicaSpecs"].items():
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"coco-grpo-3n-{role.lower()}"},
            "template": replica["template"],
        }
        kubernetes_validate.validate(pod_template, version, strict=True)


def _expand(command: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of a container command from the container's environment."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in command]


def test_each_pod_runs_the_single_node_launcher_across_all_nodes() -> None:
    """torch.distributed.run as on one node; no DeepSpeed file on the command line: the stage's own
    (grpo.deepspeed / sft.deepspeed) reaches the processes through the trainer arguments."""
    job = _job(tracking_run_id="0a1b2c")
    operator_env = {"MASTER_ADDR": "coco-grpo-3n-master-0", "MASTER_PORT": "23456", "PET_NODE_RANK": "2"}
    command = _expand(
        pytorchjob_manifest(job)["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][
            0
        ]["command"],
        operator_env,
    )
    assert command[:3] == ["python", "-m", "torch.distributed.run"]

    args = get_args_parser().parse_args(command[3:])

    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("3", "8", 2)
    assert (args.master_addr, args.master_port) == ("coco-grpo-3n-master-0", 23456)
    assert args.module and args.training_script == "vrft.cli"
    assert args.training_script_args == [
        "train", "grpo", "configs/coco_8cat.yaml", "--dataset", "/data/dataset",
        "--output-dir", "/shared/runs/r1/grpo", "--tracking-run-id", "0a1b2c", "grpo.max_steps=200",
    ]  # fmt: skip
    assert not any("deepspeed" in arg or "zero3" in arg for arg in command)


def test_the_stage_tracking_server_and_checkpoint_mirror_reach_every_rank() -> None:
    job = _job(
        tracking_run_id="0a1b2c",
        tracking_uri="http://vrft-mlflow.vrft.svc:5000",
        checkpoint_uri="s3://vrft/runs/r1/shots-4/grpo/checkpoints/",
    )
    container = pytorchjob_manifest(job)["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://vrft-mlflow.vrft.svc:5000"
    assert env["VRFT_CHECKPOINT_URI"] == "s3://vrft/runs/r1/shots-4/grpo/checkpoints/"
    plain = pytorchjob_manifest(_job())["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    names = {e["name"] for e in plain["containers"][0]["env"]}
    assert "VRFT_CHECKPOINT_URI" not in names and "MLFLOW_TRACKING_URI" not in names  # the ConfigMap's


def test_the_training_arguments_are_a_vrft_command() -> None:
    command = launch_command(_job(method="sft", overrides=()))
    script_args = command[command.index("vrft.cli") + 1 :]
    parsed = build_parser().parse_args(script_args)
    assert (parsed.command, parsed.train_command) == ("train", "sft")
    assert (str(parsed.dataset), str(parsed.output_dir)) == ("/data/dataset", "/shared/runs/r1/grpo")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nodes": 1}, "a PyTorchJob is for 2 or more nodes"),
        ({"gpus_per_node": 0}, "at least one GPU per node"),
        ({"method": "ppo"}, "expected one of grpo, sft"),
        ({"name": "Coco_GRPO"}, "lower-case letters"),
        ({"name": "x" * 41}, "at most 40 characters"),
        ({"output_dir": "/outputs/r1"}, "must lie on the shared volume"),
        ({"dataset": "runs/r1/dataset"}, "an s3:// or file:// artifact URI, or an absolute path"),
    ],
)
def test_invalid_jobs_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _job(**changes)


def test_yaml_round_trip() -> None:
    manifest = pytorchjob_manifest(_job())
    assert yaml.safe_load(to_yaml(manifest)) == manifest


class FakeCustomObjects:
    """Stands in for kubernetes.client.CustomObjectsApi: stores the job, replays statuses.

    ``existing``: a job of the same name already there (an earlier attempt): create answers 409
    while it exists; a delete removes it after ``deletes_after`` further polls (foreground deletion).
    """

    def __init__(
        self, statuses: list[dict[str, Any]], existing: dict[str, Any] | None = None, deletes_after: int = 1
    ) -> None:
        self.statuses = statuses
        self.existing = existing
        self.deletes_after = deletes_after
        self.deleting: int | None = None
        self.created: list[tuple[str, str, str, str, dict[str, Any]]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self.patched: list[dict[str, Any]] = []
        self.polls = 0

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, propagation_policy: str = ""
    ) -> dict:
        self.deleted.append((namespace, name, propagation_policy))
        if self.existing is not None:
            self.deleting = self.deletes_after
        return {}

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict
    ) -> dict:
        self.patched.append(body)
        return body

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict
    ) -> dict:
        if self.existing is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        self.created.append((group, version, namespace, plural, body))
        return body

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict:
        assert (group, version, plural) == ("kubeflow.org", "v1", "pytorchjobs")
        if self.existing is not None:
            if self.deleting is not None:
                if self.deleting == 0:
                    self.existing = None
                    raise ApiException(status=404, reason="NotFound")
                self.deleting -= 1
            return self.existing
        assert name == self.created[0][4]["metadata"]["name"]
        status = self.statuses[min(self.polls, len(self.statuses) - 1)]
        self.polls += 1
        return {"status": status}


def _conditions(*types: str, message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": t, "status": "True", "message": message} for t in types]}


def test_run_pytorchjob_creates_the_job_and_waits_for_success() -> None:
    api = FakeCustomObjects(
        [{}, _conditions("Created", "Running"), _conditions("Created", "Running", "Succeeded")]
    )
    sleeps: list[float] = []
    manifest = pytorchjob_manifest(_job())

    assert run_pytorchjob(manifest, api=api, poll_s=5, sleep=sleeps.append) == "coco-grpo-3n"
    assert api.created == [("kubeflow.org", "v1", "kubeflow", "pytorchjobs", manifest)]
    assert sleeps == [5, 5]


def test_run_pytorchjob_reports_failure_and_timeout() -> None:
    failed = FakeCustomObjects(
        [_conditions("Running"), _conditions("Failed", message="worker-1 exited with code 137")]
    )
    with pytest.raises(PyTorchJobError, match="kubeflow/coco-grpo-3n failed: worker-1 exited with code 137"):
        run_pytorchjob(pytorchjob_manifest(_job()), api=failed, poll_s=1, sleep=lambda s: None)

    stuck = FakeCustomObjects([_conditions("Running")])
    with pytest.raises(PyTorchJobError, match="did not finish within 3 s; deleted it"):
        run_pytorchjob(pytorchjob_manifest(_job()), api=stuck, poll_s=1, timeout_s=3, sleep=lambda s: None)
    assert stuck.polls == 4
    assert stuck.deleted == [("kubeflow", "coco-grpo-3n", "Foreground")]  # its pods free their GPUs
    assert not failed.deleted


def test_a_stopped_stage_deletes_its_job() -> None:
    """KFP terminates a run by deleting its pods: the launcher gets SIGTERM, which the stage turns
    into KeyboardInterrupt (vrft.components.runtime); the job must not run on for up to 24 h."""
    running = FakeCustomObjects([_conditions("Running")])

    def terminated(seconds: float) -> None:
        raise KeyboardInterrupt("stopped by signal 15")

    with pytest.raises(KeyboardInterrupt):
        run_pytorchjob(pytorchjob_manifest(_job()), api=running, poll_s=1, sleep=terminated)
    assert running.deleted == [("kubeflow", "coco-grpo-3n", "Foreground")]


def _earlier_attempt(manifest: dict[str, Any], *conditions: str, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {**manifest["metadata"], **metadata},
        "spec": manifest["spec"],
        "status": _conditions(*conditions),
    }


def test_a_retried_task_adopts_its_running_job_and_becomes_its_owner() -> None:
    manifest = pytorchjob_manifest(_job(owner_pod=("launcher-attempt-2", "uid-2")))
    earlier = _earlier_attempt(
        manifest,
        "Created",
        "Running",
        ownerReferences=[{"kind": "Pod", "name": "launcher-1", "uid": "uid-1"}],
    )
    api = FakeCustomObjects([], existing=earlier)
    assert create_or_adopt(api, manifest, "kubeflow", sleep=lambda s: None) == "adopted"
    assert api.patched == [{"metadata": {"ownerReferences": manifest["metadata"]["ownerReferences"]}}]
    assert not api.deleted and not api.created


@pytest.mark.parametrize("why", ["failed", "other spec"])
def test_a_failed_or_different_job_of_the_same_name_is_replaced(why: str) -> None:
    manifest = pytorchjob_manifest(_job())
    if why == "failed":
        earlier = _earlier_attempt(manifest, "Failed")
    else:
        earlier = _earlier_attempt(manifest, "Running", annotations={"vrft.dev/spec-sha256": "0" * 64})
    api = FakeCustomObjects([_conditions("Succeeded")], existing=earlier, deletes_after=2)
    sleeps: list[float] = []
    assert create_or_adopt(api, manifest, "kubeflow", poll_s=5, sleep=sleeps.append) == "replaced"
    assert api.deleted == [("kubeflow", "coco-grpo-3n", "Foreground")]
    assert sleeps == [5, 5]  # waited until the old job and its pods were gone
    assert [c[4] for c in api.created] == [manifest]


def test_owner_deadline_and_verified_dataset() -> None:
    manifest = pytorchjob_manifest(
        _job(
            owner_pod=("vrft-grpo-launcher-abc", "0f1e-uid"),
            active_deadline_s=7200,
            dataset_manifest_sha256="ab" * 32,
        )
    )
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", "vrft-grpo-launcher-abc", "0f1e-uid")
    assert manifest["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7200
    init = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["initContainers"][0]
    assert init["command"][-1] == "ab" * 32  # the init container checks the manifest KFP recorded
    plain = pytorchjob_manifest(_job())
    assert (
        "ownerReferences" not in plain["metadata"]
        and "activeDeadlineSeconds" not in plain["spec"]["runPolicy"]
    )


def test_owner_comes_from_the_downward_api_variables() -> None:
    assert owner_from_env({"VRFT_POD_NAME": "p", "VRFT_POD_UID": "u"}) == ("p", "u")
    assert owner_from_env({"VRFT_POD_NAME": "p"}) is None


def test_job_names_differ_per_run_and_sweep_iteration() -> None:
    names = {job_name("grpo", run, it) for run in ("run-a", "run-b") for it in ("shots-1", "shots-16")}
    assert len(names) == 4
    for name in names:
        _job(name=name)  # a valid job name: DNS label, short enough for "-worker-NN" pods
    assert job_name("sft", "run-a", "shots-1") != job_name("grpo", "run-a", "shots-1")
