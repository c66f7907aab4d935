#!/usr/bin/env bash
# The GPU numbers in one command: install the carried wheels, run the 2B-shaped GRPO and evaluation
# benchmarks (bf16, the paper's settings) and the `gpu`-marked tests, and write every number and log
# to $OUT (check.log, env.txt, stages.tsv, grpo.json, eval.json, gpu-tests.xml, summary.md).
#
#   bench/gpu/check.sh --dry-run   here, first: build .gpu-wheels/, check it under Python 3.12 (when one
#                                  can be found) and run every stage CPU-sized (a narrow two-layer model
#                                  of the same architecture) into .gpu-out/dry-run/
#   bench/gpu/check.sh             on the GPU machine (a device call carrying .gpu-wheels)
#   bench/gpu/check.sh --memory    on the GPU machine, a second call: the preflight's predicted vs
#                                  measured peak memory of the 2B-shaped GRPO step (bench/bench_memory.py)
#                                  at MEMORY_SETTINGS (G:checkpointing, default 8:on,4:on,8:off) into memory.json
#   bench/gpu/check.sh --dry-run --memory   here: that stage alone, CPU-sized (nothing measured)
#
# Stage sizes and limits fit one 10-minute call (timeout_s 600): about 20 s to install, then at most
# 30 + 240 + 160 + 120 s; override the sizes with GRPO_STEPS, EVAL_REQUESTS, EVAL_BATCH, EVAL_TOKENS.
# --memory: about 20 s to install, then at most 30 + 480 s.
# Each stage has its own time limit, and a failing stage does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
MODE=device
MEMORY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry-run ;;
    --memory) MEMORY=1 ;;
    *) echo "usage: bench/gpu/check.sh [--dry-run] [--memory]" >&2; exit 2 ;;
  esac
done
SUFFIX=""
[[ $MEMORY == 1 ]] && SUFFIX=-memory
OUT=${OUT:-$ROOT/.gpu-out/$MODE$SUFFIX}
mkdir -p "$OUT" && rm -f "$OUT"/{check.log,env.txt,stages.tsv,grpo.json,eval.json,memory.json,gpu-tests.xml,summary.md}
LOG=$OUT/check.log
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

# stage NAME SECONDS COMMAND...: run with a time limit, log everything, record the exit status.
stage() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout -k 15 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >>"$OUT/stages.tsv"
  echo "== $name: exit $rc after $(($(date +%s) - start))s" | tee -a "$LOG"
}

GPU_TESTS=(tests/train/test_gpu.py tests/evaluate/test_gpu.py)

