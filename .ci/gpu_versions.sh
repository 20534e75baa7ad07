#!/usr/bin/env bash
# CI: the GPU machine's versions, checked here without a GPU (issue 13). That machine has
# Python 3.12, torch 2.11.0+cu130, triton 3.6.0 and nvcc 13.0, and installs nothing. This step
# makes a throwaway venv with the same Python, torch and triton (nothing cached), then runs
# `bench/gpu_check.sh --dry-run` in it with GPU_CHECK_BUILD=cuda, that is:
#   - the GPU machine's build, by the same command: sm_90 only, FASTDW_CUDA=1, CPU kernels too;
#   - the Triton variants that the GPU tests and the separable benchmark launch, compiled for
#     sm_90 by triton 3.6.0 (python -m fastdw.triton.variants; Triton's own compiler and ptxas):
#     every autotune config and every pointer dtype, constexpr and specialisation value at least
#     once (--each value; the ~190-variant pairwise set and the ~1,090 a GPU compiles do not fit);
#   - the GPU test files on the CPU with the Triton kernels interpreted (test_cuda skips),
#     `python -m fastdw check`, bench/gpu_extras.py small, and token benchmarks (one suite,
#     forward only), on the CPU;
#   - the run's files and summary as the device tool returns them (at most 8 files);
# and then the dry-run tests. Any failure, compile errors included, fails CI.
#   PYTHON312=/path/to/python3.12 (default: python3.12 on PATH if it runs, else pyenv's 3.12.1)
set -euo pipefail
cd "$(dirname "$0")/.."
export MAX_JOBS="${MAX_JOBS:-2}"
# The first that runs (a pyenv shim named python3.12 may be on PATH and refuse to run).
PY312=""
for candidate in ${PYTHON312:-} python3.12 /root/.pyenv/versions/3.12.1/bin/python3.12; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    PY312=$candidate; break
  fi
done
[[ -n $PY312 ]] || { echo "gpu_versions: no working Python 3.12 (set PYTHON312)"; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TRITON_CACHE_DIR="$WORK/triton_cache"   # every variant compiled here, none reused
T0=$(date +%s)
stamp() { echo "[gpu_versions] $* at $(($(date +%s) - T0))s"; }

nvcc --version | grep -q "release 13.0" || {
  echo "gpu_versions: the GPU machine has nvcc 13.0; this one has: $(nvcc --version | tail -n 2)"
  exit 1
}
"$PY312" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
# numpy<2.4: triton 3.6's interpreter (the CPU stand-in for the GPU here) turns 1-element arrays
# into ints, which NumPy 2.4 made an error; the GPU machine's compiled kernels do not need it.
"$VPY" -m pip install -q --no-cache-dir torch==2.11.0 triton==3.6.0 "numpy<2.4" ninja pytest \
  hypothesis matplotlib tqdm "setuptools>=69" wheel
"$VPY" - <<'EOF'
import sys, torch, triton
found = (sys.version_info[:2], torch.__version__, torch.version.cuda, triton.__version__)
assert found == ((3, 12), "2.11.0+cu130", "13.0", "3.6.0"), f"not the GPU machine's: {found}"
print("venv:", found)
EOF
stamp "venv ready"

# In a copy of the tracked files: the in-place build for torch 2.11 must not meet the main
# build (torch of requirements.txt) in this tree.
mkdir "$WORK/repo"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$WORK/repo"
cd "$WORK/repo"
set +e
OUT="$WORK/out" PYTHON="$VPY" GPU_CHECK_BUILD=cuda bash bench/gpu_check.sh --dry-run \
  | tee "$WORK/dry_run.txt"
RC=${PIPESTATUS[0]}
set -e
stamp "dry run done (exit $RC)"
((RC == 0)) || exit "$RC"
grep -q "^gpu_check: PASS (dry-run)" "$WORK/dry_run.txt"
"$VPY" -m pytest tests/test_gpu_check_dry_run.py -q -p no:cacheprovider
stamp "gpu_versions passed"
