# The stage images, both from this one file (docker/build.py passes the two build arguments that differ):
#
#   vrft-cpu  BASE_IMAGE=python:3.11-slim-bookworm (or docker/airgap-base.sh's)  TORCH_VARIANT=cpu
#             the CPU stages (dataset, report) on a cluster, and every stage of `vrft run --runner docker`
#   vrft      BASE_IMAGE=<registry>/vrft-base:<tag> (CUDA devel, Python 3.11, torch for CUDA, DeepSpeed)
#             TORCH_VARIANT= (empty: the base's CUDA torch stays)
#             the GPU stages (grpo, sft, evaluate) and multi-node PyTorchJobs
#
# Python 3.11 in a virtual environment at /opt/venv, the torch wheel of docker/torch-${TORCH_VARIANT}.lock,
# the locked dependency layer (docker/requirements.lock: every file hash-checked, nothing resolved at
# build time), then the package itself without dependencies, so a source change rebuilds only the last
# layers. Build context: the repository root.
#
# Build arguments (see docs/images.md):
#   BASE_IMAGE        a Debian/Ubuntu image with python3 (3.11) + venv, or vrft-base
#   TORCH_VARIANT     cpu: install torch==${TORCH_VERSION}+cpu from docker/torch-cpu.lock; empty: keep the base's
#   PIP_INDEX_URL     the package index (a site mirror); TORCH_INDEX_URL: where the CPU torch wheel is;
#   TORCH_FIND_LINKS  a directory/URL holding that wheel instead (optional). A wheel in docker/wheels/
#                     (docker/build.py fetches it with this machine's pip) is used without any index.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Every image of this project carries it, so the intermediate images a failed build leaves behind can be
# pruned without touching anyone else's (`docker image prune --filter label=vrft.project`).
LABEL vrft.project=vrft

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
# pip inside a Debian venv trusts its own bundled CA list: point it at the system store (which holds
# the site's CA certificates, e.g. those docker/airgap-base.sh copies in).
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/vrft \
    HF_HOME=/home/vrft/.cache/huggingface

# libgl1/libglib2.0-0: OpenCV, imported by the LVIS API. Versions float with the pinned distribution.
# The venv, the user and the KFP v2 launcher's artifact mounts (/gcs /minio /s3 /oci, writable by the
# non-root user) are made unless the base has them (vrft-base does).
USER 0:0
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && { [ -x "${VIRTUAL_ENV}/bin/python" ] || python3 -m venv "${VIRTUAL_ENV}"; } \
    && { getent group 1000 >/dev/null || groupadd --gid 1000 vrft; } \
    && { getent passwd 1000 >/dev/null \
        || useradd --uid 1000 --gid 1000 --create-home --home-dir /home/vrft --shell /bin/bash vrft; } \
    && mkdir -p /gcs /minio /s3 /oci \
    && chown 1000:1000 /gcs /minio /s3 /oci

# The dependency layer: changes only when a lock (or the fetched torch wheel) changes. The wheel glob
# may match nothing (no wheel fetched, or the GPU image: TORCH_VARIANT empty); the locks always exist.
COPY docker/requirements.lock docker/torch-cpu.lock docker/wheels/torch-${TORCH_VERSION}+${TORCH_VARIANT}-*.whl /opt/vrft-locks/
RUN if [ -z "${TORCH_VARIANT}" ]; then \
        echo "torch: the base image's $(python -c 'import torch; print(torch.__version__)')"; \
    elif ls /opt/vrft-locks/torch-*.whl >/dev/null 2>&1; then \
        pip install --no-cache-dir --require-hashes --no-deps --no-index --find-links /opt/vrft-locks \
            -r "/opt/vrft-locks/torch-${TORCH_VARIANT}.lock"; \
    else \
        pip install --no-cache-dir --require-hashes --no-deps --index-url "${PIP_INDEX_URL}" \
            --extra-index-url "${TORCH_INDEX_URL}" ${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"} \
            -r "/opt/vrft-locks/torch-${TORCH_VARIANT}.lock"; \
    fi \
    && pip install --no-cache-dir --require-hashes --no-deps --index-url "${PIP_INDEX_URL}" \
        -r /opt/vrft-locks/requirements.lock \
    && python -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"

COPY pyproject.toml README.md /opt/vrft-src/
COPY vrft /opt/vrft-src/vrft
COPY components /opt/vrft-src/components
COPY pipelines /opt/vrft-src/pipelines
RUN pip install --no-cache-dir --no-deps --no-build-isolation --no-index /opt/vrft-src \
    && rm -rf /opt/vrft-src \
    && pip check \
    && vrft --version

# Experiment YAMLs and DeepSpeed configs, so that `vrft ... configs/<name>.yaml` works in a pod as in
# the repository. configs/default.yaml links to ../vrft/resources/default.yaml: that path leads to the
# installed package's resources here.
WORKDIR /workspace
COPY configs ./configs
RUN mkdir -p vrft \
    && ln -sfn "$(python -c 'import vrft, pathlib; print(pathlib.Path(vrft.__file__).parent / "resources")')" vrft/resources \
    && test -f configs/default.yaml

# The commit the image was built from (docker/build.py passes it): the stages' MLflow runs record it,
# as there is no git checkout in the image. Last, so that a new commit rebuilds only this layer.
ARG VRFT_GIT_COMMIT=unknown
ENV VRFT_GIT_COMMIT=${VRFT_GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet

USER 1000:1000
# No ENTRYPOINT: Kubeflow (and kfp's local DockerRunner) pass the whole command (`sh -c ...`,
# `accelerate launch ...`), which an ENTRYPOINT would swallow as arguments. `docker run IMAGE vrft ...`.
CMD ["vrft", "--help"]
