#!/usr/bin/env bash
# THE script for a GPU machine (H100/H200): build, test, benchmark, summarise, in one run.
#
#   OUT=/some/dir bash bench/gpu_check.sh [--sanitize] [--no-bench] [--no-extras] [--quick]
#
# Run from anywhere (it cd's to the repository root). No internet needed: the extension is built
# in place with `python setup.py build_ext --inplace` (no pip, so torch is never reinstalled).
# Steps, each with a time limit carved from GPU_CHECK_BUDGET_S (default 480 s in all):
#   versions   nvidia-smi, torch, triton, nvcc
#   build      sm_90 only (TORCH_CUDA_ARCH_LIST=9.0), FASTDW_CUDA=1, MAX_JOBS=16
#   tests      pytest -x -q over the GPU test files (GPU_TESTS overrides the list)
#   check      python -m fastdw check
#   sanitize   (--sanitize) the CUDA tests under compute-sanitizer memcheck, then racecheck
#              (SANITIZE_TESTS overrides the files, SANITIZE_K the pytest -k expression;
#              `--sanitize --no-bench --no-extras` makes a sanitizer-only session)
#   bench_dw   fastdw-cuda vs torch: mobilenetv2, efficientnet_b0, convnext_t, replknet31;
#              fp32/bf16/fp16; nchw/channels_last; fwd, bwd_input, bwd_weight; batch 32
#   bench_sep  the fused separable suite: fwd, fwd+bwd, peak memory
#   extras     forward over 2^31 elements vs torch and float64; MobileNetV2 end to end
#   summary    $OUT/summary.md, also printed last
# $OUT receives at most 7 files: log.txt (everything), bench_dw.json, bench_dw.png,
# bench_sep.json, extras.json, summary.md, and sanitize.log with --sanitize.
# Exit code: non-zero if any step failed or was skipped for lack of time.
set -uo pipefail

OUT=${OUT:-$(cd "$(dirname "$0")/.." && pwd)/out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)   # absolute, before changing directory
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1   # logs stay whole when a step is stopped at its limit
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
LOG="$OUT/log.txt"
SANITIZE=0 BENCH=1 EXTRAS=1 QUICK=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) SANITIZE=1 ;;
    --no-bench) BENCH=0 ;;
    --no-extras) EXTRAS=0 ;;
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
STATUS=0
STEPS=()
: >"$LOG"

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME CAP_SECONDS LOGFILE COMMAND...: runs COMMAND with its output appended to LOGFILE,
# limited to min(CAP, time left); records NAME=ok|FAIL(rc)|TIMEOUT|SKIP:seconds.
step() {
  local name=$1 cap=$2 log=$3; shift 3
  local rem; rem=$(left)
  local limit=$((cap < rem ? cap : rem))
  if ((limit < 15)); then
    echo "[gpu_check] $name: SKIPPED, the time budget (${BUDGET}s) is spent"
    STEPS+=("$name=SKIP:0"); STATUS=1; return 1
  fi
  echo "[gpu_check] $name: running (limit ${limit}s)"
  printf '\n===== %s: %s =====\n' "$name" "$*" >>"$log"
  local t0 size; t0=$(date +%s); size=$(stat -c %s "$log")
  timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1
  local rc=$? secs=$(($(date +%s) - t0)) state=ok
  if ((rc == 124 || rc == 137)); then state=TIMEOUT; elif ((rc != 0)); then state="FAIL($rc)"; fi
  STEPS+=("$name=$state:$secs")
  echo "[gpu_check] $name: $state in ${secs}s"
  if [[ $state != ok ]]; then
    STATUS=1
    echo "----- last lines of $name (full log: $(basename "$log")) -----"
    tail -c +$((size + 1)) "$log" | tail -n 25 | cut -c1-300
    echo "-----"
    return 1
  fi
}

# ---- versions -------------------------------------------------------------------------------
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
    || echo "nvidia-smi failed"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version(), "| GPU",
torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
  "$PY" -c 'import triton; print("triton", triton.__version__)' || echo "triton missing"
  nvcc --version | tail -n 2 | head -n 1
  echo "budget ${BUDGET}s; out $OUT; sanitize=$SANITIZE bench=$BENCH extras=$EXTRAS quick=$QUICK"
} 2>&1 | tee -a "$LOG"
TORCH_BEFORE=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)

