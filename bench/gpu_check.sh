#!/usr/bin/env bash
# THE script for a GPU machine (H100/H200): build, test, benchmark, summarise, in one run.
# `--dry-run` runs every step with the CPU standing in for the GPU, for CI.
#
#   OUT=/some/dir bash bench/gpu_check.sh [--dry-run] [--sanitize] [--no-tests] [--no-bench]
#                                         [--no-extras] [--quick]
#
# Run from anywhere (it cd's to the repository root). No internet needed: the extension is built
# in place with `python setup.py build_ext --inplace` (no pip, so torch is never reinstalled).
#
# Time. A task lent a GPU has 15 minutes of device time in all, the machine's start (1-2 min)
# included. The default budget, GPU_CHECK_BUDGET_S=360, fits the start, this run, one rerun of
# the same length on the warm machine, and the transfers: 2 + 6 + 6 min, plus about one. Give the
# device tool timeout_s=420, and call give_back when done. Steps run in this order, each stopped
# at its cap; a step whose cap no longer fits in what is left of the budget is skipped and
# reported, so the run ends within its budget. The caps add up to more than one budget:
#   step       cap s  what
#   versions      20  nvidia-smi, python, torch, triton, nvcc
#   build        240  sm_90 only (TORCH_CUDA_ARCH_LIST=9.0), FASTDW_CUDA=1, MAX_JOBS=16; on 16
#                     cores the longest file decides: csrc/cpu/direct_nhwc.cpp takes ~170 s of
#                     CPU on CI's Xeon (2026-11-30). The warm machine keeps build/: a rerun's
#                     build is incremental (seconds)
#   import        30  fastdw imports and has its CUDA kernels
#   tests        150  pytest -x over GPU_TESTS (default test_cuda, test_separable, test_nn, and
#                     test_export_fused (the fused op exported, on the GPU) if onnx, onnxscript
#                     and onnxruntime import, test_export_aoti (torch 2.11's AOTInductor)) in
#                     MAX_JOBS processes (pytest-xdist): each new shape the fused kernels get
#                     makes Triton compile all 5-6 autotune configs (1-3 s of CPU each), so the
#                     compiles need every core
#   check         45  python -m fastdw check
#   extras        90  forward over 2^31 elements vs torch and float64; MobileNetV2 end to end
#   sanitize  2 x 240 (--sanitize) the CUDA tests under compute-sanitizer memcheck, racecheck
#                     (SANITIZE_TESTS overrides the files, SANITIZE_K the pytest -k expression)
#   triton        90  compiles, MAX_JOBS at a time, every Triton variant the separable benchmark
#                     launches (python -m fastdw.triton.variants: ~340), so bench_sep finds them
#                     in Triton's cache instead of compiling them one at a time
#   bench_dw     120  fastdw-cuda vs torch: mobilenetv2, efficientnet_b0, convnext_t, replknet31;
#                     fp32/bf16/fp16; nchw/channels_last; fwd, bwd_input, bwd_weight; batch 32
#   bench_sep    150  the fused separable suite: fwd, fwd+bwd, peak memory (the autotuner also
#                     times 5-6 configs per kernel and shape)
# --no-tests leaves out tests and check, --no-extras extras, --no-bench triton and both
# benchmarks (triton still runs for the tests). --quick: shorter benchmarks.
# The caps are estimates until a GPU run has measured the steps (the summary gives each step's
# seconds and CPU seconds). A window: `bash bench/gpu_check.sh` (correctness first, then what
# fits); then, on the warm machine, the rerun its summary proposes for the skipped steps, or
# `--sanitize --no-tests --no-bench --no-extras` if none were skipped.
#
# --dry-run (CI): the same steps and code, the CPU as the device, smaller sizes, caps x
# GPU_CHECK_CAP_SCALE (default 5) and a budget that fits every step's cap:
#   build      CPU kernels only; GPU_CHECK_BUILD=cuda builds exactly as above (no GPU needed)
#   tests      the same files in one process (so the fused ops' calls are recorded for triton),
#              Triton kernels interpreted (TRITON_INTERPRET=1); test_cuda skips itself
#   triton     compiles for sm_90 with no GPU (Triton's own compiler and ptxas) the tests' and
#              the GPU benchmark's variants: every autotune config and every value at least
#              once (GPU_CHECK_TRITON_EACH=value; cover pairs them, combination compiles every
#              constexpr combination with every config)
#   check      on the CPU, Triton kernels interpreted
#   bench_*    token runs on the CPU: --quick, batch 1, fp32, NCHW, forward only, bench_dw
#              on mobilenetv2 only (the triton step still compiles the GPU benchmark's variants)
#   extras     on the CPU: a small tensor, MobileNetV2 at batch 2 and 32x32
#   sanitize   the same tests without compute-sanitizer
#
# $OUT gets at most 8 files, all that comes back from the device machine: log.txt (everything),
# summary.md, triton.json, bench_dw.json, bench_dw.png, bench_sep.json, extras.json, and
# sanitize.log with --sanitize. The run fails if anything else is there. The summary is printed
# last, within the 12,000 characters of output the device tool returns.
# Exit code: 0 if every step ran and passed; 1 if one failed or was skipped; 2 on bad usage.
set -uo pipefail

