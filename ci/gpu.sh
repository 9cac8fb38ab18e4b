#!/usr/bin/env bash
# Everything that needs a GPU, on the lent machine (see shared/GPU.md). Two stages, each
# under a time cap so that it fits one call of the device tool (10 minutes at most):
#   bash ci/gpu.sh tests   # offline install, versions, the test suite on CUDA (kernels
#                          # compiled, no interpreter): at most ~6 minutes
#   bash ci/gpu.sh bench   # offline install, the benchmarks, JSON in $OUT (default
#                          # bench/results), the suite `python -m bench --full` last:
#                          # at most ~8.5 minutes
#   bash ci/gpu.sh         # both, one after the other
# Every line of output also goes to $OUT/gpu.log (a call returns only the tail of its
# output); the last lines of each stage are its summary. GIT_COMMIT (default: git
# rev-parse HEAD, where .git travelled) is recorded in the results.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-bench/results}"
STAGE="${1:-all}"
case "$STAGE" in tests|bench|all) ;; *) echo "usage: bash ci/gpu.sh [tests|bench]" >&2; exit 2;; esac
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
export GIT_COMMIT="${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || true)}"
unset TRITON_INTERPRET

# run SECONDS CMD...: CMD under a time cap, its output appended to the log. The cap sends
# SIGINT, as Ctrl-C would: pytest then still prints its list of failures and summary
# (SIGTERM ends it without them); -k: SIGKILL 20 s later if it does not stop
run() {
  local cap=$1; shift
  echo "== $* (cap ${cap} s)" | tee -a "$LOG"
  timeout -s INT -k 20 "$cap" "$@" >>"$LOG" 2>&1
  local status=$?
  [ "$status" = 124 ] && echo "== timed out after ${cap} s: $*" | tee -a "$LOG"
  return "$status"
}

python3 -c "import setuptools; print('setuptools', setuptools.__version__)"
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$LOG"
tests=0

if [ "$STAGE" != bench ]; then
  from=$(($(wc -l <"$LOG") + 1))
  # every failure listed, not only the first; a hung test cannot eat the stage
  per_test=$(python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout=120")
  run 330 python3 -m pytest -q -rfE --maxfail=30 -p no:cacheprovider ${per_test:-}
  tests=$?
  tail -n +"$from" "$LOG" | grep -E "^(FAILED|ERROR)|passed|failed|timed out" | tail -n 40
fi

if [ "$STAGE" != tests ]; then
  # caps from estimates, no GPU having run these yet: recurrence_kernel writes its file at
  # the end (n = 1024 at T = 1000, B 1 and 64, plus the compiles), momentum after two cold
  # torch.compile(fullgraph=True) forward+backward compiles (about 23 s each on the CPU)
  run 120 python3 -m bench.recurrence_kernel --n 16 64 256 1024 --B 1 64 --out "$OUT"
  run 45 python3 -m bench.cayley --n 256 1024 2048 --batch 1 --out "$OUT"
  run 45 python3 -m bench.cayley --complex --n 256 1024 2048 --batch 1 --out "$OUT"
  run 60 python3 -m bench.momentum --out "$OUT"
  run 30 python3 -m bench.packed --out "$OUT"
  run 30 python3 -m bench.projection --out "$OUT"
  # the suite last, under its own cap (checked before each row) inside the stage's
  run 150 python3 -m bench --full --max-minutes "${BENCH_MINUTES:-2}" --no-progress --out "$OUT"
  # the file this run wrote, bench_full_<GPU name>.json (bench.report.device_tag): $OUT may
  # hold other GPUs' results, and bench.report reads one file
  tag=$(python3 -c "import torch; from bench.report import device_tag; print(device_tag(torch.cuda.get_device_name()))")
  run 30 python3 -m bench.report "$OUT/bench_full_${tag}.json" --center
  tail -n 30 "$LOG"
fi
echo "tests exit status: $tests (log: $LOG)"
exit "$tests"
