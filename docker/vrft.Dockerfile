# vrft: the GPU stages (grpo, sft, evaluate) and multi-node PyTorchJobs. vrft-base (CUDA torch,
# torchvision, DeepSpeed) plus the locked dependency layer (docker/requirements.lock: hash-checked,
# torch left out, so the base's CUDA build stays), then the package itself without dependencies, so a
# source change rebuilds only the last layers. Build context: the repository root.
ARG BASE_IMAGE=vrft-base
FROM ${BASE_IMAGE}

ARG PIP_INDEX_URL=https://pypi.org/simple

USER 0:0
COPY docker/requirements.lock /opt/vrft-locks/
RUN pip install --no-cache-dir --require-hashes --no-deps --index-url "${PIP_INDEX_URL}" \
        -r /opt/vrft-locks/requirements.lock

COPY pyproject.toml README.md /opt/vrft-src/
COPY vrft /opt/vrft-src/vrft
COPY components /opt/vrft-src/components
COPY pipelines /opt/vrft-src/pipelines
RUN pip install --no-cache-dir --no-deps --no-build-isolation --no-index /opt/vrft-src \
    && rm -rf /opt/vrft-src \
    && pip check \
    && vrft --version

# Experiment YAMLs and DeepSpeed configs, so `vrft train grpo configs/...` works in the pod.
WORKDIR /workspace
COPY configs ./configs

# The commit the image was built from (docker/build.py passes it): the stages' MLflow runs record it,
# as there is no git checkout in the image. Last, so that a new commit rebuilds only this layer.
ARG VRFT_GIT_COMMIT=unknown
ENV VRFT_GIT_COMMIT=${VRFT_GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet

USER 1000:1000
# No ENTRYPOINT: Kubeflow passes the whole command (`sh -c ...`, `accelerate launch ...`), which an
# ENTRYPOINT would swallow as arguments. `docker run IMAGE vrft ...` for the CLI.
CMD ["vrft", "--help"]
