#!/usr/bin/env bash
# Create benchmarks/.venv-devinterp: a separate environment with devinterp 2.x and a
# CPU build of torch, for benchmarks/vs_devinterp.py. The project's own environment
# never gets torch.
#
# torch is installed first and pinned, so that devinterp's "torch>=2.0.1" is already
# satisfied and pip resolves no other torch build (a plain "torch" would fetch a large
# CUDA build). Usage: bash benchmarks/setup_devinterp.sh [python]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-devinterp"
python="${1:-python3}"
torch_version="2.13.0"

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "torch==$torch_version"
# The constraint keeps every later resolution on the torch just installed.
constraint="$(mktemp)"
trap 'rm -f "$constraint"' EXIT
echo "torch==$torch_version" > "$constraint"
"$venv/bin/pip" install --quiet -c "$constraint" "devinterp==2.*"

"$venv/bin/python" - <<'PY'
import devinterp
import torch
from importlib.metadata import version

print(f"devinterp {version('devinterp')}, torch {torch.__version__}")
assert torch.__version__.startswith("2.13.0"), torch.__version__
PY
