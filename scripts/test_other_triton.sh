#!/usr/bin/env bash
# The CPU test suite under another Triton release (the GPU image has Triton 3.6; CI has 3.9):
#   bash scripts/test_other_triton.sh 3.6.0 [pytest args...]
# A virtual environment that sees this one's packages, with only Triton replaced; nothing here changes.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: test_other_triton.sh TRITON_VERSION [pytest args]}"
shift
venv="${TMPDIR:-/tmp}/kernelevo-triton-${version}"
if [ ! -x "${venv}/bin/python" ]; then
    python -m venv --system-site-packages "${venv}"
    "${venv}/bin/pip" install -q --no-deps "triton==${version}"
fi
"${venv}/bin/python" -c "import triton, numpy, torch; print('triton', triton.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
PYTHONPATH="$(pwd)" "${venv}/bin/python" -m pytest -q -p no:cacheprovider "${@:-tests/}"
