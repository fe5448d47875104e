#!/usr/bin/env bash
# Everything that can only be checked on a GPU, in one command, from the repository root:
#   bash scripts/verify_gpu.sh            (on a machine with a CUDA GPU; ~10-20 minutes)
# 1. the GPU tests (adversarial GPU cases, CuPy candidates, profile, calibration),
# 2. this GPU's calibration (profiling/<gpu-key>.json),
# 3. the GPU benchmarks for BENCHMARKS.md (stability, ncu agreement, seeds vs eager/compile, throughput).
set -euo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
python -m pytest -q -m gpu tests/ -p no:cacheprovider
python -m kernelevo calibrate
python scripts/bench_gpu.py "$@"
