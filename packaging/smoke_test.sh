#!/usr/bin/env bash
# Smoke-test a `jq` executable (the PyInstaller binary, or any `jq` console script) by itself,
# on a fresh temp dir: `serve` on a free loopback port, the seeded keys read from its log, then
# submit -> lease -> ack -> get through the binary's own CLI (--url --key --json), the dashboard
# and its static assets over HTTP (they are package data: missing data files show up here),
# `wal-inspect` on the data dir once the server has stopped, and `tui --help`.
#
#   packaging/smoke_test.sh dist/jq
#
# Needs python3 (for a free port, JSON and HTTP checks); never uses the `jq` on PATH.
# Exit code 0 and "smoke test passed" on the last line when everything held.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH_TO_JQ_BINARY" >&2
    exit 2
fi
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
if [[ ! -x "$BIN" ]]; then
    echo "smoke_test: $BIN is not an executable file" >&2
    exit 2
fi

TMP="$(mktemp -d -t jq-smoke-XXXXXX)"
DATA="$TMP/data"
LOG="$TMP/server.log"
SERVER_PID=""
SERVER_EXIT=""

fail() {
    echo "smoke_test: FAIL: $*" >&2
    if [[ -f "$LOG" ]]; then
        echo "---- server log (keys redacted) ----" >&2
        sed -E 's/((client|worker|admin)_)[A-Za-z0-9_-]+/\1<redacted>/g' "$LOG" | tail -n 40 >&2
    fi
    exit 1
}

# alive PID: running and not yet a zombie (kill -0 succeeds on a zombie until it is reaped).
alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z ]]
}

stop_server() {
    # SIGTERM to the leader only: the one-file binary's bootloader forwards it to its Python
    # child, which drains and exits 0. Whatever is left of the process group (setsid made it
    # ours) after 10 s is killed, so nothing outlives the test.
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            alive "$SERVER_PID" || break
            sleep 0.1
        done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
        SERVER_EXIT=0
        wait "$SERVER_PID" 2>/dev/null || SERVER_EXIT=$?
    fi
    SERVER_PID=""
}

cleanup() {
    stop_server
    rm -rf "$TMP"
}
trap cleanup EXIT

# json_field FIELD: read one JSON document on stdin, print FIELD (a list: its first element's).
json_field() {
    python3 -c '
import json, sys
doc = json.load(sys.stdin)
if isinstance(doc, list):
    doc = doc[0]
value = doc.get(sys.argv[1])
if value is None:
    sys.exit(f"no {sys.argv[1]!r} in {doc!r}")
print(value)
' "$1"
}

# http_status PATH: the status of GET PATH on the server (no auth).
http_status() {
    python3 - "$URL$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print(0)
EOF
}

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"

start_server() {
    # Settings from the environment must not leak in (a REDIS_URL would move the keys elsewhere).
    env -u REDIS_URL -u PORT -u WAL_DIR -u HOST -u JQ_URL -u JQ_KEY \
        setsid "$BIN" serve --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" >>"$LOG" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
        alive "$SERVER_PID" || fail "serve exited early"
        [[ "$(http_status /health)" == 200 ]] && return 0
        sleep 0.2
    done
    fail "GET /health never answered 200"
}

echo "smoke_test: $BIN serve on $URL, data in $DATA"
start_server
key_from_log() {
    grep -oE "Created $1 key: $1_[A-Za-z0-9_-]+" "$LOG" | head -n1 | awk '{print $4}' || true
}
CLIENT_KEY="$(key_from_log client)"
WORKER_KEY="$(key_from_log worker)"
ADMIN_KEY="$(key_from_log admin)"
[[ -n "$CLIENT_KEY" && -n "$WORKER_KEY" && -n "$ADMIN_KEY" ]] || fail "no seeded keys in the log"
echo "smoke_test: server healthy, seeded keys found"

# The dashboard page and its assets are package data inside the binary.
[[ "$(http_status /)" == 200 ]] || fail "GET / (dashboard) is not 200"
for asset in $(python3 - "$URL/" <<'EOF'
import re, sys, urllib.request
page = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
print("\n".join(sorted(set(re.findall(r'(?:src|href)="(/static/[^"?#]+)', page)))))
EOF
); do
    [[ "$(http_status "$asset")" == 200 ]] || fail "dashboard asset $asset is not 200"
