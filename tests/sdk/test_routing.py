"""sdk/routing.py: reading Jq-Placement headers into per-queue routes."""

from __future__ import annotations

from jq_tool.sdk.routing import MAX_ROUTES, Routes, first_node


def test_the_first_node_of_the_clients_scheme_is_taken() -> None:
    header = b"shard=1; nodes=http://127.0.0.1:7001 http://127.0.0.1:7002/"
    assert first_node(header, "http") == "http://127.0.0.1:7001"
    assert first_node(b"shard=1; nodes=http://a:1 https://b:2", "https") == "https://b:2"
    # An https client never sends its key to a plain-http node; no nodes, no route.
    assert first_node(b"shard=1; nodes=http://a:1", "https") is None
    assert first_node(b"shard=1", "http") is None
    assert first_node(b"shard=1; nodes=\xff", "http") is None


def test_routes_learn_forget_and_stay_bounded() -> None:
    routes = Routes("http://entry:1")
    assert routes.url_for("q") is None and routes.url_for(None) is None
    routes.learn("q", b"shard=0; nodes=http://n1:1 http://n2:2")
    assert routes.url_for("q") == "http://n1:1"
    routes.learn("q", b"shard=0; nodes=http://entry:1")  # the entry node itself: no route
    assert routes.url_for("q") is None
    routes.learn("q", b"shard=0; nodes=http://n2:2")
    routes.forget("q")
    assert routes.url_for("q") is None
    for i in range(MAX_ROUTES + 1):
        routes.learn(f"q{i}", b"shard=0; nodes=http://n1:1")
    assert routes.url_for(f"q{MAX_ROUTES}") == "http://n1:1"
    assert routes.url_for("q0") is None  # the table started over
