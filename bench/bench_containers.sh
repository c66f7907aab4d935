#!/usr/bin/env bash
# Measure the container path end to end, from nothing: a private engine, the air-gapped base, the CPU
# image built on it, image sizes, and `vrft run --runner docker configs/default.yaml` (every stage in
# its own container). Prints one line per measurement; docs/images.md records what it printed.
#
#   sudo bench/bench_containers.sh [ENGINE_DIR]      # TORCH_FIND_LINKS=URL / TORCH_INDEX_URL=URL optional
#
# The CPU torch wheel comes from this machine's pip (docker/build.py fetches it into docker/wheels/).
# Needs root, docker.io and debootstrap (python3 docker/prerequisites.py installs them), and `make setup`
# done. Stops the engine it started; `docker/engine.sh remove ENGINE_DIR` deletes what it built.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-/tmp/vrft-bench-docker}
export DOCKER_HOST
DOCKER_HOST=$(docker/engine.sh start "$dir" | sed -n 's/^DOCKER_HOST=//p')
trap 'docker/engine.sh stop "$dir"' EXIT
echo "engine: $(docker info --format '{{.Driver}}') storage driver, $DOCKER_HOST"

# The image the default config names (what `vrft run --runner docker` will look for).
image=$(.venv/bin/python -c "from vrft.experiment import load_experiment; from vrft.pipelines.local import cpu_image
print(cpu_image(load_experiment('configs/default.yaml', [])))")
registry=${image%/*} tag=${image##*:}
args=()
[[ -n ${TORCH_INDEX_URL:-} ]] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[[ -n ${TORCH_FIND_LINKS:-} ]] && args+=(--build-arg "TORCH_FIND_LINKS=$TORCH_FIND_LINKS")
[[ -n ${PIP_INDEX_URL:-} ]] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")

seconds() { local start=$SECONDS; "$@" >>"$dir/bench.log" 2>&1; echo $((SECONDS - start)); }

echo "air-gapped base (debootstrap + import): $(seconds docker/airgap-base.sh vrft-airgap-base:bookworm) s"
echo "CPU image on it: $(seconds env VRFT_REGISTRY="$registry" VRFT_TAG="$tag" .venv/bin/python docker/build.py \
    --no-push --only vrft-cpu --base-image vrft-airgap-base:bookworm --network host "${args[@]}") s"
docker images --format 'size: {{.Repository}}:{{.Tag}} {{.Size}}'
echo "vrft run --runner docker configs/default.yaml: $(seconds .venv/bin/vrft run --runner docker \
    --state-dir "$dir/state" --output-dir "$dir/report" configs/default.yaml) s"
echo "log: $dir/bench.log"
