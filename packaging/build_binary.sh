#!/usr/bin/env bash
# Build the single-file `jq` binary into dist/jq with PyInstaller (packaging/jq.spec).
#
# Uses the venv named by $VENV (default: the repo's .venv), creating it and installing the
# project into it when it does not exist yet, and installs PyInstaller into it when missing.
# Prints the path of the built binary on its last line.
#
#   packaging/build_binary.sh            # -> dist/jq
#   VENV=/tmp/buildenv packaging/build_binary.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
DIST="${DIST:-$ROOT/dist}"
WORK="${WORK:-$ROOT/build/pyinstaller}"
PYINSTALLER_VERSION="${PYINSTALLER_VERSION:->=6.10,<7}"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "build_binary: creating venv $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "$ROOT"
fi
PY="$VENV/bin/python"

# Install the project only when the venv has no jq-tool at all: an existing (editable) install
# is someone's working venv and must not be replaced.
if ! "$PY" -c "import importlib.metadata as m; m.version('jq-tool')" 2>/dev/null; then
    echo "build_binary: jq-tool is not installed in $VENV; installing the project" >&2
    "$PY" -m pip install --quiet "$ROOT"
fi
if ! "$PY" -c "import jq_tool.cli.main" 2>/dev/null; then
    echo "build_binary: jq_tool.cli.main does not import in $VENV:" >&2
    "$PY" -c "import jq_tool.cli.main" >&2 || true
    exit 1
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "build_binary: installing pyinstaller$PYINSTALLER_VERSION into $VENV" >&2
    "$PY" -m pip install --quiet "pyinstaller$PYINSTALLER_VERSION"
fi

cd "$ROOT"
"$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" packaging/jq.spec >&2

BIN="$DIST/jq"
if [[ ! -x "$BIN" ]]; then
    echo "build_binary: PyInstaller finished but $BIN is missing" >&2
    exit 1
fi
echo "build_binary: built $BIN ($(du -h "$BIN" | cut -f1))" >&2
echo "$BIN"
