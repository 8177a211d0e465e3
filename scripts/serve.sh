#!/usr/bin/env bash
# Fresh machine to a running queue: install into .venv, then `jq serve` with embedded defaults
# (WAL and API keys in ./data, http://127.0.0.1:8080). Extra arguments go to `jq serve`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JQ_EXTRAS="${JQ_EXTRAS:-dev}" bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/jq" serve "$@"
