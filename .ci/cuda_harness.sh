#!/usr/bin/env bash
# CI: csrc/cuda's kernels on the CPU. Compiles the same sources with g++ under ASan and UBSan
# into the CUDA simulator of tests/cuda_harness and runs its tests; any failed test or
# sanitizer report fails CI. No GPU or CUDA toolkit needed. See tests/cuda_harness/README.md.
# Needs the project's venv (.venv, as `make test` creates it) or PYTHON pointing at a Python
# with torch, pytest, hypothesis and ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MAX_JOBS="${MAX_JOBS:-2}"
start=$(date +%s)
"$PY" tests/cuda_harness/build.py
built=$(date +%s)
# --capture=sys: a sanitizer report goes to the real stderr (fd capture would drop it on abort);
# -v: each test is named before it runs, so the test a sanitizer report ends is the last named.
# shellcheck disable=SC2046  # NAME=VALUE words, no spaces inside
env $("$PY" tests/cuda_harness/build.py --env) "$PY" -m pytest tests/cuda_harness -v -p no:cacheprovider \
    --capture=sys --durations=15
echo "cuda harness: build $((built - start)) s, tests $(($(date +%s) - built)) s"
