#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Debian packages the tests need (chromium for the
# dashboard's browser tests, redis-server, etcd-server for cluster mode, iproute2 for the
# partition test's and the README test's network namespaces, docker-compose to validate the
# compose files, wrk, jq, the JSON tool, which the README's commands use beside ours, and
# prometheus for `promtool check rules` on docs/alerts), the venv with the dev extras, then
# ruff, mypy and pytest.
# Extra arguments go to pytest. Needs root (or the packages already installed) and a Redis on
# 127.0.0.1:6379 (started here if it is installed but not running).
set -euo pipefail
root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The JSON tool, found by path: `command -v jq` may find our own jq in an activated venv.
[ -x /usr/bin/jq ] || [ -x /usr/local/bin/jq ] || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "missing packages: ${need[*]} (install them, e.g. apt-get install ${need[*]})" >&2
        exit 1
    fi
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

bash "$root/scripts/bootstrap.sh"
echo "== ruff"
.venv/bin/ruff check jq_tool tests bench
.venv/bin/ruff format --check jq_tool tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest -p no:cacheprovider "$@"
