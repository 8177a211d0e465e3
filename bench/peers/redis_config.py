"""What the machine's Redis promises about durability, read from its live config, so the RQ and
Celery rows state it as it is rather than as a Redis could be configured."""

from __future__ import annotations

REDIS_URL = "redis://127.0.0.1:6379"


def durability(client: object) -> str:
    config: dict[str, str] = {}
    for name in ("appendonly", "appendfsync", "save"):
        config.update(client.config_get(name))  # type: ignore[attr-defined]
    if config.get("appendonly") == "yes":
        if config.get("appendfsync") == "always":
            return "Redis AOF with appendfsync always: fsync before each reply"
        return (
            f"Redis AOF with appendfsync {config.get('appendfsync')}: up to ~1 s of acknowledged "
            "enqueues lost on a crash"
        )
    if config.get("save"):
        return (
            f"none per enqueue: Redis in memory, RDB snapshots only ({config['save']}); a crash "
            "loses everything since the last snapshot"
        )
    return "none: this Redis keeps nothing on disk (appendonly no, save ''); jobs live in memory"


def version(client: object) -> str:
    return "Redis " + str(client.info("server")["redis_version"])  # type: ignore[attr-defined]
