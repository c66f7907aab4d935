# syntax=docker/dockerfile:1
# vrft: the GPU stages (grpo, sft, evaluate) and multi-node PyTorchJobs. vrft-base plus the package
# with its pipeline and LVIS extras; torch, flash-attention and DeepSpeed come from the base (pip keeps
# the CUDA torch because it satisfies pyproject's torch bound). Build context: the repository root.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

USER 0:0
COPY pyproject.toml README.md /opt/vrft-src/
COPY vrft /opt/vrft-src/vrft
COPY components /opt/vrft-src/components
COPY pipelines /opt/vrft-src/pipelines
RUN pip install --no-cache-dir "/opt/vrft-src[pipeline,lvis]" \
    && rm -rf /opt/vrft-src \
    && vrft --version

# Experiment YAMLs and DeepSpeed configs, so `vrft train grpo configs/...` works in the pod.
WORKDIR /workspace
COPY configs ./configs

USER 1000:1000
ENTRYPOINT ["vrft"]
CMD ["--help"]