# ---- build ----------------------------------------------------------------------------------
# In place, so `import fastdw` from the repository root picks up the fresh fastdw/_C*.so.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} FASTDW_CUDA=1
BUILD_OK=1
step build 300 "$LOG" "$PY" setup.py build_ext --inplace || BUILD_OK=0
if ((BUILD_OK)); then
  step import 60 "$LOG" "$PY" -c '
import torch, fastdw
from fastdw import backends
assert backends.cuda_kernels_built(), "fastdw._C has no CUDA kernels"
print("fastdw backends:", fastdw.available_backends())' || BUILD_OK=0
fi
TORCH_AFTER=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)
[[ "$TORCH_BEFORE" == "$TORCH_AFTER" ]] ||
  echo "[gpu_check] WARNING: torch changed: $TORCH_BEFORE -> $TORCH_AFTER"

if ((BUILD_OK)); then
  # ---- tests --------------------------------------------------------------------------------
  if [[ -z "${GPU_TESTS:-}" ]]; then
    GPU_TESTS=""
    for f in tests/test_cuda.py tests/test_separable.py tests/test_nn.py; do
      [[ -f $f ]] && GPU_TESTS="$GPU_TESTS $f"
    done
  fi
  if [[ -n "${GPU_TESTS// /}" ]]; then
    # shellcheck disable=SC2086
    step tests 150 "$LOG" "$PY" -m pytest $GPU_TESTS -x -q -p no:cacheprovider
  else
    echo "[gpu_check] tests: no GPU test files found"; STEPS+=("tests=NONE:0"); STATUS=1
  fi
  step check 45 "$LOG" "$PY" -m fastdw check

  # ---- sanitizer ----------------------------------------------------------------------------
  if ((SANITIZE)); then
    SLOG="$OUT/sanitize.log"; : >"$SLOG"
    SAN_TESTS=${SANITIZE_TESTS:-tests/test_cuda.py}
    # Every kernel path, dtype and layout once; not gradcheck or hypothesis (too slow there).
    SAN_K=${SANITIZE_K:-kernel_paths or large_kernels or raw_ops_write_every_element or empty_batch}
    if command -v compute-sanitizer >/dev/null; then
      for tool in memcheck racecheck; do
        # No caching allocator: an out-of-bounds access then leaves its allocation.
        # shellcheck disable=SC2086
        step "sanitize-$tool" 240 "$SLOG" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
          compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
          "$PY" -m pytest $SAN_TESTS -x -q -p no:cacheprovider -k "$SAN_K"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$SLOG" | tail -n 1
      done
    else
      echo "[gpu_check] sanitize: compute-sanitizer not found"; STEPS+=("sanitize=NONE:0"); STATUS=1
    fi
  fi

  # ---- benchmarks ---------------------------------------------------------------------------
  if ((BENCH)); then
    if ((QUICK)); then TIMING=(--quick); else TIMING=(--rep-ms 20 --warmup-ms 5); fi
    COMMON=(--device cuda --dtype fp32 bf16 fp16 --layout nchw channels_last --batch 32
            --table summary --no-progress "${TIMING[@]}")
    step bench_dw 200 "$LOG" "$PY" -m fastdw bench "${COMMON[@]}" \
      --suite mobilenetv2 efficientnet_b0 convnext_t replknet31 \
      --pass fwd bwd_input bwd_weight --json "$OUT/bench_dw.json" --plot "$OUT/bench_dw.png"
    step bench_sep 90 "$LOG" "$PY" -m fastdw bench "${COMMON[@]}" \
      --suite separable --pass fwd fwd+bwd --json "$OUT/bench_sep.json"
  fi
  if ((EXTRAS)); then
    step extras 120 "$LOG" "$PY" bench/gpu_extras.py --json "$OUT/extras.json"
  fi
fi

# ---- summary (needs neither torch nor the build) ---------------------------------------------
echo
ARGS=()
for s in "${STEPS[@]}"; do ARGS+=(--step "$s"); done
"$PY" bench/gpu_summary.py --out "$OUT" "${ARGS[@]}" || STATUS=1
# Files come back only up to 16 MiB each: keep the end of an overlong log.
for f in "$OUT"/*.log "$OUT"/log.txt; do
  if [[ -f $f ]] && (($(stat -c %s "$f") > 15000000)); then
    tail -c 15000000 "$f" >"$f.tmp" && mv "$f.tmp" "$f"
  fi
done
VERDICT=$( ((STATUS == 0)) && echo PASS || echo FAIL)
echo "gpu_check: $VERDICT in $(($(date +%s) - START))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$STATUS"
