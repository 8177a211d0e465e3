#!/usr/bin/env bash
# Fresh machine to a running queue: installs jq's runtime (no dev tools) into .venv the first
# time, then `jq serve` with embedded defaults (WAL and API keys in ./data of the current
# directory, http://127.0.0.1:8080). A restart with nothing changed skips pip altogether
# (bootstrap.sh's stamps) and starts the server at once. Extra arguments go to `jq serve`.
set -euo pipefail
root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JQ_EXTRAS="" bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/jq" serve "$@"
