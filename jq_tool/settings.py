"""The server's configuration: one `Settings` record built from command-line flags and
environment variables (the human forms of durations and sizes are read by `jq_tool.units`).

Settings are read once at start and passed down explicitly (to the engine config, the key store
and `create_app`); nothing else in the server reads the environment. A bad value raises
`SettingsError` with a message naming the flag and its environment variable, which `jq serve`
turns into a usage error (exit code 2), never a traceback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from jq_tool.units import parse_bool, parse_duration_ms, parse_size

DEFAULT_HOST = "127.0.0.1"  # loopback by default: exposing the queue is a deliberate choice
DEFAULT_PORT = 8080
DEFAULT_MAX_PAYLOAD = 1024 * 1024


class SettingsError(ValueError):
    """A flag or environment variable has a value we cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path("./data")
    lease_ms: int = 30_000  # default lease of POST /jobs/lease and extend
    lease_check_interval_ms: int = 5_000  # the ticker: lease expiry, due jobs
    redis_url: str | None = None  # None: the embedded key store in the data dir
    redis_prefix: str = ""
    max_payload: int = DEFAULT_MAX_PAYLOAD  # bytes of one job's payload
    seed_keys: bool = True
    retention_ms: int = 7 * 24 * 3600 * 1000  # finished jobs are purged after this
    ticket_ttl_ms: int = 5 * 60 * 1000  # /events stream tickets
    log_level: str = "info"
    access_log: bool = False
    node_id: str = ""  # reported by /stats; defaults to the host name
    drain_timeout_s: float = 30.0  # SIGTERM: longest wait for in-flight requests
    snapshot_every: int = 100_000  # least WAL records between two snapshots
    segment_bytes: int = 64 * 1024 * 1024  # WAL segment size before rotation

    @property
    def max_body(self) -> int:
        """The largest request body: room for the payload's JSON escaping and the other fields."""
        return 2 * self.max_payload + 64 * 1024

    @property
    def max_batch_body(self) -> int:
        return 8 * self.max_payload + 64 * 1024


_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


# flag name → (environment variable, parser). The one place a setting's outside names live.
ENV_VARS: dict[str, str] = {
    "host": "HOST",
    "port": "PORT",
    "data_dir": "WAL_DIR",
    "lease_duration": "LEASE_DURATION",
    "lease_check_interval": "LEASE_CHECK_INTERVAL",
    "redis_url": "REDIS_URL",
    "redis_prefix": "JQ_REDIS_PREFIX",
    "max_payload": "JQ_MAX_PAYLOAD",
    "seed_keys": "JQ_SEED_KEYS",
    "retention": "JQ_RETENTION",
    "ticket_ttl": "JQ_TICKET_TTL",
    "log_level": "JQ_LOG_LEVEL",
    "access_log": "JQ_ACCESS_LOG",
    "node_id": "NODE_ID",
    "snapshot_every": "JQ_SNAPSHOT_EVERY",
    "segment_bytes": "JQ_SEGMENT_BYTES",
}


def _field_error(name: str, exc: Exception) -> SettingsError:
    flag = "--" + name.replace("_", "-")
    return SettingsError(f"invalid {flag} (env {ENV_VARS[name]}): {exc}")


def build_settings(
    raw: Mapping[str, str | int | bool | None], env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flag values (`raw`, None = not given) falling back to environment variables
    (`env`, default os.environ) and then to the defaults. Raises SettingsError."""
    environ = os.environ if env is None else env

    def pick(name: str) -> str | int | bool | None:
        value = raw.get(name)
        if value is None:
            value = environ.get(ENV_VARS[name]) or None
        return value

    def convert(name: str, parser: Callable[[str], object]) -> object:
        value = pick(name)
        if value is None or not isinstance(value, str):
            return value
        try:
            return parser(value)
        except ValueError as exc:
            raise _field_error(name, exc) from None

    values: dict[str, object] = {}
    host = pick("host")
    if host is not None:
        values["host"] = str(host)
    port = convert("port", _parse_port)
    if port is not None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise _field_error("port", ValueError(f"{port!r} is not a port number (0-65535)"))
        values["port"] = port
    data_dir = pick("data_dir")
    if data_dir is not None:
        values["data_dir"] = Path(str(data_dir))
    for name, field in (
        ("lease_duration", "lease_ms"),
        ("lease_check_interval", "lease_check_interval_ms"),
        ("retention", "retention_ms"),
        ("ticket_ttl", "ticket_ttl_ms"),
    ):
        duration = convert(name, parse_duration_ms)
        if duration is not None:
            if not isinstance(duration, int) or duration <= 0:
                raise _field_error(name, ValueError("must be a positive duration"))
            values[field] = duration
    redis_url = pick("redis_url")
    if redis_url is not None:
        if not str(redis_url).startswith(("redis://", "rediss://", "unix://")):
            raise _field_error("redis_url", ValueError(f"{redis_url!r} is not a redis:// URL"))
        values["redis_url"] = str(redis_url)
    redis_prefix = pick("redis_prefix")
    if redis_prefix is not None:
        values["redis_prefix"] = str(redis_prefix)
    max_payload = convert("max_payload", parse_size)
    if max_payload is not None:
        if not isinstance(max_payload, int) or max_payload <= 0:
            raise _field_error("max_payload", ValueError("must be a positive size"))
        values["max_payload"] = max_payload
    for name in ("seed_keys", "access_log"):
        flag = convert(name, parse_bool)
        if flag is not None:
            values[name] = bool(flag)
    log_level = pick("log_level")
    if log_level is not None:
        level = str(log_level).lower()
        if level not in _LOG_LEVELS:
            raise _field_error(
                name="log_level", exc=ValueError(f"{log_level!r} is not one of {_LOG_LEVELS}")
            )
        values["log_level"] = level
    snapshot_every = convert("snapshot_every", _parse_count)
    if snapshot_every is not None:
        values["snapshot_every"] = snapshot_every
    segment_bytes = convert("segment_bytes", parse_size)
    if segment_bytes is not None:
        if not isinstance(segment_bytes, int) or segment_bytes < 1024:
            raise _field_error("segment_bytes", ValueError("must be at least 1KiB"))
        values["segment_bytes"] = segment_bytes
    node_id = pick("node_id")
    values["node_id"] = str(node_id) if node_id else socket.gethostname()
    return Settings(**values)  # type: ignore[arg-type]


def _parse_count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def _parse_port(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return int(text)
