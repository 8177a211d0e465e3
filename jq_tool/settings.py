"""The server's configuration: one `Settings` record, and the one place each setting is declared.

A setting is one field of `Settings`, declared with `setting(...)`: its default (written as a
user would write it, and parsed like one), its flag, its environment variable, the parser that
checks and converts the text (`jq_tool.units` reads durations, sizes and booleans) and its help
text. Everything else is derived from those declarations: `build_settings` reads each setting
from its flag, else its environment variable, else its default; `jq serve` builds its options
from them (jq_tool/cli/serve.py); the engine derives its config from `Settings` in one function
(`engine_config` in jq_tool/engine/factory.py). Adding a setting is its `setting(...)` line
here, the code that uses it, and its row in README.md's Configuration table.

Settings are read once at start and passed down explicitly: nothing past `build_settings` reads
the environment. A bad value raises `SettingsError` with a message naming the flag and its
environment variable (`invalid --port (env PORT): …`), which `jq serve` turns into a usage error
(exit code 2), never a traceback.
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from jq_tool.units import parse_bool, parse_duration_ms, parse_size


class SettingsError(ValueError):
    """A flag or environment variable has a value we cannot use."""


class Option:
    """How one setting is given from outside: what `jq serve` offers and `build_settings` reads.

    A plain class, not a frozen dataclass: the generated methods were ~1 ms of every start of
    `jq serve` (issue 20), and nothing compares, hashes or copies an Option."""

    __slots__ = ("flag", "env", "help", "parse", "shown_default", "switch", "panel")

    def __init__(
        self,
        *,
        flag: str,
        env: str,
        help: str,
        parse: Callable[[str], Any],
        shown_default: str,
        switch: bool = False,
        panel: str | None = None,
    ) -> None:
        self.flag = flag  # "--lease-duration"; a switch also gets "--no-…"
        self.env = env  # "LEASE_DURATION"
        self.help = help
        self.parse = parse  # text → value; a ValueError's message says what is wrong
        self.shown_default = shown_default  # the default as a user writes it, for --help
        self.switch = switch  # an on/off flag pair, e.g. --seed-keys/--no-seed-keys
        self.panel = panel  # the --help section, when not the main one

    def __repr__(self) -> str:
        return f"Option(flag={self.flag!r}, env={self.env!r})"

    @property
    def help_text(self) -> str:
        return f"{self.help} (env {self.env}, default {self.shown_default})"


# The Options of Settings' fields, as `setting()` declares them (in field order).
_DECLARED: list[Option] = []


def setting(
    default: str | None,
    *,
    flag: str,
    env: str,
    help: str,
    parse: Callable[[str], Any] = str,
    switch: bool = False,
    panel: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    shown_default: str | None = None,
) -> Any:
    """Declare a field of `Settings`. `default` is text, read by `parse` as a flag's value would
    be (None: unset); `default_factory` computes a default that is not a constant instead."""
    if default_factory is None:
        default_factory = (lambda: None) if default is None else (lambda: parse(default))
    option = Option(
        flag=flag,
        env=env,
        help=help,
        parse=parse,
        shown_default=shown_default or default or "unset",
        switch=switch,
        panel=panel,
    )
    _DECLARED.append(option)
    return msgspec.field(default_factory=default_factory)


# ---------------------------------------------------------------------- parsers of single values

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _positive_duration(text: str) -> int:
    ms = parse_duration_ms(text)
    if ms <= 0:
        raise ValueError("must be a positive duration")
    return ms


def _positive_size(text: str) -> int:
    size = parse_size(text)
    if size <= 0:
        raise ValueError("must be a positive size")
    return size


def _segment_size(text: str) -> int:
    size = parse_size(text)
    if size < 1024:
        raise ValueError("must be at least 1KiB")
    return size


def _count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


# Descriptors the connection cap leaves to the rest of the process: the WAL (lock, directory,
# segment, the preallocated next one), the key store, snapshots, the event loop, etcd or Redis
# clients, and the over-cap connections being refused (server/connections.py). Sized with room.
RESERVED_DESCRIPTORS = 96


def descriptor_limit() -> int:
    """This process's soft limit on open files (RLIMIT_NOFILE)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def _connections(text: str) -> int:
    """A connection count, or `auto`: the descriptor limit less RESERVED_DESCRIPTORS."""
    if text.strip().lower() == "auto":
        return max(8, descriptor_limit() - RESERVED_DESCRIPTORS)
    return _count(text)


