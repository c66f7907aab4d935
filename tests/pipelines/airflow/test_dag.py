"""The Airflow DAG: built from every config, it parses in a DagBag with the Kubeflow pipeline's task
graph, and its KubernetesPodOperator pods validate and carry the Kubeflow tasks' cluster settings."""

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from vrft.experiment import load_experiment
from vrft.pipelines.airflow.local import write_dag_file
from vrft.pipelines.airflow.task import SPEC_ENV
from vrft.pipelines.dag import RUN_ID_FIELD_PATH, compile_pipeline
from vrft.pipelines.plan import build_plan
from vrft.stage import RUN_ID_ENV

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DEFAULT = ROOT / "configs" / "default.yaml"
CLUSTER = ["pipeline.artifact_root=s3://lab/vrft", "pipeline.image_registry=registry.lab.internal/ml"]
OLDEST_KUBERNETES = "1.30.0"
#: Settings that make every kind of pod setting appear: multi-node training (shared volume, pod
#: name/uid), a source data volume, a scratch StorageClass, a sweep with a parallel-iteration bound.
EVERYTHING = [
    *CLUSTER,
    "experiment.shots=[1,2,4]",
    "pipeline.max_parallel_iterations=2",
    "pipeline.train_nodes=2",
    "pipeline.shared_pvc=vrft-shared",
    "pipeline.data_pvc=vrft-sources",
    "pipeline.scratch_storage_class=fast-ssd",
]


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """Every config's DAG file (`vrft airflow dag`), in one dags/ folder, parsed by Airflow."""
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path_factory.mktemp("dags")
    for path in CONFIGS:
        write_dag_file(load_experiment(path), folder / f"{path.stem}.py")
    for executor in ("docker", "kubernetes"):
        config = load_experiment(DEFAULT, [*CLUSTER, f"pipeline.airflow.executor={executor}"])
        config.experiment.name = f"default-{executor}"
        write_dag_file(config, folder / f"default_{executor}.py")
    return DagBag(dag_folder=str(folder))


def kfp_graph(ir_path: Path) -> dict[str, tuple[str, ...]]:
    """Display name -> the display names it waits for, from a compiled Kubeflow IR."""
    tasks = yaml.safe_load_all(ir_path.read_text()).__next__()["root"]["dag"]["tasks"]
    display = {name: t["taskInfo"]["name"] for name, t in tasks.items()}
    return {
        display[n]: tuple(sorted(display[d] for d in t.get("dependentTasks", []))) for n, t in tasks.items()
    }


def airflow_graph(dag) -> dict[str, tuple[str, ...]]:
    by_id = {t.task_id: t for t in dag.tasks}
    return {
        t.task_display_name: tuple(sorted(by_id[u].task_display_name for u in t.upstream_task_ids))
        for t in dag.tasks
    }


def test_every_config_parses_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    names = {f"vrft-{load_experiment(p).experiment.name}" for p in CONFIGS}
    assert names | {"vrft-default-docker", "vrft-default-kubernetes"} == set(dagbag.dag_ids)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_the_dag_has_the_kubeflow_pipelines_graph(dagbag, path, tmp_path):
    dag = dagbag.dags[f"vrft-{load_experiment(path).experiment.name}"]
    ir = compile_pipeline(path, tmp_path / "pipeline.yaml", target="local")
    graph = kfp_graph(ir)
    assert airflow_graph(dag) == graph
    assert len(graph) == len(build_plan(load_experiment(path)))


@pytest.fixture(scope="module")
def everything_ir(tmp_path_factory) -> Path:
    """The Kubeflow IR of the EVERYTHING settings, compiled for the cluster."""
    return compile_pipeline(DEFAULT, tmp_path_factory.mktemp("ir") / "pipeline.yaml", EVERYTHING)


def test_a_sweep_with_a_parallel_bound_has_the_same_graph(everything_ir):
    from vrft.pipelines.airflow.dag import build_dag

    dag = build_dag(load_experiment(DEFAULT, EVERYTHING), executor="kubernetes")
    assert airflow_graph(dag) == kfp_graph(everything_ir)
    assert len(dag.tasks) == 3 * 7 + 1