DRY=0 SANITIZE=0 TESTS=1 BENCH=1 EXTRAS=1 QUICK=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --sanitize) SANITIZE=1 ;;
    --no-tests) TESTS=0 ;;
    --no-bench) BENCH=0 ;;
    --no-extras) EXTRAS=0 ;;
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu_check: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)   # absolute, before changing directory
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
MAX_OUT_FILES=8
OUT_FILES=(log.txt summary.md triton.json bench_dw.json bench_dw.png bench_sep.json extras.json
           sanitize.log)
declare -A CAP=([versions]=20 [build]=240 [import]=30 [tests]=150 [triton]=90 [check]=45
                [bench_dw]=120 [bench_sep]=150 [extras]=90 [sanitize]=240)
SUMMARY_RESERVE_S=15   # kept back for the summary and the checks of $OUT
KILL_AFTER_S=5         # a step ignoring SIGTERM at its cap is killed this much later

# What the GPU benchmarks run (the triton step compiles for these in both modes).
GPU_BENCH=(--dtype fp32 bf16 fp16 --layout nchw channels_last --batch 32)
SEP_SUITE=(--suite separable --pass fwd fwd+bwd)
DW_SUITES=(--suite mobilenetv2 efficientnet_b0 convnext_t replknet31
           --pass fwd bwd_input bwd_weight)
GPU_TEST_FILES=(tests/test_cuda.py tests/test_separable.py tests/test_nn.py) TESTS_NOTE=""
# Everything that differs between a GPU run and a dry run is here.
if ((DRY)); then
  MODE=dry-run SCALE=${GPU_CHECK_CAP_SCALE:-5} BUILD=${GPU_CHECK_BUILD:-cpu}
  DEVICE_ENV=(env TRITON_INTERPRET=1)   # the CPU stands in for the GPU, Triton interpreted
  SANITIZER=()
  TEST_ARGS=()            # one process: the recorder sees the tests' calls of the fused ops
  # Each variant takes seconds to tens of seconds of CPU: the pairwise covering set (~190 for
  # the tests and the benchmark) does not fit CI, the one-wise one (~24) does (see
  # fastdw/triton/variants.py)
  TRITON_EACH=${GPU_CHECK_TRITON_EACH:-value}
  BENCH_ARGS=(--device cpu --quick --batch 1 --dtype fp32 --layout nchw --min-time 0.005)
  # Token benchmarks: the steps' code and files, not the numbers (CI's time is short).
  DW_RUN=(--suite mobilenetv2 --pass fwd) SEP_RUN=(--suite separable --pass fwd)
  EXTRAS_ARGS=(--device cpu --shape 2 8 33 31 --rep-ms 5 --e2e-batch 2 --e2e-resolution 32
               --e2e-time 0.05)