def _streams(text: str) -> int:
    """An event stream count, or `auto`: a quarter of the automatic connection cap."""
    if text.strip().lower() == "auto":
        return max(1, _connections("auto") // 4)
    return _count(text)


def _header_size(text: str) -> int:
    size = parse_size(text)
    if size < 1024:
        raise ValueError("must be at least 1KiB")
    return size


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{text!r} is not a redis:// URL")
    return text


def _log_level(text: str) -> str:
    if text.lower() not in _LOG_LEVELS:
        raise ValueError(f"{text!r} is not one of {_LOG_LEVELS}")
    return text.lower()


def _host_port(text: str) -> str:
    """`host:port` (an etcd peer or client address); empty = not given."""
    text = text.strip()
    host, _, port = text.rpartition(":")
    if text and (not host or not port.isdigit()):
        raise ValueError(f"expected host:port, got {text!r}")
    return text


def _id_list(check: Callable[[str], str], expected: str) -> Callable[[str], dict[str, str]]:
    """A parser of `id@address,id@address` → {id: address}, each address read by `check`."""

    def parse(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            node_id, sep, addr = item.partition("@")
            if not sep or not node_id or not addr:
                raise ValueError(f"expected {expected}, got {item!r}")
            out[node_id] = check(addr)
        return out

    return parse


def _urls(text: str) -> tuple[str, ...]:
    urls = tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// URL")
    return urls


def _shards(text: str) -> dict[int, tuple[str, ...]]:
    """`0=http://h:p,http://h:p;1=http://…` → {shard: its etcd group's client URLs}. Shards are
    numbered 0..S-1 (shard 0's group also holds the placement table)."""
    out: dict[int, tuple[str, ...]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        shard, sep, urls = item.partition("=")
        if not sep or not shard.strip().isdigit() or not urls.strip():
            raise ValueError(f"expected shard=http://host:port,…; got {item!r}")
        out[int(shard)] = _urls(urls)
    if out and sorted(out) != list(range(len(out))):
        raise ValueError(f"shards must be numbered 0..{len(out) - 1}, got {sorted(out)}")
    return out


def _shard_ids(text: str) -> tuple[int, ...] | None:
    """`0,1` → (0, 1); `none` → () (a node that holds no shard and forwards everything);
    `all` → None (every shard)."""
    if text.strip().lower() == "all":
        return None
    if text.strip().lower() == "none":
        return ()
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise ValueError(f"expected shard numbers like 0,1 (or all, or none), got {text!r}")
    return tuple(sorted({int(part) for part in parts}))


# ---------------------------------------------------------------------- the settings

CLUSTER = "Cluster mode (etcd)"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `jq serve` is told, by flags, environment variables and defaults.

    A msgspec Struct, not a dataclass: making the dataclass was ~2.5 ms of every start of
    `jq serve` (generating and compiling its methods), the Struct ~10 µs (issue 20)."""

    host: str = setting(
        "127.0.0.1",  # loopback by default: exposing the queue is a deliberate choice
        flag="--host", env="HOST", help="Address to listen on",
    )  # fmt: skip
    port: int = setting("8080", flag="--port", env="PORT", parse=_port, help="HTTP port")
    data_dir: Path = setting(
        "./data", flag="--data-dir", env="WAL_DIR", parse=Path,
        help="Write-ahead log, snapshots and the embedded key store",
    )  # fmt: skip
    lease_ms: int = setting(
        "30s", flag="--lease-duration", env="LEASE_DURATION", parse=_positive_duration,
        help="Default lease when a lease request names none, e.g. 30s",
    )  # fmt: skip
    lease_check_interval_ms: int = setting(
        "5s", flag="--lease-check-interval", env="LEASE_CHECK_INTERVAL",
        parse=_positive_duration, help="Longest pause between two looks for expired leases",
    )  # fmt: skip
    redis_url: str | None = setting(
        None, flag="--redis-url", env="REDIS_URL", parse=_redis_url,
        help="API keys in Redis; unset: the embedded store in the data dir",
    )  # fmt: skip
    redis_prefix: str = setting(
        "", flag="--redis-prefix", env="JQ_REDIS_PREFIX",
        help="Prefix for every Redis key jq writes",
    )  # fmt: skip
    max_payload: int = setting(
        "1MiB", flag="--max-payload", env="JQ_MAX_PAYLOAD", parse=_positive_size,
        help="Largest job payload: bytes, 512KiB, 1MiB",
    )  # fmt: skip
    retention_ms: int = setting(
        "7d", flag="--retention", env="JQ_RETENTION", parse=_positive_duration,
        help="Finished jobs are forgotten after this long, in memory and in the history store",
    )  # fmt: skip
    max_finished: int = setting(
        "100000", flag="--max-finished", env="JQ_MAX_FINISHED", parse=_count,
        help="Most finished (ACKED, CANCELLED) jobs held in memory; the oldest beyond it move "
        "to the history store on disk",
    )  # fmt: skip
    max_finished_bytes: int = setting(
        "256MiB", flag="--max-finished-bytes", env="JQ_MAX_FINISHED_BYTES",
        parse=_positive_size,
        help="Most memory (estimated) for finished jobs; the oldest beyond it move to disk",
    )  # fmt: skip
    max_dead: int = setting(
        "100000", flag="--max-dead", env="JQ_MAX_DEAD", parse=_count,
        help="Most DEAD jobs held; the oldest beyond it are dropped (logged, counted; their "
        "records stay in the history store)",
    )  # fmt: skip
    max_idempotency_keys: int = setting(
        "200000", flag="--max-idempotency-keys", env="JQ_MAX_IDEMPOTENCY_KEYS", parse=_count,
        help="Most idempotency keys remembered; beyond it those whose keep time ends first "
        "are forgotten early",
    )  # fmt: skip
    idempotency_keep_ms: int = setting(
        "24h", flag="--idempotency-keep", env="JQ_IDEMPOTENCY_KEEP", parse=_positive_duration,
        help="How long an idempotency key answers with its first job",
    )  # fmt: skip
    max_queues: int = setting(
        "10000", flag="--max-queues", env="JQ_MAX_QUEUES", parse=_count,
        help="Most distinct queues holding jobs; a submit to one more is refused (429)",
    )  # fmt: skip
    seed_keys: bool = setting(
        "true", flag="--seed-keys", env="JQ_SEED_KEYS", parse=parse_bool, switch=True,
        help="On first start, create and log one client, worker and admin key",
    )  # fmt: skip
    snapshot_every: int = setting(
        "100000", flag="--snapshot-every", env="JQ_SNAPSHOT_EVERY", parse=_count,
        help="Least WAL records between snapshots; a quarter of the jobs held when that is "
        "more",
    )  # fmt: skip
    segment_bytes: int = setting(
        "64MiB", flag="--segment-bytes", env="JQ_SEGMENT_BYTES", parse=_segment_size,
        help="WAL segment size",
    )  # fmt: skip
    max_connections: int = setting(
        "auto", flag="--max-connections", env="JQ_MAX_CONNECTIONS", parse=_connections,
        help="Open HTTP connections at most; one more is answered 503 (Retry-After) and closed. "
        f"auto: the descriptor limit (ulimit -n) minus {RESERVED_DESCRIPTORS}",
    )  # fmt: skip
    max_streams: int = setting(
        "auto", flag="--max-streams", env="JQ_MAX_STREAMS", parse=_streams,
        help="Open /events streams at most (they count as connections too); one more is "
        "answered 503. auto: a quarter of the automatic --max-connections",
    )  # fmt: skip
    header_timeout_ms: int = setting(
        "10s", flag="--header-timeout", env="JQ_HEADER_TIMEOUT", parse=_positive_duration,
        help="A connection that has not sent a whole request head (or stops sending a body, "
        "or reads none of its answers) for this long is closed",
    )  # fmt: skip
    max_header_bytes: int = setting(
        "64KiB", flag="--max-header-size", env="JQ_MAX_HEADER_SIZE", parse=_header_size,
        help="Largest request line + headers; a longer head is answered 431 and closed",
    )  # fmt: skip
    keep_alive_timeout_ms: int = setting(
        "5s", flag="--keep-alive-timeout", env="JQ_KEEP_ALIVE_TIMEOUT",
        parse=_positive_duration, help="An idle keep-alive connection is closed after this long",
    )  # fmt: skip
    ticket_ttl_ms: int = setting(
        "5m", flag="--ticket-ttl", env="JQ_TICKET_TTL", parse=_positive_duration,
        help="Lifetime of the dashboard's /events tickets",
    )  # fmt: skip
    drain_timeout_ms: int = setting(
        "30s", flag="--drain-timeout", env="JQ_DRAIN_TIMEOUT", parse=_positive_duration,
        help="On SIGTERM, the longest wait for requests in flight",
    )  # fmt: skip
    log_level: str = setting(
        "info", flag="--log-level", env="JQ_LOG_LEVEL", parse=_log_level,
        help="critical, error, warning, info or debug",
    )  # fmt: skip
    access_log: bool = setting(
        "false", flag="--access-log", env="JQ_ACCESS_LOG", parse=parse_bool, switch=True,
        help="One log line per request (route templates, never keys)",
    )  # fmt: skip
    node_id: str = setting(
        None, flag="--node-id", env="NODE_ID", default_factory=socket.gethostname,
        shown_default="the host name",
        help="This node's name, in /stats; in cluster mode its etcd member's name",
    )  # fmt: skip
    cluster_mode: bool = setting(
        "false", flag="--cluster-mode", env="CLUSTER_MODE", parse=parse_bool, switch=True,
        panel=CLUSTER, help="Replicate every change through etcd (needs --node-id)",
    )  # fmt: skip
    raft_addr: str = setting(
        "", flag="--raft-addr", env="RAFT_ADDR", parse=_host_port, panel=CLUSTER,
        shown_default="this node's address in --peers",
        help="This node's etcd peer address host:port; its etcd client port is port + 1",
    )  # fmt: skip
    peers: dict[str, str] = setting(
        "", flag="--peers", env="PEERS", parse=_id_list(_host_port, "id@host:port"),
        panel=CLUSTER, help="Every member's etcd peer address: id@host:port,…",
    )  # fmt: skip
    http_peers: dict[str, str] = setting(
        "", flag="--http-peers", env="HTTP_PEERS", parse=_id_list(str, "id@url"),
        panel=CLUSTER, help="The nodes' HTTP addresses: id@http://host:port,…",
    )  # fmt: skip
    bootstrap: bool = setting(
        "false", flag="--bootstrap", env="BOOTSTRAP", parse=parse_bool, switch=True,
        panel=CLUSTER, help="First boot of a new cluster",
    )  # fmt: skip
    etcd_endpoints: tuple[str, ...] = setting(
        "", flag="--etcd-endpoints", env="ETCD_ENDPOINTS", parse=_urls, panel=CLUSTER,
        help="Use an existing etcd cluster (http://host:port,…) instead of starting a member",
    )  # fmt: skip
    etcd_client_addr: str = setting(
        "", flag="--etcd-client-addr", env="ETCD_CLIENT_ADDR", parse=_host_port,
        panel=CLUSTER, shown_default="--raft-addr's port + 1",
        help="This node's etcd client address host:port",
    )  # fmt: skip
    shards: dict[int, tuple[str, ...]] = setting(
        "", flag="--shards", env="SHARDS", parse=_shards, panel=CLUSTER,
        help="Sharded mode (prototype, docs/scaling.md): each shard's etcd cluster, "
        "0=http://host:port,…;1=…; queues are spread over the shards",
    )  # fmt: skip
    shard_replicas: tuple[int, ...] | None = setting(
        "all", flag="--shard-replicas", env="SHARD_REPLICAS", parse=_shard_ids, panel=CLUSTER,
        help="The shards this node holds a replica of (0,1, all or none); requests for others "
        "are forwarded to a node that holds them",
    )  # fmt: skip
    move_pause_after_step: str = setting(
        "", flag="--test-move-pause-after-step", env="JQ_TEST_MOVE_PAUSE_AFTER_STEP",
        panel=CLUSTER, shown_default="unset",
        help="Fault injection for tests (sharded mode): a queue move this node drives stops "
        "for good after this step (0-5), as if the node died there; never set it in production",
    )  # fmt: skip
    etcd_cluster_token: str = setting(
        "jq-cluster", flag="--etcd-cluster-token", env="ETCD_CLUSTER_TOKEN", panel=CLUSTER,
        help="etcd's --initial-cluster-token for the members jq starts",
    )  # fmt: skip

    @property
    def max_body(self) -> int:
        """The largest request body: room for the payload's JSON escaping and the other fields."""
        return 2 * self.max_payload + 64 * 1024

    @property
    def max_batch_body(self) -> int:
        return 8 * self.max_payload + 64 * 1024


# Setting name → how it is given from outside, in declaration order (the order of --help).
# Every field is declared by `setting()`, which lists its Option in the same order. The field
# names come from `__struct_fields__`: `msgspec.structs.fields` would evaluate 39 annotations.
OPTIONS: dict[str, Option] = dict(zip(Settings.__struct_fields__, _DECLARED, strict=True))
# Setting name → its environment variable: every variable `jq serve` reads.
ENV_VARS: dict[str, str] = {name: option.env for name, option in OPTIONS.items()}


def _error(name: str, problem: str) -> SettingsError:
    option = OPTIONS[name]
    return SettingsError(f"invalid {option.flag} (env {option.env}): {problem}")


def _missing(name: str, why: str) -> SettingsError:
    option = OPTIONS[name]
    return SettingsError(f"{option.flag} (env {option.env}) is required {why}")


def build_settings(
    raw: Mapping[str, str | bool | None], env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flag values (`raw`, by setting name; None = not given), falling back to
    environment variables (`env`, default os.environ: the one place the server reads it; an
    empty variable counts as unset) and then to the defaults. Raises SettingsError."""
    environ = os.environ if env is None else env
    unknown = set(raw) - set(OPTIONS)
    if unknown:
        raise TypeError(f"no such settings: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, option in OPTIONS.items():
        value: Any = raw.get(name)
        if value is None:
            value = environ.get(option.env) or None
        if isinstance(value, str):
            try:
                value = option.parse(value)
            except ValueError as exc:
                raise _error(name, str(exc)) from None
        if value is not None:
            values[name] = value
    settings = Settings(**values)
    if settings.shards and not settings.cluster_mode:
        raise _error("shards", "only in cluster mode (--cluster-mode)")
    if settings.cluster_mode:
        settings = _resolve_cluster(settings, node_id_given="node_id" in values)
    return settings


def _resolve_cluster(settings: Settings, *, node_id_given: bool) -> Settings:
    """The cluster settings must describe one node of one cluster: its name, and where its etcd
    member is (RAFT_ADDR, or its entry in PEERS), unless ETCD_ENDPOINTS names an etcd cluster."""
    if not node_id_given:
        raise _missing("node_id", "in cluster mode")
    node_id, peers = settings.node_id, dict(settings.peers)
    raft_addr = settings.raft_addr or peers.get(node_id, "")
    if settings.shards:
        # Sharded (prototype): every shard's etcd cluster is named by --shards; jq starts no
        # member. HTTP_PEERS says where the other nodes are, for forwarding.
        if node_id not in settings.http_peers:
            raise _missing("http_peers", f"with --shards, naming this node ({node_id})")
        unknown = set(settings.shard_replicas or ()) - set(settings.shards)
        if unknown:
            raise _error("shard_replicas", f"no such shards: {sorted(unknown)}")
        return settings
    if settings.shard_replicas is not None:
        raise _error("shard_replicas", "only with --shards")
    if not settings.etcd_endpoints:
        if not raft_addr:
            raise _missing("raft_addr", "in cluster mode, unless --etcd-endpoints is given")
        peers.setdefault(node_id, raft_addr)
        if peers[node_id] != raft_addr:
            raise _error(
                "raft_addr",
                f"{raft_addr} is not {node_id}'s address in --peers (env PEERS): {peers[node_id]}",
            )
    return msgspec.structs.replace(settings, raft_addr=raft_addr, peers=peers)
