#!/usr/bin/env bash
# Measure the container path end to end: a private engine, the air-gapped base, the CPU image built on
# it, image sizes, then `vrft run --runner docker configs/default.yaml` (every task in its own container)
# and, for comparison, `vrft run configs/default.yaml` (every task a subprocess), each on a fresh state
# directory, with each task's seconds from the run's record (tasks.json). Prints one line per
# measurement; docs/images.md records what it printed.
#
#   sudo bench/bench_containers.sh [ENGINE_DIR]      # TORCH_FIND_LINKS=URL / TORCH_INDEX_URL=URL optional
#
# The CPU torch wheel comes from this machine's pip (docker/build.py fetches it into docker/wheels/).
# Needs root, docker.io and debootstrap (python3 docker/prerequisites.py installs them), and `make setup`
# done. An engine directory kept from an earlier run (`make test-containers`'s /tmp/vrft-test-engine)
# keeps its base (not made again) and its layers (the build is then a rebuild). Stops the engine it
# started; `docker/engine.sh remove ENGINE_DIR` deletes what it built.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-/tmp/vrft-bench-docker}
base=vrft-airgap-base:bookworm
export DOCKER_HOST
DOCKER_HOST=$(docker/engine.sh start "$dir" | sed -n 's/^DOCKER_HOST=//p')
# SeaweedFS's unix sockets live under the state dir: a short one.
runs=$(mktemp -d /tmp/vrft-bench-runs.XXXXXX)
trap 'rm -rf "$runs"; docker/engine.sh stop "$dir"' EXIT
echo "engine: $(docker info --format '{{.Driver}}') storage driver, $DOCKER_HOST"

# The image the default config names (what `vrft run --runner docker` will look for).
image=$(.venv/bin/python -c "from vrft.experiment import load_experiment
from vrft.pipelines.local.docker import cpu_image
print(cpu_image(load_experiment('configs/default.yaml', [])))")
registry=${image%/*} tag=${image##*:}
args=()
[[ -n ${TORCH_INDEX_URL:-} ]] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[[ -n ${TORCH_FIND_LINKS:-} ]] && args+=(--build-arg "TORCH_FIND_LINKS=$TORCH_FIND_LINKS")
[[ -n ${PIP_INDEX_URL:-} ]] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")

# Under logs/: the containers test counts anything in an engine directory but data/ and logs/ as left over.
log=$dir/logs/bench.log
mkdir -p "$dir/logs"
seconds() { local start=$SECONDS; "$@" >>"$log" 2>&1; echo $((SECONDS - start)); }
# Each task's status and seconds, from the record of the one run in a state directory.
per_task() {
    .venv/bin/python -c "import json, pathlib, sys
(record,) = pathlib.Path(sys.argv[1]).glob('runs/*/tasks.json')
print(', '.join(f\"{t['task']} {t['seconds']:.0f} s ({t['status']})\" for t in json.loads(record.read_text())['tasks']))" "$1"
}

if docker image inspect "$base" >/dev/null 2>&1; then
    echo "air-gapped base: kept in $dir"
else
    echo "air-gapped base (debootstrap + import): $(seconds docker/airgap-base.sh "$base") s"
fi
echo "CPU image on it: $(seconds env VRFT_REGISTRY="$registry" VRFT_TAG="$tag" .venv/bin/python docker/build.py \
    --no-push --only vrft-cpu --base-image "$base" --network host "${args[@]}") s"
# The image a rebuild replaced, left untagged (as make test-containers does).
docker image prune --force --filter label=vrft.project=vrft >/dev/null
docker images --format 'size: {{.Repository}}:{{.Tag}} {{.Size}}'
for runner in docker subprocess; do
    mkdir "$runs/$runner"
    echo "vrft run --runner $runner configs/default.yaml: $(seconds .venv/bin/vrft run --runner "$runner" \
        --state-dir "$runs/$runner/state" --output-dir "$runs/$runner/report" configs/default.yaml) s"
    echo "  per task: $(per_task "$runs/$runner/state")"
done
echo "log: $log"