def test_schedule_retries_and_timeouts_come_from_the_config():
    from vrft.pipelines.airflow.dag import build_dag

    config = load_experiment(
        DEFAULT, ["pipeline.airflow.schedule='0 2 * * *'", "pipeline.train_retries=3", "pipeline.retries=1"]
    )
    dag = build_dag(config)
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.timetable.expression == "0 2 * * *"
    retries = {t.task_id.split(".")[-1]: t.retries for t in dag.tasks}
    assert retries["grpo"] == retries["sft"] == 3
    assert retries["dataset"] == retries["evaluate-rft"] == retries["report"] == 1
    assert retries["collect"] == 0
    timeouts = {t.task_id.split(".")[-1]: t.execution_timeout.total_seconds() for t in dag.tasks}
    assert timeouts["grpo"] == config.pipeline.timeouts.train
    assert timeouts["report"] == config.pipeline.timeouts.report
    assert not hasattr(build_dag(config, schedule="").timetable, "expression")  # triggered runs only


# --- KubernetesPodOperator pods against the Kubeflow tasks -------------------------------------


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    """The pod each KubernetesPodOperator task would create (rendered offline: a kubeconfig naming a
    server nobody contacts), by display name."""
    from kubernetes.client import ApiClient

    from vrft.pipelines.airflow.dag import build_dag

    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "offline", "user": {"token": "unused"}}],
                "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
                "current-context": "offline",
            }
        )
    )
    dag = build_dag(load_experiment(DEFAULT, EVERYTHING), executor="kubernetes")
    pods = {}
    for task in dag.tasks:
        task.config_file = str(kubeconfig)
        pods[task.task_display_name] = ApiClient().sanitize_for_serialization(task.build_pod_request_obj())
    return pods


@pytest.fixture(scope="module")
def kfp_tasks(everything_ir):
    """Display name -> (container spec, kubernetes platform spec) of the compiled cluster pipeline."""
    spec, platform = list(yaml.safe_load_all(everything_ir.read_text()))[:2]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    result = {}
    for task in spec["root"]["dag"]["tasks"].values():
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][label]["container"]
        result[task["taskInfo"]["name"]] = (container, executors[label])
    return result


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.utils.latest_version()])
def test_every_pod_validates_against_the_kubernetes_schema(pods, version):
    assert len(pods) == 22
    for pod in pods.values():
        kubernetes_validate.validate(pod, version, strict=True)


