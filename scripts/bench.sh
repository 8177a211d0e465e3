#!/usr/bin/env bash
# The side-by-side benchmark, from a fresh machine: installs the peers (Debian's wrk,
# beanstalkd and etcd for the cluster rows, the Python clients of RQ, Celery and
# Procrastinate), then runs `python -m bench`, which writes docs/benchmarks.md and
# docs/benchmarks.png. Uses the machine's Redis (127.0.0.1:6379) and PostgreSQL
# (127.0.0.1:5432). Arguments go to `python -m bench` (e.g. --quick for a run under two
# minutes).
set -euo pipefail
root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v beanstalkd >/dev/null 2>&1 || need+=(beanstalkd)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "missing packages: ${need[*]} (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi
JQ_EXTRAS="dev,bench" bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/python" -m bench "$@"
