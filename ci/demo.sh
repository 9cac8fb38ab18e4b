#!/usr/bin/env bash
# The main job: set up the environment, then train scuRNN (complex state 64) and an LSTM of
# about the same parameter count (hidden 35) on the copying task (delay T = 100) on the CPU,
# the same number of steps each (a few minutes in all), and print both final losses beside
# the task's baseline. Curves and metrics go to runs/demo/ (copying_T100.png, .json).
# Extra arguments go to `python -m bench.compare_training` (e.g. --steps 500).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m bench.compare_training --task copying --length 100 --models scurnn lstm \
    --size scurnn=64 --size lstm=35 --batch 32 --lr 1e-3 --steps 1500 --eval-every 100 \
    --name copying_T100 --out runs/demo --progress "$@"