done
echo "smoke_test: dashboard and its static assets served"

PAYLOAD="smoke-$$-$RANDOM"
SUBMIT="$("$BIN" submit "$PAYLOAD" --url "$URL" --key "$CLIENT_KEY" --json)" || fail "submit: $SUBMIT"
JOB_ID="$(json_field job_id <<<"$SUBMIT")" || fail "submit printed no job_id: $SUBMIT"
echo "smoke_test: submitted $JOB_ID"

LEASE="$("$BIN" lease --url "$URL" --key "$WORKER_KEY" --json)" || fail "lease: $LEASE"
[[ "$(json_field job_id <<<"$LEASE")" == "$JOB_ID" ]] || fail "leased another job: $LEASE"
[[ "$(json_field payload <<<"$LEASE")" == "$PAYLOAD" ]] || fail "leased payload differs: $LEASE"
LEASE_ID="$(json_field lease_id <<<"$LEASE")" || fail "lease printed no lease_id: $LEASE"
echo "smoke_test: leased it (lease $LEASE_ID)"

ACK="$("$BIN" ack "$JOB_ID" --lease-id "$LEASE_ID" --result done --url "$URL" --key "$WORKER_KEY" --json)" \
    || fail "ack: $ACK"
[[ "$(json_field state <<<"$ACK")" == ACKED ]] || fail "ack did not settle the job: $ACK"

GET="$("$BIN" get "$JOB_ID" --url "$URL" --key "$CLIENT_KEY" --json)" || fail "get: $GET"
[[ "$(json_field state <<<"$GET")" == ACKED ]] || fail "get: job is not ACKED: $GET"
[[ "$(json_field result <<<"$GET")" == done ]] || fail "get: result is not 'done': $GET"
echo "smoke_test: acked, and get shows ACKED with its result"

# Listing keys shows the seeded keys but never a secret.
KEYS="$("$BIN" keys list --all --url "$URL" --key "$ADMIN_KEY" --json)" || fail "keys list failed"
grep -q "dev-worker" <<<"$KEYS" || fail "keys list --all does not show the seeded worker key"
for secret in "$CLIENT_KEY" "$WORKER_KEY" "$ADMIN_KEY"; do
    if grep -qF -- "$secret" <<<"$KEYS"; then
        fail "keys list --all prints a secret"
    fi
done
echo "smoke_test: keys list --all shows the seeded keys, no secret"

# Crash it: SIGKILL to the whole process group, so no shutdown snapshot folds the records away.
kill -KILL -- "-$SERVER_PID" 2>/dev/null || fail "could not kill the server"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
INSPECT="$("$BIN" wal-inspect "$DATA" --records 2>&1)" || fail "wal-inspect: $INSPECT"
grep -q "$JOB_ID" <<<"$INSPECT" || fail "wal-inspect does not show job $JOB_ID: $INSPECT"
SUMMARY="$("$BIN" wal-inspect "$DATA" --json)" || fail "wal-inspect --json: $SUMMARY"
[[ "$(json_field status <<<"$SUMMARY")" == clean ]] || fail "WAL not clean after the kill: $SUMMARY"
echo "smoke_test: killed -9; wal-inspect shows the job's records and a clean WAL"

# Restart on the same data dir: the acked job is recovered, the keys still work.
: >"$LOG"
start_server
GET="$("$BIN" get "$JOB_ID" --url "$URL" --key "$CLIENT_KEY" --json)" || fail "get after restart: $GET"
[[ "$(json_field state <<<"$GET")" == ACKED ]] || fail "job not ACKED after restart: $GET"
echo "smoke_test: restarted; the job is recovered as ACKED"
stop_server
[[ "$SERVER_EXIT" == 0 ]] || fail "serve exited $SERVER_EXIT on SIGTERM (expected 0)"

TUI_HELP="$("$BIN" tui --help 2>&1)" || fail "tui --help: $TUI_HELP"
grep -qi "usage" <<<"$TUI_HELP" || fail "tui --help printed no usage: $TUI_HELP"

if grep -qE 'Traceback \(most recent call last\)' "$LOG"; then
    fail "the server log has a traceback"
fi
echo "smoke_test: smoke test passed"
