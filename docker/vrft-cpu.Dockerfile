# syntax=docker/dockerfile:1
# vrft-cpu: the CPU stages (dataset, report). Python 3.11 slim with the CPU build of torch (from the
# PyTorch CPU index, so no CUDA packages are pulled), then the package with its pipeline and LVIS
# extras. Build context: the repository root.
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/vrft \
    HF_HOME=/home/vrft/.cache/huggingface

# libgl1/libglib2.0-0: OpenCV, imported by the LVIS API. Versions float with the pinned Debian release.
# /gcs /minio /s3 /oci: where the KFP v2 launcher maps artifacts; writable by the non-root user.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 vrft \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/vrft --shell /bin/bash vrft \
    && mkdir -p /gcs /minio /s3 /oci \
    && chown 1000:1000 /gcs /minio /s3 /oci

COPY pyproject.toml README.md /opt/vrft-src/
COPY vrft /opt/vrft-src/vrft
COPY components /opt/vrft-src/components
COPY pipelines /opt/vrft-src/pipelines
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "/opt/vrft-src[pipeline,lvis]" \
    && rm -rf /opt/vrft-src \
    && vrft --version

WORKDIR /workspace
COPY configs ./configs

USER 1000:1000
ENTRYPOINT ["vrft"]
CMD ["--help"]
