# vrft-base: the CUDA layer under the GPU stages (GRPO, SFT, evaluation). Built rarely, by
# docker/build.py before the vrft image.
#
# - Python 3.11 (deadsnakes) in a virtual environment at /opt/venv, first on PATH.
# - PyTorch for CUDA 12.8 from the PyTorch index at the same version as the CPU image and `make setup`
#   (tests/docker checks that), torchvision to match (Qwen2-VL's video processor needs it). The driver
#   on the nodes must support CUDA 12.8 (>= 570). Attention is PyTorch's SDPA: no flash-attention wheel
#   (its prebuilt wheels stop at torch 2.8).
# - DeepSpeed installed with DS_BUILD_OPS=0: its CUDA ops (fused Adam, ...) are JIT-compiled on first
#   use, which is why this is the CUDA *devel* image (nvcc, headers) with g++, ninja and Python headers.
#
# Build arguments: BASE_IMAGE (a CUDA devel image, e.g. from a site mirror), PIP_INDEX_URL (the package
# index or its mirror), TORCH_INDEX_URL (the PyTorch CUDA wheels or their mirror).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu22.04
FROM ${BASE_IMAGE}

# Prunable after a failed build without touching other projects' images (docker/vrft.Dockerfile).
LABEL vrft.project=vrft

ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_CUDA=cu128
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}
ARG DEEPSPEED_VERSION=0.19.8
ARG NINJA_VERSION=1.13.0
ARG SETUPTOOLS_VERSION=80.9.0
ARG WHEEL_VERSION=0.45.1

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/vrft \
    HF_HOME=/home/vrft/.cache/huggingface \
    TORCH_EXTENSIONS_DIR=/home/vrft/.cache/torch_extensions

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# System packages float with the pinned Ubuntu release (apt pins rot as the archive moves).
# libgl1/libglib2.0-0: OpenCV, imported by the LVIS API. /gcs /minio /s3 /oci: where the KFP v2
# launcher maps a component's artifacts; they must be writable by the non-root user.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-dev" "python${PYTHON_VERSION}-venv" \
        g++ libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON_VERSION}" -m venv "${VIRTUAL_ENV}" \
    && groupadd --gid 1000 vrft \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/vrft --shell /bin/bash vrft \
    && mkdir -p /gcs /minio /s3 /oci \
    && chown 1000:1000 /gcs /minio /s3 /oci

# setuptools/wheel/ninja: DeepSpeed builds without isolation, and JIT-compiles its ops with ninja.
RUN pip install --no-cache-dir --index-url "${PIP_INDEX_URL}" \
        "setuptools==${SETUPTOOLS_VERSION}" "wheel==${WHEEL_VERSION}" "ninja==${NINJA_VERSION}" \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PIP_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && DS_BUILD_OPS=0 pip install --no-cache-dir --no-build-isolation --index-url "${PIP_INDEX_URL}" \
        "deepspeed==${DEEPSPEED_VERSION}" \
    && python -c "import torch, deepspeed; print(torch.__version__, torch.version.cuda, deepspeed.__version__)"

WORKDIR /home/vrft
USER 1000:1000
