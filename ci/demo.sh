#!/usr/bin/env bash
# The main job: set up the environment, then train a small scuRNN on the copying task
# (delay T = 100) on the CPU for about a minute, with a progress bar, and print the final
# loss beside the task's baseline. Extra arguments go to `fastunitary train`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m fastunitary train --task copying --model scurnn --hidden 64 --length 100 \
    --batch 32 --max-seconds 60 --device cpu --out runs/demo "$@"
