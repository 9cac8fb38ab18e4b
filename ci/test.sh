#!/usr/bin/env bash
# The test suite, as CI runs it: set up the environment, run pytest (Triton kernels on
# CPU tensors through Triton's interpreter, TRITON_INTERPRET=1), then compile every Triton
# kernel ahead of time for sm_80 and sm_90 and fail on errors or register spills.
# Extra arguments go to pytest, e.g. `bash ci/test.sh -k cayley`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# pytest-benchmark's table (tests/test_bench_throughput.py) tracks CPU throughput per commit
TRITON_INTERPRET=1 python -m pytest -q --durations=10 \
    --benchmark-columns=median,iqr,rounds --benchmark-sort=name "$@"
python ci/compile_check.py