def test_the_schema_validation_can_fail(pods):
    broken = yaml.safe_load(yaml.safe_dump(next(iter(pods.values()))))
    broken["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST_KUBERNETES, strict=True)


def kfp_view(container: dict, platform: dict) -> dict:
    """What a Kubeflow task's pod gets, in one comparable shape."""
    resources = container.get("resources", {})
    accelerator = resources.get("accelerator")
    gpus = {accelerator["resourceType"]: accelerator["resourceCount"]} if accelerator else {}
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env_from = {
        e["name"]: ("field", e["fieldPath"])
        for e in platform.get("fieldPathAsEnv", [])
        if e["name"] != RUN_ID_ENV
    }
    for secret in platform.get("secretAsEnv", []):
        env_from |= {
            k["envVar"]: ("secret", secret["secretName"], k["secretKey"]) for k in secret["keyToEnv"]
        }
    for config_map in platform.get("configMapAsEnv", []):
        env_from |= {
            k["envVar"]: ("configmap", config_map["configMapName"], k["configMapKey"])
            for k in config_map["keyToEnv"]
        }
    volumes = {
        v["volumeName"]: ("memory", v["mountPath"], v["sizeLimit"])
        for v in platform.get("emptyDirMounts", [])
    }
    volumes |= {
        v["volumeName"]: ("ephemeral", v["mountPath"], v["size"], v.get("storageClassName", ""))
        for v in platform.get("genericEphemeralVolume", [])
    }
    pvcs = {
        (v["constant"] if "constant" in v else v["pvcName"], v["mountPath"])
        for v in platform.get("pvcMount", [])
    }
    security = platform.get("securityContext", {})
    return {
        "limits": {"cpu": resources["resourceCpuLimit"], "memory": resources["resourceMemoryLimit"], **gpus},
        "requests": {
            "cpu": resources["resourceCpuRequest"],
            "memory": resources["resourceMemoryRequest"],
            **gpus,
        },
        "labels": platform.get("podMetadata", {}).get("labels", {}),
        "env": env,
        "env_from": env_from,
        "security": {k: str(v) for k, v in security.items()},
        "timeout": int(platform.get("activeDeadlineSeconds", 0)),
        "node_selector": platform.get("nodeSelector", {}).get("labels", {}),
        "tolerations": platform.get("tolerations", []),
        "volumes": volumes,
        "pvcs": pvcs,
    }


def airflow_view(pod: dict) -> dict:
    """The same shape for a KubernetesPodOperator's pod."""
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "base"]
    env, env_from = {}, {}
    for e in container["env"]:
        source = e.get("valueFrom")
        if source is None:
            env[e["name"]] = e["value"]
        elif "fieldRef" in source:
            env_from[e["name"]] = ("field", source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            env_from[e["name"]] = ("secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        else:
            ref = source["configMapKeyRef"]
            env_from[e["name"]] = ("configmap", ref["name"], ref["key"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes, pvcs = {}, set()
    for v in spec["volumes"]:
        if v["name"] == "xcom":  # Airflow's XCom sidecar's
            continue
        if "emptyDir" in v:
            volumes[v["name"]] = ("memory", mounts[v["name"]], v["emptyDir"]["sizeLimit"])
        elif "ephemeral" in v:
            claim = v["ephemeral"]["volumeClaimTemplate"]["spec"]
            assert claim["accessModes"] == ["ReadWriteOnce"]
            volumes[v["name"]] = (
                "ephemeral",
                mounts[v["name"]],
                claim["resources"]["requests"]["storage"],
                claim.get("storageClassName", ""),
            )
        else:
            pvcs.add((v["persistentVolumeClaim"]["claimName"], mounts[v["name"]]))
    security = spec["securityContext"]
    labels = {k: v for k, v in pod["metadata"]["labels"].items() if not k.startswith("airflow")}
    env.pop(SPEC_ENV)
    resources = container["resources"]
    return {
        "limits": resources["limits"],
        "requests": resources["requests"],
        "labels": labels,
        "env": env,
        "env_from": env_from,
        "security": {k: str(v) for k, v in security.items() if k != "seccompProfile"},
        "timeout": spec.get("activeDeadlineSeconds", 0),
        "node_selector": spec.get("nodeSelector") or {},
        "tolerations": spec.get("tolerations") or [],
        "volumes": volumes,
        "pvcs": pvcs,
    }


def test_every_pod_carries_the_kubeflow_tasks_settings(pods, kfp_tasks):
    assert set(pods) == set(kfp_tasks)
    for name, pod in pods.items():
        assert airflow_view(pod) == kfp_view(*kfp_tasks[name]), name
    # Every kind of setting was compared somewhere.
    views = [airflow_view(pod) for pod in pods.values()]
    assert any(v["pvcs"] for v in views) and any(v["node_selector"] for v in views)
    assert {kind for v in views for kind, *_ in v["volumes"].values()} == {"memory", "ephemeral"}
    assert any(source[0] == "field" for v in views for source in v["env_from"].values())


def test_pods_add_what_the_kubeflow_backend_adds_itself(pods):
    """KFP >= 2.16 gives every pod no privilege escalation, no capabilities and RuntimeDefault
    seccomp; a KubernetesPodOperator pod must say so itself."""
    for pod in pods.values():
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["serviceAccountName"] == "vrft-pipeline"
    # The run id comes from Airflow's run, in the task spec, not from a Kubeflow pod label.
    assert not any(
        e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == RUN_ID_FIELD_PATH
        for pod in pods.values()
        for c in pod["spec"]["containers"]
        for e in c.get("env", [])
    )


def test_a_task_spec_takes_its_inputs_from_the_upstream_tasks_xcom():
    """XCom carries each output's metadata (URI + manifest hash); a container's arrives as its output's
    last JSON line."""
    from vrft.pipelines.airflow.dag import build_dag
    from vrft.pipelines.airflow.task import decode_spec

    dag = build_dag(load_experiment(DEFAULT, ["experiment.shots=[1,2]"]))
    pushed = {
        "shots-1.dataset": {
            "dataset": {"uri": "s3://vrft/runs/x/shots-1/dataset/dataset", "manifest_sha256": "a"}
        },
        "shots-1.evaluate-base": {
            "evaluation": {"uri": "s3://vrft/runs/x/shots-1/evaluate-base/e", "manifest_sha256": "c"}
        },
        # A container's output lines (DockerOperator, xcom_all): the outputs' JSON, then a late warning.
        "shots-1.grpo": [
            "step 1/2 ...",
            json.dumps({"checkpoint": {"uri": "s3://vrft/runs/x/shots-1/grpo/grpo", "manifest_sha256": "b"}}),
            "WARNING: something printed at exit",
        ],
    }

    class TaskInstance:
        def xcom_pull(self, task_ids):
            return pushed[task_ids]

    spec = decode_spec(
        dag.user_defined_macros["vrft_spec"](
            TaskInstance(), "manual__2026-12-05T00:00:00+00:00", "shots-1/evaluate-rft"
        )
    )
    expected = {
        "dataset": pushed["shots-1.dataset"]["dataset"],
        "checkpoint": json.loads(pushed["shots-1.grpo"][1])["checkpoint"],
    }
    if "gate" in spec["task"]["inputs"]:  # existence-gated detection: the base evaluation's gate
        expected["gate"] = pushed["shots-1.evaluate-base"]["evaluation"]
    assert spec["inputs"] == expected
    assert spec["run_id"] == "airflow-manual-2026-12-05T00-00-00-00-00"
    assert spec["task"]["id"] == "shots-1/evaluate-rft" and spec["parent"]["experiment"] == "default"
    pushed["shots-1.grpo"] = ["not json", "{broken"]
    with pytest.raises(ValueError):
        dag.user_defined_macros["vrft_spec"](TaskInstance(), "manual__1", "shots-1/evaluate-rft")


def test_docker_tasks_run_the_cpu_image_like_vrft_run_runner_docker():
    import os

    from vrft.pipelines.airflow.dag import build_dag

    dag = build_dag(load_experiment(DEFAULT, CLUSTER), executor="docker")
    for task in dag.tasks:
        assert task.image == "registry.lab.internal/ml/vrft-cpu:0.1.0"
        assert task.network_mode == "host" and task.user == f"{os.getuid()}:{os.getgid()}"
        assert task.entrypoint == "python" and task.command == ["-m", "vrft.pipelines.airflow.task"]
        assert "vrft_spec" in task.environment["VRFT_TASK_SPEC"] and task.do_xcom_push
        assert {m["Target"] for m in task.mounts} == {m["Source"] for m in task.mounts}


def test_docker_gpu_tasks_get_the_cuda_image_and_their_gpus():
    from vrft.pipelines.airflow.dag import build_dag

    config = load_experiment(DEFAULT, [*CLUSTER, "pipeline.airflow.docker_gpus=true"])
    dag = build_dag(config, executor="docker")
    by_stage = {t.task_id.rsplit(".", 1)[-1]: t for t in dag.tasks}
    grpo, dataset = by_stage["grpo"], by_stage["dataset"]
    assert grpo.image == "registry.lab.internal/ml/vrft:0.1.0" and dataset.image.endswith("/vrft-cpu:0.1.0")
    assert [r["Count"] for r in grpo.device_requests] == [config.pipeline.train_resources.gpus]
    assert grpo.shm_size == 16 * 2**30 and not dataset.device_requests
