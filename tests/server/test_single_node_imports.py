"""`jq serve` in single-node embedded mode imports only what that mode uses: a real `jq serve`
(the console script's `main`) is started in a subprocess that, once /health answers and a request
has gone through the job routes, writes down its `sys.modules`. No Redis client, no httpx, no
cluster engine or etcd modules, no SDK, no rich (not even for a first start's panel), no Typer or
pydantic, no uvicorn command line (click) or process supervisors (multiprocessing), no
prometheus_client before a scrape, no OpenAPI document before it is asked for, no dashboard
assets (nor importlib.resources) before the page is asked for, and the standard-library
modules of jq_tool/deferred_imports.py registered but not run: each was measured in the restart
time. With a Redis URL the same probe does see redis-py, so the probe can tell. Then the rare
requests that do use what was left out (a 404, the dashboard) are answered, and load it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from jq_tool.chaos.target import free_port
from jq_tool.deferred_imports import DEFERRED

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
    # A deferred module is in sys.modules before it runs: those are told apart by their type.
    import dataclasses
    at_health = {
        "modules": sorted(sys.modules),
        "deferred": sorted(n for n, m in sys.modules.items() if type(m).__name__ == "_Deferred"),
        "dataclasses": sorted(
            f"{name}.{attr}"
            for name, module in list(sys.modules.items())
            if name.startswith("jq_tool") and type(module).__name__ != "_Deferred"
            for attr, value in vars(module).items()
            if isinstance(value, type) and value.__module__ == name
            and dataclasses.is_dataclass(value)
        ),
    }
    # The rare requests: a path nothing serves (Starlette's 404 looks up its reason phrase in
    # http.client), the dashboard's page and one of its assets.
    rare = {}
    for path in (b"/no-such-path", b"/", b"/static/dashboard.js"):
        answer = ask(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head = answer.split(b"\r\n\r\n", 1)[0].decode()
        rare[path.decode()] = head + "\n" + answer[-300:].decode(errors="replace")
    after = {
        "modules": sorted(sys.modules),
        "deferred": sorted(n for n, m in sys.modules.items() if type(m).__name__ == "_Deferred"),
        "answers": rare,
    }
    with open(out, "w") as file:
        json.dump({"at_health": at_health, "after_rare": after}, file)
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
    # The dashboard's page and assets are read by its first request (server/dashboard.py).
    "importlib.resources",
    "zipfile",
    # What the deferred standard-library modules would have imported (jq_tool/deferred_imports.py)
    "email.parser",
    "email.feedparser",
    "logging.handlers",
    "socketserver",
    "pickle",
    "html.entities",
)


def probe_a_server(tmp_path: Path, *args: str) -> dict[str, Any]:
    """What the server had in sys.modules at a healthy /health, and after its rare requests."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "WAL_DIR"}}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), str(free_port()), "--data-dir",
         str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.exists(), run.stderr[-2000:]
    probe: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return probe


def modules_of_a_server(tmp_path: Path, *args: str) -> set[str]:
    """Those loaded (run) by a healthy /health: sys.modules less what is deferred still."""
    at_health = probe_a_server(tmp_path, *args)["at_health"]
    return set(at_health["modules"]) - set(at_health["deferred"])


def loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_a_single_node_loads_no_redis_httpx_cluster_or_client_modules(tmp_path: Path) -> None:
    # The first start seeds the dev keys and prints its panel (plain text, no rich); then a
    # restart, which does neither.
    first = modules_of_a_server(tmp_path)
    assert "jq_tool.server.welcome" in first  # the panel was printed
    assert [name for name in NOT_USED if loaded(first, name)] == []
    modules = modules_of_a_server(tmp_path)
    assert "jq_tool.engine.local" in modules and "uvicorn" in modules  # it did serve
    assert [name for name in NOT_USED if loaded(modules, name)] == []


def test_a_single_node_makes_no_dataclass_of_its_own(tmp_path: Path) -> None:
    # Making a dataclass generates and compiles its methods: ~0.5 ms a class on these machines,
    # and the 18 on this path were ~11 ms of every restart. Records on it are msgspec Structs
    # (~10 µs a class) or plain classes with __slots__.
    probe_a_server(tmp_path)  # the first start, which seeds the keys
    assert probe_a_server(tmp_path)["at_health"]["dataclasses"] == []


def test_with_redis_the_probe_sees_redis(tmp_path: Path) -> None:
    modules = modules_of_a_server(
        tmp_path, "--redis-url", "redis://127.0.0.1:6379/15", "--redis-prefix", "imports-test:"
    )
    assert loaded(modules, "redis") and "jq_tool.auth.redis_store" in modules
    assert not loaded(modules, "jq_tool.engine.cluster")


def test_deferred_modules_wait_for_the_rare_requests_that_use_them(tmp_path: Path) -> None:
    probe_a_server(tmp_path)  # the first start, which seeds the keys
    probe = probe_a_server(tmp_path)
    # Registered, not run, through a restart, /health and the job routes.
    assert sorted(probe["at_health"]["deferred"]) == sorted(DEFERRED)
    after = probe["after_rare"]
    answers = after["answers"]
    assert answers["/no-such-path"].startswith("HTTP/1.1 404"), answers["/no-such-path"]
    assert '"code":"not_found"' in answers["/no-such-path"].replace(" ", "")
    assert answers["/"].startswith("HTTP/1.1 200") and "</html>" in answers["/"]
    assert answers["/static/dashboard.js"].startswith("HTTP/1.1 200")
    # Starlette's 404 ran http.client (and the email parser it imports); the dashboard read its
    # assets through importlib.resources and hashed them. What neither uses is still waiting.
    assert "http.client" not in after["deferred"] and "email.parser" in after["modules"]
    assert "importlib.resources" in after["modules"] and "hashlib" not in after["deferred"]
    assert {"logging.config", "html", "bz2", "lzma", "anyio.to_thread"} <= set(after["deferred"])
