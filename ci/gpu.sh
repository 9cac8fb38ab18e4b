#!/usr/bin/env bash
# Everything that needs a GPU, in one call on the lent machine (see shared/GPU.md):
# offline install, versions, the whole test suite on CUDA (kernels compiled, no
# interpreter), then the benchmarks, whose JSON lands in $OUT (default bench/results),
# the suite `python -m bench --full` last.
# The last lines are a summary.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-bench/results}"
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
unset TRITON_INTERPRET
python3 -m pytest -q -x -p no:cacheprovider 2>&1 | tail -n 30
tests=${PIPESTATUS[0]}
python3 -m bench.recurrence_kernel --out "$OUT" 2>&1 | tail -n 45
python3 -m bench.cayley --out "$OUT" 2>&1 | tail -n 8
python3 -m bench.cayley --complex --out "$OUT" 2>&1 | tail -n 8
python3 -m bench.momentum --out "$OUT" 2>&1 | tail -n 4
# the suite last, under a time cap (device time is short); its centre-shape table ends the log
python3 -m bench --full --max-minutes "${BENCH_MINUTES:-4}" --no-progress --out "$OUT" >/dev/null 2>"$OUT/bench_full.log"
python3 -m bench.report "$OUT"/bench_full_*.json --center 2>&1 | tail -n 40
echo "tests exit status: $tests"
exit "$tests"
