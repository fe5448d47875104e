#!/usr/bin/env bash
# Everything that can only be checked on a GPU, in one command, from the repository root:
#   bash scripts/verify_gpu.sh            (on a machine with a CUDA GPU; ~10-20 minutes)
# 1. the GPU tests (adversarial GPU cases, CuPy candidates, profile, calibration, timing),
# 2. this GPU's calibration (profiling/<gpu-key>.json),
# 3. the GPU benchmarks for BENCHMARKS.md (stability, agreement with ncu and do_bench, seeds vs
#    eager/compile, throughput), and the evaluator's busy fraction and candidates per GPU-minute
#    with and without compiling ahead (scripts/bench_executors.py --device cuda).
# Every step runs whatever the others did; the failures are listed at the end and set the exit code.
# Arguments go to scripts/bench_gpu.py (e.g. --ops softmax --repeats 5).
set -uo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"

failed=()
step() {
    local name="$1"
    shift
    echo "== ${name}: $*"
    if ! "$@"; then
        failed+=("${name}")
        echo "== ${name}: FAILED"
    fi
}

step "gpu tests" python -m pytest -q -m gpu tests/ -p no:cacheprovider
step "calibration" python -m kernelevo calibrate
step "benchmarks" python scripts/bench_gpu.py "$@"
step "executors" python scripts/bench_executors.py --device cuda --budget 30

if ((${#failed[@]})); then
    echo "verify_gpu: ${#failed[@]} step(s) failed: ${failed[*]}"
    exit 1
fi
echo "verify_gpu: every step passed"
