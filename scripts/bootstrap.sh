#!/usr/bin/env bash
# Creates .venv (if missing) and installs jq with its dev extras into it. Sourced by serve.sh and
# test.sh; safe to run again (pip only installs what changed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[${JQ_EXTRAS:-dev}]"
