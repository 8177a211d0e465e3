"""The same refusal, thousands of times, against a real `jq serve`: what a request that was
refused leaves behind is freed with it. Before, the server raised one shared exception object
for its most common refusals (401 without a key, with another scheme or an unknown key; 404 for
a lease of an empty queue; 400 for JSON nested too deep), and Python's traceback of a
re-raised exception object grows by every raise: each refusal's frames (its request, its body)
stayed reachable from a module global. Measured: ~5 KB a refusal,
+470 MB after ~95,000 unauthenticated submits from wrk; an idle worker polling an empty queue
leaked the same way.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

from tests.conftest import JqServer
from tests.hostile.conftest import HostileFactory, raw_request
from tests.hostile.test_unread_answers import rss_mib

REFUSALS = 20_000
PER_WRITE = 16  # the server's pipeline depth: answered as fast as they are read
DEEP = b"[" * 100 + b"]" * 100


def refused_many(port: int, request: bytes, count: int, status: bytes) -> None:
    """Send `request` `count` times on one connection, PER_WRITE at a time, reading every
    answer; each must carry `status`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answers = b""
        for start in range(0, count, PER_WRITE):
            batch = min(PER_WRITE, count - start)
            sock.sendall(request * batch)
            seen = 0
            while seen < batch:
                chunk = sock.recv(1 << 20)
                assert chunk, "the server closed the connection"
                answers += chunk
                # Each answer's status line; bodies are short JSON without "HTTP/1.1 ".
                seen = answers.count(b"HTTP/1.1 ")
            assert answers.count(b"HTTP/1.1 " + status) == batch, answers[:300]
            answers = b""


SUBMIT = b'{"payload":"x"}'
# (the request, given the server's seeded keys; the status every answer carries). Submits and
# leases take the server's hot routes (server/hot_routes.py), GET /stats Starlette's router.
CASES = {
    "no key": (lambda keys: raw_request("POST", "/jobs", body=SUBMIT), b"401"),
    "another scheme": (
        lambda keys: raw_request(
            "POST", "/jobs", body=SUBMIT, extra=f"Authorization: Basic {keys['client']}\r\n"
        ),
        b"401",
    ),
    "unknown key": (
        lambda keys: raw_request("POST", "/jobs", key=keys["client"] + "x", body=SUBMIT),
        b"401",
    ),
    "unknown key, routed": (lambda keys: raw_request("GET", "/stats", key="x"), b"401"),
    "lease of an empty queue": (
        lambda keys: raw_request("POST", "/jobs/lease", key=keys["worker"], body=b'{"queue":"e"}'),
        b"404",
    ),
    "JSON nested too deep": (
        lambda keys: raw_request("POST", "/jobs", key=keys["client"], body=DEEP),
        b"400",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refusal_repeated_costs_no_memory(hostile_server: HostileFactory, case: str) -> None:
    """20,000 identical refusals on one connection: the server's RSS grows by less than
    20 MiB (the leak held ~5 KB each: ~100 MB)."""
    server: JqServer = hostile_server()
    assert server.proc is not None
    build, status = CASES[case]
    request = build({"client": server.client_key, "worker": server.worker_key})
    refused_many(server.port, request, 2_000, status)  # allocator and caches warmed up
    before = rss_mib(server.proc.pid)
    refused_many(server.port, request, REFUSALS, status)
    grown = rss_mib(server.proc.pid) - before
    assert grown < 20, f"{case}: RSS grew {grown:.0f} MiB over {REFUSALS:,} refusals"


def test_no_module_level_object_is_raised() -> None:
    """The rule the fix follows, for all of jq_tool: nothing assigned at a module's top level
    from a call (an exception object made once) is raised by name. Raise a new one each time."""
    package = Path(__file__).resolve().parents[2] / "jq_tool"
    raised_shared = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        made_once = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        raised_shared += [
            f"{path.relative_to(package)}:{node.lineno} raise {node.exc.id}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Raise)
            and isinstance(node.exc, ast.Name)
            and node.exc.id in made_once
        ]
    assert not raised_shared, raised_shared
