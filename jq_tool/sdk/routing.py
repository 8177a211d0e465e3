"""Sharded mode's routing in the SDK (docs/scaling.md §2.3): the client sends a queue's requests
straight to a node holding the queue's shard.

A node that forwarded a request (server/forward.py) says in the answer's `Jq-Placement` header
where the queue lives and which nodes hold its shard: `shard=1; nodes=http://a:1 http://b:2`,
the node that answered first. `Routes` remembers that node per queue, and the client sends the
next request naming the queue (a submit, a batch of one queue, a lease) there. Nothing here is
trusted for correctness: any node still answers any request, so a stale entry (the queue moved,
a node left) costs one forward, after which the answer names the right nodes again; a node that
cannot be reached is forgotten and the request goes to the client's own URL. Answers from a
single node or a one-group cluster carry no header, so such clients never route.
"""

from __future__ import annotations

__all__ = ["MAX_ROUTES", "Routes", "first_node"]

MAX_ROUTES = 10_000  # queues remembered; past it the table starts over (a cache, not a truth)


def first_node(header: bytes, scheme: str) -> str | None:
    """The first node URL a Jq-Placement header names, if it has the client's own scheme (an
    https client never sends its key to a plain-http URL); None otherwise."""
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    for part in text.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "nodes":
            for url in value.split():
                if url.startswith(scheme + "://") and len(url) <= 2048:
                    return url.rstrip("/")
    return None


class Routes:
    """queue -> the URL of a node holding its shard, as the answers said. Safe to share between
    threads (single dict operations)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._scheme = base_url.partition("://")[0]
        self._by_queue: dict[str, str] = {}

    def url_for(self, queue: str | None) -> str | None:
        """Where to send a request for `queue`: a node URL, or None for the client's own."""
        return None if queue is None else self._by_queue.get(queue)

    def learn(self, queue: str, header: bytes) -> None:
        url = first_node(header, self._scheme)
        if url is None or url == self.base_url:
            self._by_queue.pop(queue, None)
            return
        if len(self._by_queue) >= MAX_ROUTES and queue not in self._by_queue:
            self._by_queue.clear()
        self._by_queue[queue] = url

    def forget(self, queue: str | None) -> None:
        if queue is not None:
            self._by_queue.pop(queue, None)
