#!/usr/bin/env bash
# The test suite, as CI runs it: set up the environment, then pytest. Triton kernels run
# on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1).
# Extra arguments go to pytest, e.g. `bash ci/test.sh -k cayley`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export TRITON_INTERPRET=1
python -m pytest -q --durations=10 "$@"
