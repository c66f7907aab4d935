# vrft-cpu: the CPU stages (dataset, report) on a cluster, and every stage of `vrft run --runner docker`.
# Python 3.11 in a virtual environment at /opt/venv, the CPU build of torch and the locked dependency layer
# (docker/torch-cpu.lock, docker/requirements.lock: every file hash-checked, nothing resolved at build
# time), then the package itself without dependencies, so a source change rebuilds only the last layers.
# Build context: the repository root.
#
# Build arguments (docker/build.py passes them; see docs/images.md):
#   BASE_IMAGE        a Debian bookworm image with python3 + venv: python:3.11-slim-bookworm, or the
#                     air-gapped base of docker/airgap-base.sh
#   PIP_INDEX_URL     the package index (a site mirror); TORCH_INDEX_URL: where the CPU torch wheel is;
#   TORCH_FIND_LINKS  a directory/URL holding that wheel instead (optional)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
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

# libgl1/libglib2.0-0: OpenCV, imported by the LVIS API. Versions float with the pinned Debian release.
# /gcs /minio /s3 /oci: where the KFP v2 launcher maps artifacts; writable by the non-root user.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "${VIRTUAL_ENV}" \
    && groupadd --gid 1000 vrft \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/vrft --shell /bin/bash vrft \
    && mkdir -p /gcs /minio /s3 /oci \
    && chown 1000:1000 /gcs /minio /s3 /oci

# The dependency layer: changes only when a lock changes.
COPY docker/torch-cpu.lock docker/requirements.lock /opt/vrft-locks/
RUN pip install --no-cache-dir --require-hashes --no-deps --index-url "${PIP_INDEX_URL}" \
        --extra-index-url "${TORCH_INDEX_URL}" ${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"} \
        -r /opt/vrft-locks/torch-cpu.lock \
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

WORKDIR /workspace
COPY configs ./configs

# The commit the image was built from (docker/build.py passes it): the stages' MLflow runs record it,
# as there is no git checkout in the image. Last, so that a new commit rebuilds only this layer.
ARG VRFT_GIT_COMMIT=unknown
ENV VRFT_GIT_COMMIT=${VRFT_GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet

USER 1000:1000
# No ENTRYPOINT: Kubeflow (and kfp's local DockerRunner) pass the whole command, which an ENTRYPOINT
# would swallow as arguments. `docker run IMAGE vrft ...` for the CLI.
CMD ["vrft", "--help"]
