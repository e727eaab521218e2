#!/usr/bin/env bash
# Creates the RecBole baseline environment at <repo>/.venv-recbole (separate from the project's own venv).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${RECBOLE_VENV:-$repo/.venv-recbole}"
python3 -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
"$venv/bin/pip" install -r "$repo/benchmarks/recbole/requirements.txt"
"$venv/bin/python" -c "import recbole, torch; print('recbole', recbole.__version__, 'torch', torch.__version__)"
