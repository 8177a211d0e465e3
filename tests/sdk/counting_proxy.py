"""A real TCP proxy in front of `jq serve` that counts the requests passing through by method
and route (job ids elided), so a test can see what a client sent; with `old_server=True` it
plays a server from before POST /jobs/ack: that route is answered 405 with the body such a
server gave (Starlette matched `/jobs/{id}`, a GET route). Every other request is passed to the
real server over a kept-alive connection of its own."""

from __future__ import annotations

import socket
import threading
from collections import Counter

_OLD_ANSWER = (
    b"HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\nallow: GET\r\n"
    b'content-length: 58\r\n\r\n{"error":"Method Not Allowed","code":"method_not_allowed"}'
)


def _read_message(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """One HTTP/1.1 message framed by Content-Length (jq's answers and the SDK's requests);
    None when the peer closed."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(buffer) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    message = bytes(buffer[: end + length])
    del buffer[: end + length]
    return message


class CountingProxy:
    def __init__(self, upstream_port: int, *, old_server: bool = False) -> None:
        self.upstream_port = upstream_port
        self.old_server = old_server
        self.requests: Counter[str] = Counter()  # "POST /jobs/ack" -> count (ids elided)
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer, upstream_buffer = bytearray(), bytearray()
        with conn, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            while (request := _read_message(conn, buffer)) is not None:
                method, path = request.split(b" ", 2)[:2]
                parts = path.decode().split("?")[0].split("/")
                if len(parts) == 4 and parts[1] == "jobs":
                    parts[2] = "{id}"
                with self._lock:
                    self.requests[f"{method.decode()} {'/'.join(parts)}"] += 1
                if self.old_server and method == b"POST" and path == b"/jobs/ack":
                    conn.sendall(_OLD_ANSWER)
                    continue
                upstream.sendall(request)
                answer = _read_message(upstream, upstream_buffer)
                if answer is None:
                    return
                conn.sendall(answer)

    def close(self) -> None:
        self.listener.close()
