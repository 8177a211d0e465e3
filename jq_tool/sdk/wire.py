"""The async client's HTTP/1.1 connection pool: keep-alive connections over asyncio streams,
for the request/response calls of `AsyncClient` (the worker's hot path: lease, ack, extend).

Why not httpx here: measured on this project's machines, one httpx.AsyncClient request costs
~10x the CPU of the same request over a plain asyncio stream (anyio and httpcore's pool
bookkeeping), and a worker process spends nearly all of its time making requests. The jq API
is small and regular (JSON bodies, Content-Length or chunked answers), so a small pool is
enough. httpx still serves the sync `Client` and the `/events` stream.

A request that fails on a reused connection before any byte of the answer arrived is sent once
more on a fresh connection: the server had closed that idle connection and never read the
request. Every other failure is a `TransportFailure`, which the client turns into
`ServerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlencode, urlsplit

_HEAD_LIMIT = 1 << 20  # bytes of status line + headers we accept


class TransportFailure(Exception):
    """No answer: the connection could not be made, broke, or the answer timed out."""


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Http11Pool:
    def __init__(self, url: str, headers: dict[str, str], *, max_connections: int = 100) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        authority = parts.netloc.rpartition("@")[2]
        fixed = {"Host": authority, "Connection": "keep-alive", **headers}
        self._fixed_head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self.max_connections = max_connections
        self._idle: list[Connection] = []
        self._slots: asyncio.Semaphore | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, object] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """Send one request; (status, body) of the answer."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        target = self.prefix + path
        if params:
            target += "?" + urlencode({k: str(v) for k, v in params.items()})
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed_head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        message = head.encode("latin-1") + b"\r\n" + (body or b"")
        async with self._slots:
            while True:
                reused = bool(self._idle)
                connection = self._idle.pop() if reused else await self._connect(timeout)
                try:
                    async with asyncio.timeout(timeout):
                        status, answer, keep = await self._exchange(connection, message)
                except _StaleConnection:
                    self._close(connection)
                    if reused:
                        continue
                    raise TransportFailure(f"{method} {path}: connection closed") from None
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    self._close(connection)
                    raise TransportFailure(
                        f"{method} {path}: {type(exc).__name__}: {exc or 'no answer'}"
                    ) from exc
                except BaseException:
                    self._close(connection)  # cancelled mid-exchange: the stream is unusable
                    raise
                if keep:
                    self._idle.append(connection)
                else:
                    self._close(connection)
                return status, answer

    async def _connect(self, timeout: float) -> Connection:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    limit=_HEAD_LIMIT,
                    server_hostname=self.host if self.ssl else None,
                )
        except (OSError, TimeoutError) as exc:
            raise TransportFailure(
                f"cannot connect to {self.host}:{self.port}: {exc or 'timed out'}"
            ) from exc

    async def _exchange(self, connection: Connection, message: bytes) -> tuple[int, bytes, bool]:
        reader, writer = connection
        try:
            writer.write(message)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _StaleConnection from None
            raise
        except (ConnectionResetError, BrokenPipeError):
            raise _StaleConnection from None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        status = int(rest[:3])
        length: int | None = None
        chunked = False
        keep = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                keep = value.lower() != "close" and (keep or value.lower() == "keep-alive")
        if chunked:
            answer = await _read_chunked(reader)
        elif length is not None:
            answer = await reader.readexactly(length)
        elif status in (204, 304) or 100 <= status < 200:
            answer = b""
        else:
            answer, keep = await reader.read(), False
        return status, answer, keep

    @staticmethod
    def _close(connection: Connection) -> None:
        connection[1].close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _StaleConnection(Exception):
    """The server had closed this idle connection: nothing was read, nothing was done."""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