else
  MODE=gpu SCALE=${GPU_CHECK_CAP_SCALE:-1} BUILD=${GPU_CHECK_BUILD:-cuda}
  DEVICE_ENV=(env)
  SANITIZER=(compute-sanitizer --error-exitcode 99 --print-limit 20 --tool)
  # Test processes in parallel (pytest-xdist), so the Triton kernels the tests launch compile
  # on every core: each new shape makes Triton compile all its autotune configs.
  TEST_ARGS=()
  "$PY" -c "import xdist" 2>/dev/null && TEST_ARGS=(-n "$MAX_JOBS")
  TRITON_EACH=${GPU_CHECK_TRITON_EACH:-specialization}   # bench_sep's, into Triton's cache
  if ((QUICK)); then BENCH_ARGS=(--device cuda "${GPU_BENCH[@]}" --quick)
  else BENCH_ARGS=(--device cuda "${GPU_BENCH[@]}" --rep-ms 20 --warmup-ms 5); fi
  EXTRAS_ARGS=(--device cuda)
  DW_RUN=("${DW_SUITES[@]}") SEP_RUN=("${SEP_SUITE[@]}")
  # The export tests on the GPU: the fused Triton op through ONNX and torch.export; AOTInductor
  # on torch 2.11. Not in the dry run: CI's main suite runs them on the CPU.
  GPU_TEST_FILES+=(tests/test_export_aoti.py)
  if "$PY" -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
    GPU_TEST_FILES+=(tests/test_export_fused.py)
  else
    TESTS_NOTE="tests/test_export_fused.py left out: onnx/onnxscript/onnxruntime missing"
  fi
fi
# The enabled steps, in order (build failures leave the rest "not run").
LATER=()
((TESTS)) && LATER+=(tests check)
((EXTRAS)) && LATER+=(extras)
((SANITIZE)) && LATER+=(sanitize)
((TESTS || BENCH)) && LATER+=(triton)
((BENCH)) && LATER+=(bench_dw bench_sep)
# The GPU's budget fits its window (see the top); a dry run's fits all its steps' caps.
ALL_CAPS=$((CAP[versions] + CAP[build] + CAP[import] + SANITIZE * CAP[sanitize]))
for name in "${LATER[@]}"; do ALL_CAPS=$((ALL_CAPS + CAP[$name])); done
if ((DRY)); then DEFAULT_BUDGET=$(((ALL_CAPS + 5 * 12) * SCALE + 15)); else DEFAULT_BUDGET=360; fi
BUDGET=${GPU_CHECK_BUDGET_S:-$DEFAULT_BUDGET}
case "$BUILD" in
  cuda) export FASTDW_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} ;;
  cpu) export FASTDW_CUDA=0 ;;
  *) echo "gpu_check: GPU_CHECK_BUILD must be cuda or cpu, got $BUILD" >&2; exit 2 ;;
esac
export MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1   # whole logs when a step is stopped

