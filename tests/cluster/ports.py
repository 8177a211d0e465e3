"""Loopback ports for etcd members: a peer port P whose client port P+1 is free too."""

from __future__ import annotations

import socket


def free_port_pair() -> int:
    """A port P with P+1 free too (etcd peer P, client P+1)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 60000:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")