if [[ $MODE == device ]]; then
  PY=python3
  SITE=/tmp/vrft-site
  ls .gpu-wheels/*.whl >/dev/null 2>&1 || { echo "no .gpu-wheels/*.whl: run bench/gpu/check.sh --dry-run here and carry .gpu-wheels" >&2; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu-wheels/*.whl 2>&1 | tee -a "$LOG"
  [[ ${PIPESTATUS[0]} == 0 ]] || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=$ROOT:$SITE
  { nvidia-smi; $PY -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'; } >"$OUT/env.txt" 2>&1
  stage requirements 30 $PY bench/gpu/wheels.py check
  cat "$OUT/env.txt" >>"$LOG"
  if [[ $MEMORY == 1 ]]; then
    stage memory-2b 480 $PY bench/bench_memory.py --settings "${MEMORY_SETTINGS:-8:on,4:on,8:off}" --json "$OUT/memory.json"
    "$PY" bench/gpu/summary.py "$OUT" | tee "$OUT/summary.md"
    ! cut -f2 "$OUT/stages.tsv" | grep -qv '^0$'
    exit
  fi
  stage grpo-2b 240 $PY bench/bench_grpo.py --case qwen2-vl-2b --steps "${GRPO_STEPS:-3}" --json "$OUT/grpo.json"
  stage eval-2b 160 $PY bench/bench_eval.py --shaped-only --gpu-requests "${EVAL_REQUESTS:-32}" \
    --gpu-batch-size "${EVAL_BATCH:-16}" --gpu-max-new-tokens "${EVAL_TOKENS:-64}" --json "$OUT/eval.json"
  stage gpu-tests 120 $PY -m pytest -m gpu "${GPU_TESTS[@]}" -q -p no:cacheprovider --junitxml "$OUT/gpu-tests.xml"
else
  PY=$ROOT/.venv/bin/python
  [[ -x $PY ]] || PY=python3
  if [[ $MEMORY == 1 ]]; then
    # The memory stage's path on the CPU: a narrow two-layer model of the same architecture; the
    # wheel set and its checks are the plain dry run's.
    "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "(no CUDA: dry run)")' \
      >"$OUT/env.txt" 2>&1
    stage memory-2b 900 "$PY" bench/bench_memory.py --shape mini --settings 4:on,2:off --completion-tokens 8 \
      --image-size 64 48 --max-pixels 12544 --json "$OUT/memory.json"
    "$PY" bench/gpu/summary.py "$OUT" | tee "$OUT/summary.md"
    ! cut -f2 "$OUT/stages.tsv" | grep -qv '^0$'
    exit
  fi
  stage wheel-set 600 "$PY" bench/gpu/wheels.py build
  # The machine's Python is 3.12: install the wheels there the way the device call does, over the
  # machine's recorded versions of what they need (torch-free: torch 2.11 for 3.12 is a GPU build here).
  PY312=""
  for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 \
                   "$(uv python find 3.12 2>/dev/null)"; do
    if [[ -n $candidate ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      PY312=$candidate; break
    fi
  done
  if [[ -n $PY312 ]]; then
    VENV=$ROOT/.gpu-out/py312-venv SITE=$ROOT/.gpu-out/py312-site
    base=()
    for name in numpy huggingface-hub tokenizers safetensors pyyaml pillow pandas pyarrow xxhash tqdm filelock \
                packaging typer psutil jinja2 requests httpx matplotlib pytest pytest-timeout; do
      base+=("$(grep -E "^$name(==|$)" bench/gpu/device-packages.txt || echo "$name")")
    done
    [[ -x $VENV/bin/python ]] || "$PY312" -m venv "$VENV"
    stage py312-base 600 "$VENV/bin/python" -m pip install -q "${base[@]}"
    rm -rf "$SITE"
    stage py312-install 300 "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" .gpu-wheels/*.whl
    stage py312-requirements 60 env PYTHONPATH="$SITE" "$VENV/bin/python" bench/gpu/wheels.py check \
      --ignore torch,accelerate
    stage py312-imports 120 env PYTHONPATH="$SITE" "$VENV/bin/python" -c '
import sys, importlib.metadata as m
import transformers, datasets, dill, multiprocess, regex, fsspec, pycocotools.coco, pycocotools.mask
from transformers import Qwen2VLConfig, Qwen2VLImageProcessorPil
assert transformers.__version__ == m.version("transformers"), transformers.__file__
print(sys.version.split()[0], "transformers", transformers.__version__, "datasets", datasets.__version__,
      "from", transformers.__file__.rsplit("/", 2)[0])'
  else
    echo "no Python 3.12 found (python3.12, pyenv, uv): the wheel set is checked under $PY only" | tee -a "$LOG"
  fi
  "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "(no CUDA: dry run)")' \
    >"$OUT/env.txt" 2>&1
  # The same stages as on the machine, CPU-sized: the 2B path with a narrow two-layer model.
  stage grpo-2b 900 "$PY" bench/bench_grpo.py --case qwen2-vl-2b --shape mini --steps 1 --completion-tokens 8 \
    --num-generations 4 --per-device-batch 4 --image-size 64 48 --max-pixels 12544 --json "$OUT/grpo.json"
  stage eval-2b 600 "$PY" bench/bench_eval.py --shaped-only --shape mini --gpu-requests 4 --gpu-batch-size 2 \
    --gpu-max-new-tokens 4 --max-pixels 12544 --json "$OUT/eval.json"
  stage gpu-tests 900 env VRFT_GPU_TESTS_ON_CPU=1 "$PY" -m pytest -m gpu "${GPU_TESTS[@]}" -q -p no:cacheprovider \
    --junitxml "$OUT/gpu-tests.xml"
fi

"$PY" bench/gpu/summary.py "$OUT" | tee "$OUT/summary.md"
# Non-zero when any stage failed.
! cut -f2 "$OUT/stages.tsv" | grep -qv '^0$'
