# vrft developer entry points. `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_EXTRAS ?= pipeline
EXTRAS ?= $(RUN_EXTRAS),lvis,airflow,dev
# A GPU machine keeps pip's CUDA torch; elsewhere the CPU build is installed first so that nothing
# pulls gigabytes of CUDA packages.
# One torch version everywhere: here, in the CPU image and in the GPU image (docker/*.Dockerfile
# TORCH_VERSION; tests/docker checks that they agree).
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_VERSION := 2.13.0
CPU_TORCH ?= torch==$(TORCH_VERSION)
TORCH := $(if $(HAS_GPU),torch==$(TORCH_VERSION),$(CPU_TORCH))
UV ?= uv==0.13.8
# --compile-bytecode: uv does not write .pyc files by default, and where PYTHONDONTWRITEBYTECODE is set
# (as on our development machines) Python never writes them either: every stage process then compiled
# transformers, trl, peft and mlflow from source again, half of a local pipeline run (docs/pipeline.md).
UV_INSTALL = $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY)
CONFIG ?= configs/default.yaml

.PHONY: setup run test browser test-containers clean-containers lint format deepspeed images clean help

help:
	@echo "make setup   create $(VENV) and install vrft with its pipeline and test dependencies"
	@echo "make run     run the whole pipeline on the embedded default ($(CONFIG))"
	@echo "make test    run the test suite (PYTEST_WORKERS=2 processes; docs/testing.md)"
	@echo "make test-containers  build the CPU image on an air-gapped base and run the pipeline in containers"
	@echo "                      (root: installs docker.io and debootstrap; engine in $(VRFT_ENGINE_DIR))"
	@echo "make clean-containers  stop that engine and remove $(VRFT_ENGINE_DIR), the fetched torch wheel and logs"
	@echo "make lint    ruff (check, format --check) and the import layers (import-linter)"
	@echo "make deepspeed  add DeepSpeed (multi-GPU ZeRO-2/3) to $(VENV)"
	@echo "make images  build and push the cluster images (VRFT_REGISTRY, VRFT_TAG; DOCKER_HOST)"

# Two install stamps: `make run` needs the pipeline extra only; `make test` adds LVIS and the test tools.
setup: $(VENV)/.installed-test

# pip picks torch (the local CPU build, or its CUDA build on a GPU machine); uv, which resolves and
# installs the remaining ~150 packages in parallel (minutes faster than pip), keeps it: it satisfies
# pyproject's bound.
$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vrft needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet '$(TORCH)' '$(UV)'
	$(UV_INSTALL) -e '.[$(RUN_EXTRAS)]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(UV_INSTALL) -e '.[$(EXTRAS)]'
	touch $@

run: $(VENV)/.installed-run
	$(VENV)/bin/vrft run $(CONFIG)

# pytest-xdist: PYTEST_WORKERS processes (2: the CI machine's cores). `--dist loadfile` runs each file on
# one worker, so a module fixture (the end-to-end run, the cluster compile) is built once; files go out
# long ones first, in the order tests/conftest.py sorts them. `make test PYTEST_WORKERS=0`: one process.
# Timings and why not loadgroup: docs/testing.md.
PYTEST_WORKERS ?= 2
test: setup browser
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The browser test (MLflow's UI on a real run, tests/pipelines/test_local_run.py) drives Debian's
# headless Chromium through chromedriver: installed here when missing (root: apt-get); where it
# cannot be, the test fails with one line naming what is missing.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "browser test: chromium and chromium-driver are missing and cannot be installed here (not root or no apt-get)"; \
		fi; \
	fi

# Tests marked `containers` (deselected from `make test`): start a private Docker engine in
# VRFT_ENGINE_DIR when none is given (DOCKER_HOST), build the air-gapped base and the CPU image, run a
# stage in it and `vrft run --runner docker`. What they need is checked first, before `make setup`, and
# installed where it can be (root: docker.io and debootstrap with apt-get); otherwise one line says what
# is missing and the target fails. -x: the first failure ends the run (the others would repeat it).
VRFT_ENGINE_DIR ?= /tmp/vrft-test-engine
test-containers:
	@VRFT_ENGINE_DIR=$(VRFT_ENGINE_DIR) $(PYTHON) docker/prerequisites.py
	@$(MAKE) --no-print-directory setup
	VRFT_ENGINE_DIR=$(VRFT_ENGINE_DIR) $(PY) -m pytest -m containers tests/docker/test_containers.py \
		-p no:cacheprovider -x

# The engine directory (images, layers, build cache: docs/images.md gives its size), the torch wheel
# docker/build.py fetched and the build logs; on an engine of your own (DOCKER_HOST), the intermediate
# images that failed builds of ours left (label vrft.project).
clean-containers:
	-$(if $(DOCKER_HOST),docker image prune --force --filter label=vrft.project=vrft)
	docker/engine.sh remove $(VRFT_ENGINE_DIR)
	rm -rf docker/wheels build/docker-logs

# The layers cli -> pipelines -> components -> library, no cycles (contracts in pyproject.toml;
# tools/import_graph.py runs import-linter on the sources laid out as installed).
lint: setup
	$(VENV)/bin/ruff check vrft components pipelines tests bench docker tools
	$(VENV)/bin/ruff format --check vrft components pipelines tests bench docker tools
	$(PY) tools/import_graph.py --check

format: setup
	$(VENV)/bin/ruff format vrft components pipelines tests bench docker tools

deepspeed: $(VENV)/.installed-run
	DS_BUILD_OPS=0 $(PY) -m pip install --no-build-isolation 'deepspeed==0.19.8'

# Cluster images (docker/build.py, through the docker Python SDK): vrft-base -> vrft, vrft-cpu,
# vrft-mlflow; each pushed after its build. Air-gapped: see docs/images.md.
#   make images VRFT_REGISTRY=ghcr.io/your-org VRFT_TAG=0.1.0 [IMAGE_ARGS="--no-push" | "--dry-run"]
export VRFT_REGISTRY VRFT_TAG
images: $(VENV)/.installed-run
	$(PY) docker/build.py $(IMAGE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
