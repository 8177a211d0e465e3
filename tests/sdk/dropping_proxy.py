"""A real TCP proxy in front of `jq serve` that forwards each request but, for the first N
requests, closes the connection instead of passing the server's answer back: the request took
effect, the client never heard. The situation an idempotent submit retry exists for."""

from __future__ import annotations

import socket
import threading


def _read_message(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class DroppingProxy:
    def __init__(self, upstream_port: int, drop_first: int) -> None:
        self.upstream_port = upstream_port
        self.drop_first = drop_first
        self.requests = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = _read_message(conn)
                if not request:
                    continue
                self.requests += 1
                with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                    upstream.sendall(request)
                    response = _read_message(upstream)
                if self.requests > self.drop_first:
                    conn.sendall(response)
                # else: the server did the work; the client sees the connection close.

    def close(self) -> None:
        self.listener.close()