# $OUT is empty on the device machine; locally, only this script's own files may be there.
for f in "$OUT"/* "$OUT"/.[!.]*; do
  [[ -e $f ]] || continue
  name=$(basename "$f")
  if [[ " ${OUT_FILES[*]} " != *" $name "* ]]; then
    echo "gpu_check: $OUT holds $name, which this script does not write; only $MAX_OUT_FILES" \
         "files come back from the device machine, so empty it first" >&2
    exit 2
  fi
  rm -f "$f"
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/log.txt"
: >"$LOG"
START=$(date +%s)
STATUS=0
STEPS=()
EXCERPTS=()

say() { echo "[gpu_check] $*" | tee -a "$LOG"; }
# CPU seconds (user + system) of this shell's finished children, from the output of `times`.
children_cpu() {
  awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
                 printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"
}
left() { echo $((BUDGET - SUMMARY_RESERVE_S - ($(date +%s) - START))); }

# step NAME LOGFILE COMMAND...: runs COMMAND (its output appended to LOGFILE) if the step's cap
# fits in the budget left, stopping it at the cap; records NAME=STATE:SECONDS:CAP:CPU_SECONDS,
# STATE one of ok, FAIL(rc), TIMEOUT, SKIP.
step() {
  local name=$1 log=$2; shift 2
  local cap=$((${CAP[${name%%-*}]} * SCALE)) rem; rem=$(left)
  if ((cap + KILL_AFTER_S > rem)); then
    say "$name: SKIPPED: its cap of ${cap}s does not fit in the ${rem}s left of the" \
        "${BUDGET}s budget"
    STEPS+=("$name=SKIP:0:$cap:0"); STATUS=1; return 1
  fi
  say "$name: running (cap ${cap}s, ${rem}s left)"
  printf '\n===== %s: %s =====\n' "$name" "$*" >>"$log"
  local t0 own="$WORK/$name.out"; t0=$(date +%s)
  times >"$WORK/times0"
  timeout --kill-after="$KILL_AFTER_S" "$cap" "$@" >"$own" 2>&1
  local rc=$? secs=$(($(date +%s) - t0)) state=ok cpu
  times >"$WORK/times1"
  cpu=$(($(children_cpu "$WORK/times1") - $(children_cpu "$WORK/times0")))
  cat "$own" >>"$log"
  if ((rc == 124 || rc == 137)); then state=TIMEOUT; elif ((rc != 0)); then state="FAIL($rc)"; fi
  STEPS+=("$name=$state:$secs:$cap:$cpu")
  say "$name: $state in ${secs}s (${cpu}s of CPU): $(grep -v '^\s*$' "$own" | tail -n 1 |
       cut -c1-160)"
  if [[ $state != ok ]]; then
    STATUS=1; EXCERPTS+=(--excerpt "$name=$own")
    return 1
  fi
}

not_run() {   # steps that need an earlier one that failed
  for name in "$@"; do STEPS+=("$name=NOTRUN:0:0:0"); say "$name: not run: $WHY"; done
  STATUS=1
}

# ---- versions ------------------------------------------------------------------------------
step versions "$LOG" bash -c '
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  else echo "GPU: none (no nvidia-smi)"; fi
  "$0" -c "import sys, torch
print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| CUDA\",
      torch.version.cuda, \"| cuDNN\", torch.backends.cudnn.version(), \"| GPU\",
      torch.cuda.get_device_name() if torch.cuda.is_available() else None)
try:
    import triton
    print(\"triton\", triton.__version__)
except ImportError:
    print(\"triton: missing\")"
  if command -v nvcc >/dev/null; then nvcc --version | tail -n 2 | head -n 1
  else echo "nvcc: none"; fi
  echo "$1"' "$PY" "mode $MODE; build $BUILD; budget ${BUDGET}s; MAX_JOBS=$MAX_JOBS; out $OUT"
cp "$WORK/versions.out" "$WORK/versions.txt" 2>/dev/null
torch_version() { grep -o 'torch [^ ]*' "$1" 2>/dev/null | head -n 1; }

# ---- build ---------------------------------------------------------------------------------
# In place, so `import fastdw` from the repository root picks up the fresh fastdw/_C*.so.
BUILT=0
if step build "$LOG" "$PY" setup.py build_ext --inplace; then
  step import "$LOG" "$PY" -c '
import sys, torch, fastdw
from fastdw import backends
print("torch", torch.__version__)
if sys.argv[1] == "cuda":
    assert backends.cuda_kernels_built(), "fastdw._C has no CUDA kernels"
print("fastdw backends:", fastdw.available_backends())' "$BUILD" && BUILT=1
  # The build must leave torch alone (pip could have replaced it; setup.py build_ext does not).
  if [[ "$(torch_version "$WORK/versions.out")" != "$(torch_version "$WORK/import.out")" ]]; then
    say "torch changed during the build: $(torch_version "$WORK/versions.out") ->" \
        "$(torch_version "$WORK/import.out")"
    STATUS=1
  fi
fi

if ((!BUILT)); then
  WHY="no working build" not_run "${LATER[@]}"
else
  VARIANTS=("$PY" -m fastdw.triton.variants)
  CALLS=()
  # ---- tests -------------------------------------------------------------------------------
  if ((TESTS)); then
    if [[ -z "${GPU_TESTS:-}" ]]; then
      GPU_TESTS=""
      for f in "${GPU_TEST_FILES[@]}"; do
        [[ -f $f ]] && GPU_TESTS="$GPU_TESTS $f"
      done
      [[ -n $TESTS_NOTE ]] && say "$TESTS_NOTE"
    fi
    CALLS+=("$WORK/calls_tests.json")
    # shellcheck disable=SC2086
    step tests "$LOG" "${DEVICE_ENV[@]}" "${VARIANTS[@]}" record "${CALLS[0]}" \
      -m pytest $GPU_TESTS -x -q -p no:cacheprovider "${TEST_ARGS[@]}"
    step check "$LOG" "${DEVICE_ENV[@]}" "$PY" -m fastdw check
  fi
  # ---- >2^31 elements, MobileNetV2 end to end -------------------------------------------------
  if ((EXTRAS)); then
    step extras "$LOG" "$PY" bench/gpu_extras.py "${EXTRAS_ARGS[@]}" --json "$OUT/extras.json"
  fi
  # ---- sanitizer ---------------------------------------------------------------------------
  if ((SANITIZE)); then
    SLOG="$OUT/sanitize.log"; : >"$SLOG"
    SAN_TESTS=${SANITIZE_TESTS:-tests/test_cuda.py}
    # Every kernel path, dtype and layout once; not gradcheck or hypothesis (too slow there).
    SAN_K=${SANITIZE_K:-kernel_paths or large_kernels or raw_ops_write_every_element or empty_batch}
    if ((${#SANITIZER[@]})) && ! command -v "${SANITIZER[0]}" >/dev/null; then
      WHY="compute-sanitizer not found" not_run sanitize
    else
      for tool in memcheck racecheck; do
        PREFIX=()
        ((${#SANITIZER[@]})) && PREFIX=("${SANITIZER[@]}" "$tool")
        # No caching allocator: an out-of-bounds access then leaves its allocation.
        # shellcheck disable=SC2086
        step "sanitize-$tool" "$SLOG" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "${PREFIX[@]}" \
          "$PY" -m pytest $SAN_TESTS -x -q -p no:cacheprovider -k "$SAN_K"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$SLOG" | tail -n 1
      done
    fi
  fi
  # ---- triton: every variant of the benchmark (and, dry, the tests), in parallel ---------------
  if ((TESTS || BENCH)); then
    step triton "$LOG" env -u TRITON_INTERPRET "${VARIANTS[@]}" compile "${CALLS[@]}" \
      --arch 90 --each "$TRITON_EACH" --jobs "$MAX_JOBS" --json "$OUT/triton.json" \
      --bench "${SEP_SUITE[@]}" "${GPU_BENCH[@]}"
  fi
  # ---- benchmarks --------------------------------------------------------------------------
  if ((BENCH)); then
    COMMON=(-m fastdw bench "${BENCH_ARGS[@]}" --table summary --no-progress)
    step bench_dw "$LOG" "$PY" "${COMMON[@]}" "${DW_RUN[@]}" --json "$OUT/bench_dw.json" \
      --plot "$OUT/bench_dw.png"
    step bench_sep "$LOG" "$PY" "${COMMON[@]}" "${SEP_RUN[@]}" --json "$OUT/bench_sep.json"
  fi
fi

# ---- summary (needs neither torch nor the build), then what comes back ----------------------
ARGS=(--out "$OUT" --mode "$MODE" --budget "$BUDGET" --elapsed $(($(date +%s) - START))
      --versions "$WORK/versions.txt" "${EXCERPTS[@]}")
for s in "${STEPS[@]}"; do ARGS+=(--step "$s"); done
SUMMARY=$("$PY" bench/gpu_summary.py "${ARGS[@]}" 2>&1) || STATUS=1
# Files come back only up to 16 MiB each: keep the end of an overlong log.
for f in "$OUT"/*.log "$OUT"/log.txt; do
  if [[ -f $f ]] && (($(stat -c %s "$f") > 15000000)); then
    tail -c 15000000 "$f" >"$f.tmp" && mv "$f.tmp" "$f"
  fi
done
FILES=$(cd "$OUT" && find . -mindepth 1 -printf '%P\n' | sort)
EXTRA=$(comm -23 <(echo "$FILES") <(printf '%s\n' "${OUT_FILES[@]}" | sort) | tr '\n' ' ')
COUNT=$(echo "$FILES" | grep -c .)
OUT_NOTE=""
if ((COUNT > MAX_OUT_FILES)) || [[ -n "${EXTRA// /}" ]]; then
  STATUS=1 OUT_NOTE=" OUT CHECK FAILED: $COUNT files (at most $MAX_OUT_FILES), unexpected: $EXTRA"
fi
echo
echo "$SUMMARY"
VERDICT=$( ((STATUS == 0)) && echo PASS || echo FAIL)
echo "gpu_check: $VERDICT ($MODE) in $(($(date +%s) - START))s of ${BUDGET}s;" \
     "$COUNT files in $OUT: $(echo "$FILES" | tr '\n' ' ')$OUT_NOTE"
exit "$STATUS"
