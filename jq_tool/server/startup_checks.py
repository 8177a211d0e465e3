"""What `jq serve` checks before it writes, seeds or logs anything as serving, and how it says no.

A server that is going to fail must fail before it creates a data dir, seeds the one-time dev
keys or prints "serving": otherwise the keys of a fresh data dir appear only in the log of a run
that never served. So `run_checks` looks, in this order, at the data dir (held by another
process? writable, or creatable?), the HTTP port (it binds the listening sockets here and hands
them to uvicorn, so no other process can take the port between the check and the serving), and
Redis when keys live there (`--redis-url`: it answers PING). Each refusal is a `StartupRefused`:
one line naming the thing and what to do, and its own exit code (README, "Start-up failures"):

| exit | refusal |
|---|---|
| 10 | the port is in use, or this host cannot listen there |
| 11 | the data dir is not writable (or cannot be created, or is not a directory) |
| 12 | the data dir is held by another process (another `jq serve`) |
| 13 | Redis is unreachable or refuses the connection |
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from jq_tool.settings import Settings

EXIT_PORT_UNAVAILABLE = 10
EXIT_DATA_DIR_NOT_WRITABLE = 11
EXIT_DATA_DIR_IN_USE = 12
EXIT_REDIS_UNREACHABLE = 13

# The file a running engine holds an exclusive flock on (core/wal.py's LOCK_NAME; the server
# may not import the WAL, and the name is part of the data dir's on-disk layout).
DATA_DIR_LOCK = "LOCK"
# Redis may still be starting (a compose file starts both at once): PING for this long.
REDIS_WAIT_S = 3.0
LISTEN_BACKLOG = 2048  # uvicorn's default


class StartupRefused(Exception):
    """The server cannot start; `str()` is the one line to print, `exit_code` its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_checks(settings: Settings) -> list[socket.socket]:
    """Every check, in order; returns the listening sockets for uvicorn. Writes nothing."""
    check_data_dir_free(settings.data_dir)
    check_data_dir_writable(settings.data_dir)
    sockets = listen(settings.host, settings.port)
    try:
        if settings.redis_url:
            check_redis(settings.redis_url)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# --- the data dir --------------------------------------------------------------------------------


def check_data_dir_free(data_dir: Path) -> None:
    """Refuse when another process holds the data dir's lock (a `jq serve` running on it). The
    lock is only tried, and let go at once: the engine takes it for good when it starts."""
    try:
        fd = os.open(data_dir / DATA_DIR_LOCK, os.O_RDONLY)
    except OSError:
        return  # no lock file (a new data dir) or no access: the writable check says which
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        by = f" by process {holder}" if holder else " by another process"
        raise StartupRefused(
            f"the data dir {data_dir} is in use{by} (another jq serve?): stop it, "
            "or give this server its own --data-dir (env WAL_DIR)",
            EXIT_DATA_DIR_IN_USE,
        ) from None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> int | None:
    """The pid holding a flock on `fd`'s file, from /proc/locks (Linux); None if unknown."""
    stat = os.fstat(fd)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if "->" in fields:  # a waiter, not the holder
                continue
            if fields[1] == "FLOCK" and fields[5] == inode:
                return int(fields[4])
    return None


def check_data_dir_writable(data_dir: Path) -> None:
    """Refuse when the data dir (or, for a new one, the directory it would be made in) cannot
    be written, and when a file jq writes there cannot. Looks with access(2), so it writes
    nothing; that also sees a read-only mount, for root too."""
    what_to_do = "fix its permissions, or pass another --data-dir (env WAL_DIR)"
    if not data_dir.exists():
        parent = data_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise StartupRefused(
                f"cannot create the data dir {data_dir}: {parent} is not a directory; "
                "pass another --data-dir (env WAL_DIR)",
                EXIT_DATA_DIR_NOT_WRITABLE,
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StartupRefused(
                f"cannot create the data dir {data_dir}: {parent} is not writable; " + what_to_do,
                EXIT_DATA_DIR_NOT_WRITABLE,
            )
        return
    if not data_dir.is_dir():
        raise StartupRefused(
            f"the data dir {data_dir} is not a directory; pass another --data-dir (env WAL_DIR)",
            EXIT_DATA_DIR_NOT_WRITABLE,
        )
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise StartupRefused(
            f"the data dir {data_dir} is not writable; " + what_to_do,
            EXIT_DATA_DIR_NOT_WRITABLE,
        )
    for entry in os.scandir(data_dir):
        if entry.is_file(follow_symlinks=False) and not os.access(entry.path, os.W_OK):
            raise StartupRefused(
                f"{entry.path} in the data dir is not writable; " + what_to_do,
                EXIT_DATA_DIR_NOT_WRITABLE,
            )


# --- the port ------------------------------------------------------------------------------------


def listen(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for every address of `host` (as asyncio's create_server would
    make them), or StartupRefused naming the port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupRefused(
            f"cannot listen on {host}:{port}: {exc.strerror}; pass another --host (env HOST)",
            EXIT_PORT_UNAVAILABLE,
        ) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise _cannot_listen(host, port, exc) from None
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _cannot_listen(host: str, port: int, exc: OSError) -> StartupRefused:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        message = (
            f"port {port} on {host} is in use (another jq serve, or another program): "
            "stop it, or pass another --port (env PORT)"
        )
    elif exc.errno == errno.EACCES:
        message = (
            f"no permission to listen on {where} (ports below 1024 need privileges): "
            "pass a --port of 1024 or more (env PORT)"
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        message = (
            f"cannot listen on {where}: {host} is not an address of this machine; "
            "pass another --host (env HOST)"
        )
    else:
        message = f"cannot listen on {where}: {exc.strerror}; pass another --port (env PORT)"
    return StartupRefused(message, EXIT_PORT_UNAVAILABLE)


# --- Redis ---------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """A Redis URL fit for a log line: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_redis(url: str, wait_s: float = REDIS_WAIT_S) -> None:
    """Refuse unless Redis at `url` answers PING within `wait_s` (one try per second)."""
    import redis  # only a server with --redis-url needs it at start

    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.AuthenticationError as exc:
                problem = f"it refused the credentials ({exc})"
                break
            except (redis.RedisError, OSError) as exc:
                problem = (str(exc) or type(exc).__name__).rstrip(".")
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    finally:
        client.close()
    raise StartupRefused(
        f"cannot reach Redis at {shown_url(url)} for the API keys: {problem}; start Redis, "
        "or fix --redis-url (env REDIS_URL)",
        EXIT_REDIS_UNREACHABLE,
    )
