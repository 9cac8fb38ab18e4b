#!/usr/bin/env bash
# The test suite, as CI runs it: set up the environment, run pytest (Triton kernels on
# CPU tensors through Triton's interpreter, TRITON_INTERPRET=1), then compile every Triton
# kernel ahead of time for sm_80 and sm_90 and fail on errors or register spills.
# Extra arguments go to both pytest runs, e.g. `bash ci/test.sh -k cayley`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# pytest's exit status 5 (no test collected) is arguments that selected nothing in one of
# the two runs; without arguments each run must find its tests
selected_none() { local rc=$?; [ "$rc" -eq 5 ] && [ "$1" -gt 0 ]; }

# The suite on every core, at most 8 (pytest-xdist; each worker holds its own torch and
# Triton; FASTUNITARY_TEST_WORKERS=N sets them, 0 runs the suite in one process), each
# worker computing on one thread and compiling without a pool of its own, so that two
# workers on two cores do not fight over them. The interpreter is Python-bound: workers,
# not threads, are what make it faster.
TRITON_INTERPRET=1 OMP_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1 \
    python -m pytest -q --durations=10 -n "${FASTUNITARY_TEST_WORKERS:-auto}" --maxprocesses 8 \
    --benchmark-disable -m "not throughput" "$@" || selected_none $#
# pytest-benchmark's table (tests/test_bench_throughput.py) tracks CPU throughput per
# commit; it records nothing under xdist, so those tests run after, alone, on all threads
TRITON_INTERPRET=1 python -m pytest -q -m throughput --benchmark-columns=median,iqr,rounds \
    --benchmark-sort=name "$@" || selected_none $#
# compiled, not interpreted: no TRITON_INTERPRET here
python ci/compile_check.py
