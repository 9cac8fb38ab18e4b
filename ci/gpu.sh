#!/usr/bin/env bash
# Everything that needs a GPU, on the lent machine (see shared/GPU.md), sized for one call
# of the device tool (10 minutes at most, of 15 minutes of device time a session):
#   bash ci/gpu.sh tests   # offline install, versions, the test suite on CUDA (kernels
#                          # compiled, no interpreter; pytest-xdist workers where present)
#   bash ci/gpu.sh bench   # offline install, the benchmarks, most telling first: the
#                          # models against cuDNN's LSTM, the recurrence kernels, the
#                          # Cayley map, momentum, packed batches, projections
#   bash ci/gpu.sh         # both, one after the other (the default)
# Each step has its own time cap, and all of them together GPU_SECONDS (default 560): a
# step that would outrun it gets what is left, or is not started, so the call returns
# with its results. Results go to $OUT (default bench/results), every line of output also
# to $OUT/gpu.log (a call returns only the tail of its output); the last lines of each
# stage are its summary. PACK=FILE.tar: after every step, $OUT is packed into FILE (the
# device tool returns at most 8 files). Pass GIT_COMMIT, the commit being measured: the
# results record it (else git rev-parse HEAD, and the device's copy of .git can be older
# than the tree it was sent with).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-bench/results}"
STAGE="${1:-all}"
case "$STAGE" in tests|bench|all) ;; *) echo "usage: bash ci/gpu.sh [tests|bench]" >&2; exit 2;; esac
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
END=$((SECONDS + ${GPU_SECONDS:-560}))
unset TRITON_INTERPRET

pack() {
  [ -n "${PACK:-}" ] && tar -cf "$PACK.part" -C "$OUT" . && mv "$PACK.part" "$PACK"
  return 0
}

# run SECONDS CMD...: CMD under a time cap (no more than what is left of GPU_SECONDS), its
# output appended to the log. The cap sends SIGINT, as Ctrl-C would: pytest then still
# prints its list of failures and summary (SIGTERM ends it without them); -k: SIGKILL
# 20 s later if it does not stop
run() {
  local cap=$1; shift
  local left=$((END - SECONDS - 25))
  if [ "$left" -lt 15 ]; then
    echo "== not started, GPU_SECONDS spent: $*" | tee -a "$LOG"
    return 124
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $* (cap ${cap} s)" | tee -a "$LOG"
  local start=$SECONDS
  timeout -s INT -k 20 "$cap" "$@" >>"$LOG" 2>&1
  local status=$?
  [ "$status" = 124 ] && echo "== timed out after ${cap} s: $*" | tee -a "$LOG"
  echo "== exit $status after $((SECONDS - start)) s" >>"$LOG"
  pack
  return "$status"
}

# the editable install needs setuptools >= 77 (pyproject's SPDX license string); the
# H200 image has 81
python3 -c "import setuptools; print('setuptools', setuptools.__version__)"
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 || {
  echo "editable install failed: see $LOG" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$LOG" || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$LOG"
tests=0

if [ "$STAGE" != bench ]; then
  from=$(($(wc -l <"$LOG") + 1))
  # workers share the GPU; each computes on one CPU thread (16 cores: oversubscribed
  # otherwise) and compiles with one Inductor thread rather than a pool of its own
  workers=()
  if python3 -c "import xdist" 2>/dev/null; then
    workers=(-n "${GPU_TEST_WORKERS:-12}")
    export OMP_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1
  fi
  # every failure listed, not only the first; a hung test cannot eat the stage
  per_test=$(python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout=120")
  run "${TEST_SECONDS:-200}" python3 -m pytest -q -rfE --maxfail=50 -p no:cacheprovider \
    --durations=15 "${workers[@]}" ${per_test:-}
  tests=$?
  unset OMP_NUM_THREADS TORCHINDUCTOR_COMPILE_THREADS
  tail -n +"$from" "$LOG" | grep -E "^(FAILED|ERROR)|passed|failed|timed out" | tail -n 40
fi

if [ "$STAGE" != tests ]; then
  # The models beside cuDNN's LSTM and GRU, whole module calls, at the sweep's centre
  # (B 64, hidden 256) and a long T; fastunitary's default backend only (--loop-max-T 0:
  # the per-step loops and reference backends are the CPU suite's), each checked against
  # its per-step loop first. `python -m bench --full` is the whole sweep, for a longer lease.
  run 140 python3 -m bench --models lstm gru scurnn scornn enrnn lstm_recurrence momentumlstm \
    momentumrnn sbornn_hb --T 1024 8192 --B 64 --hidden 256 --dtype fp32 --loop-max-T 0 \
    --row-seconds 1 --max-minutes 1.8 --name bench_gpu --no-progress --out "$OUT"
  run 80 python3 -m bench.recurrence_kernel --op recurrence lstm_recurrence --n 64 256 1024 --B 64 \
    --repeats 3 --out "$OUT"
  run 25 python3 -m bench.cayley --n 256 1024 2048 --batch 1 --out "$OUT"
  # --no-compile: two cold torch.compile(fullgraph=True) compiles would take the cap
  run 50 python3 -m bench.momentum --no-compile --out "$OUT"
  run 20 python3 -m bench.packed --out "$OUT"
  run 20 python3 -m bench.projection --out "$OUT"
  run 25 python3 -m bench.cayley --complex --n 256 1024 2048 --batch 1 --out "$OUT"
  # the file this run wrote, bench_gpu_<GPU name>.json (bench.report.device_tag): $OUT may
  # hold other GPUs' results, and bench.report reads one file
  tag=$(python3 -c "import torch; from bench.report import device_tag; print(device_tag(torch.cuda.get_device_name()))")
  python3 -m bench.report "$OUT/bench_gpu_${tag}.json" 2>&1 | tee -a "$LOG" | tail -n 45
  grep "^== " "$LOG" | tail -n 12
fi
pack
echo "tests exit status: $tests (log: $LOG)"
exit "$tests"
