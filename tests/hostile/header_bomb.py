"""A header bomb, run as its own process by test_header_bomb.py (so that it cannot take the
prober's GIL): ROUNDS connections that each send a request line and one header growing by 64 KiB
writes up to TOTAL bytes, as fast as the socket takes them. Prints one JSON line per round:
how many bytes the server took before it closed, and the first bytes of its answer.

    python tests/hostile/header_bomb.py PORT TOTAL_BYTES ROUNDS
"""

from __future__ import annotations

import json
import socket
import sys

CHUNK = b"b" * 65536


def bomb(port: int, total: int) -> dict[str, object]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30.0)
    sent = 0
    error = None
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bomb: ")
        while sent < total:  # bounded by TOTAL
            sock.sendall(CHUNK)
            sent += len(CHUNK)
        sock.sendall(b"\r\n\r\n")
    except OSError as exc:
        error = type(exc).__name__
    answer = b""
    try:
        sock.settimeout(5.0)
        while len(answer) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except OSError as exc:
        error = error or type(exc).__name__
    sock.close()
    return {"sent": sent, "error": error, "answer": answer[:400].decode("latin-1")}


def main() -> None:
    port, total, rounds = (int(arg) for arg in sys.argv[1:4])
    for _ in range(rounds):
        print(json.dumps(bomb(port, total)), flush=True)


if __name__ == "__main__":
    main()
