#!/usr/bin/env bash
# The prepared GPU check: one run of at most 5 minutes on one GPU, every result written to OUT_DIR
# as soon as it exists (a run cut short keeps what it had).
#
#   benchmarks/gpu_check.sh DATA_DIR OUT_DIR [--cpu] [--wheels DIR] [--python PY]
#
# Steps, each under its own time limit (seconds, total <= 300):
#   env          python, torch, CUDA, GPU name                                -> OUT/env.txt
#   cuda_tests   the CUDA tests (sparse propagation on CUDA, training on CUDA) -> OUT/cuda_tests.txt
#   train        LightGCN and hetero on ciao, 3 epochs, device=cuda; test NDCG@20 against the CPU
#                torch.sparse run (benchmarks/gpu_check_reference.json), |diff| <= 0.002
#                                                                             -> OUT/train_*.json
#   step_time    benchmarks/step_time.py, mf/lightgcn/hetero, EW and PMTRec   -> OUT/step_time.txt
#   eval_time    benchmarks/eval_time.py, the Epinions-size evaluation, peak GPU memory
#                                                                             -> OUT/eval_time.txt
# OUT/summary.txt lists each step's status and seconds. Exit status: 0 when every step passed.
#
# --cpu: the same steps on the CPU with short settings and 5x the time limits (how the script is
# checked on a machine without a GPU; the CUDA tests then report "skipped").
#
# A GPU machine may have no package registry: the script uses the torch installed there and, with
# --wheels DIR, installs only the wheels in DIR (pip --no-index --no-deps). Prepare DIR on a machine
# with a registry, for the GPU machine's Python (here cp311, manylinux x86_64; ~130 MB):
#
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
#       --abi cp311 --abi abi3 --abi none --platform manylinux_2_28_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d wheels -r benchmarks/gpu_check_requirements.txt
#
# (for Python 3.12 there: --python-version 3.12 --abi cp312). Wheels are not committed.
set -uo pipefail

usage() { echo "usage: $0 DATA_DIR OUT_DIR [--cpu] [--wheels DIR] [--python PY]" >&2; exit 2; }
[ $# -ge 2 ] || usage
DATA_DIR=$(cd "$1" && pwd) || { echo "error: DATA_DIR $1 not found" >&2; exit 2; }
OUT_DIR=$2
shift 2
DEVICE=${DEVICE:-cuda}
WHEELS=""
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) DEVICE=cpu ;;
    --wheels) WHEELS=$2; shift ;;
    --python) PY=$2; shift ;;
    *) usage ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" DGLBACKEND=pytorch PMTREC_DATA_DIR="$DATA_DIR"
export PMTREC_RUNS_DIR="$OUT_DIR/runs-cache" PYTHONUNBUFFERED=1
cd "$ROOT" || exit 2
LIMIT_SCALE=1
# CPU mode: 5x the limits, and one thread unless told (on a shared CPU two OpenMP threads per
# process made every step several times slower)
[ "$DEVICE" = cpu ] && { LIMIT_SCALE=5; export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; }
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
FAILED=0

# step NAME LIMIT_S OUTFILE COMMAND...: run with a time limit, tee to OUTFILE, record status and time
step() {
  local name=$1 limit=$2 out=$3
  shift 3
  local start=$SECONDS
  limit=$((limit * LIMIT_SCALE))
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  local state=ok
  [ "$rc" -eq 0 ] || { state="FAILED (rc $rc$([ "$rc" -eq 124 ] && echo ', time limit'))"; FAILED=1; }
  echo "$name: $state, ${took}s" | tee -a "$SUMMARY"
}

if [ -n "$WHEELS" ]; then
  step wheels 30 "$OUT_DIR/wheels.txt" env -u PIP_FIND_LINKS -u PIP_INDEX_URL "$PY" -m pip install \
    --no-index --no-deps --find-links "$WHEELS" \
    -r benchmarks/gpu_check_requirements.txt
fi

if [ "$DEVICE" = cpu ]; then
  STEPS=3; ENCODERS=mf,lightgcn,hetero; REPEATS=1; EVAL_ARGS=(--users 2000 --items 5000)
else
  STEPS=15; ENCODERS=mf,lightgcn,hetero; REPEATS=3; EVAL_ARGS=()
fi

step env 15 "$OUT_DIR/env.txt" "$PY" -c "
import platform, torch
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'available', torch.cuda.is_available())
if torch.cuda.is_available():
    print('device', torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**20, 'MB')
elif '$DEVICE' == 'cuda':
    raise SystemExit('no CUDA device: rerun with --cpu')
"
[ "$FAILED" -eq 0 ] || { echo "environment check failed; see $OUT_DIR/env.txt" >&2; exit 1; }

step cuda_tests 45 "$OUT_DIR/cuda_tests.txt" "$PY" -m pytest -q -rs -p no:cacheprovider \
  "tests/test_encoders.py::test_sparse_path_on_cuda" "tests/test_tasks_and_devices.py::test_training_runs_on_cuda"

step train 90 "$OUT_DIR/train.txt" "$PY" benchmarks/gpu_train_check.py --device "$DEVICE" \
  --data-dir "$DATA_DIR" --out "$OUT_DIR"

step step_time 60 "$OUT_DIR/step_time.txt" "$PY" benchmarks/step_time.py --data-dir "$DATA_DIR" \
  --device "$DEVICE" --steps "$STEPS" --encoders "$ENCODERS" --methods ew,pmtrec

step eval_time 60 "$OUT_DIR/eval_time.txt" "$PY" benchmarks/eval_time.py --device "$DEVICE" \
  --repeats "$REPEATS" "${EVAL_ARGS[@]}"

echo "== summary ($SUMMARY)"
cat "$SUMMARY"
exit "$FAILED"
