#!/usr/bin/env bash
# Sourced by the other ci/ scripts: create the virtual environment (default .venv in the
# repository root, or $FASTUNITARY_VENV) and install torch, then fastunitary with its dev
# extra. Needs only Python 3 with venv. Idempotent: a second run installs nothing new.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FASTUNITARY_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "ci/setup.sh: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# torch first, pinned: 2.13.0 is the CPU build the project's machines keep on disk; an
# unpinned torch would pull a multi-GB CUDA build. The project itself accepts >= 2.11.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==${FASTUNITARY_TORCH:-2.13.0}"
fi
"$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
# torch 2.11 (FASTUNITARY_TORCH=2.11.0, the GPU machines' version) pins triton 3.6, whose
# interpreter fails on NumPy >= 2.4 (triton-lang/triton#9171): keep the tests runnable
if "$VENV/bin/python" -c "import sys; from fastunitary._backend import interpreter_conflict as c; sys.exit(0 if c() else 1)"; then
    "$VENV/bin/python" -m pip install -q "numpy<2.4"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
