"""`jq serve` in single-node embedded mode imports only what that mode uses: a real `jq serve`
(the console script's `main`) is started in a subprocess that, once /health answers and a request
has gone through the job routes, writes down its `sys.modules`. No Redis client, no httpx, no
cluster engine or etcd modules, no SDK, no rich (not even for a first start's panel), no Typer or
pydantic, no uvicorn command line (click) or process supervisors (multiprocessing), no
prometheus_client before a scrape, no OpenAPI document before it is asked for: each was measured
in the restart time. With a Redis URL the same probe does see redis-py, so the probe can tell."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, os, signal, socket, sys, threading, time

out, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def ask(request):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request)
        return sock.recv(65536)

def watch():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if ask(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").startswith(
                b"HTTP/1.1 200"
            ):
                break
        except OSError:
            pass
        time.sleep(0.05)
    # Through the job routes too (a 401: no key), and once more for anything loaded late.
    ask(b"POST /jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    ask(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    with open(out, "w") as file:
        json.dump(sorted(sys.modules), file)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
sys.argv = ["jq", "serve", "--port", str(port), *argv]
from jq_tool.cli.main import main
main()
"""

# Modules a single node does not use. Prefixes: a package and everything under it.
NOT_USED = (
    "redis",
    "httpx",
    "httpcore",
    "rich",
    "pygments",
    "jq_tool.auth.redis_store",
    "jq_tool.engine.cluster",
    "jq_tool.engine.cluster_snapshot",
    "jq_tool.engine.etcd_client",
    "jq_tool.engine.etcd_grpc",
    "jq_tool.engine.etcd_rpc_pb2",
    "jq_tool.engine.etcd_member",
    "grpc",  # cluster mode's puts and watches (engine/etcd_grpc.py)
    "google.protobuf",
    "jq_tool.sdk",
    "jq_tool.chaos",
    "jq_tool.tui",
    "textual",
    "prometheus_client",  # loaded by the first scrape of /metrics
    "jq_tool.server.openapi",  # built by the first GET /openapi.json
    "pydantic",  # Typer's option coercion: `jq serve` reads well-formed flags without Typer
    "typer",
    "websockets",  # uvicorn's WebSocket protocol: jq has no WebSocket routes
    "wsproto",
    # uvicorn's command line and process supervisors (server/asgi_server.py runs uvicorn's
    # Config and Server without its package __init__, which imported them: ~25 ms)
    "uvicorn.main",
    "uvicorn.supervisors",
    "click",
    "watchfiles",
    "multiprocessing",  # freeze_support is for a frozen binary only (cli/main.py)
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def modules_of_a_server(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "WAL_DIR"}}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), str(free_port()), "--data-dir",
         str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.exists(), run.stderr[-2000:]
    return set(json.loads(out.read_text()))


def loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_a_single_node_loads_no_redis_httpx_cluster_or_client_modules(tmp_path: Path) -> None:
    # The first start seeds the dev keys and prints its panel (plain text, no rich); then a
    # restart, which does neither.
    first = modules_of_a_server(tmp_path)
    assert "jq_tool.server.welcome" in first  # the panel was printed
    assert [name for name in NOT_USED if loaded(first, name)] == []
    (tmp_path / "modules.json").unlink()
    modules = modules_of_a_server(tmp_path)
    assert "jq_tool.engine.local" in modules and "uvicorn" in modules  # it did serve
    assert [name for name in NOT_USED if loaded(modules, name)] == []


def test_with_redis_the_probe_sees_redis(tmp_path: Path) -> None:
    modules = modules_of_a_server(
        tmp_path, "--redis-url", "redis://127.0.0.1:6379/15", "--redis-prefix", "imports-test:"
    )
    assert loaded(modules, "redis") and "jq_tool.auth.redis_store" in modules
    assert not loaded(modules, "jq_tool.engine.cluster")
