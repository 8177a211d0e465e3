"""The chaos harness's configuration: the `ChaosOptions` record every other chaos module reads,
its durations in seconds (`2s`, `500ms`, `1m`, a bare number of seconds: read by
`jq_tool.units`, the parser the server's settings use too) and the seed's single-dash spellings
(`-target http://… -jobs 10000 -kill-interval 2s`), which are mapped to Typer's `--long` form
before Typer parses them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from jq_tool.units import parse_duration_ms

# The long flags of `jq chaos`; a single-dash spelling of one of these is the seed's Go-flag form.
CHAOS_FLAGS = frozenset(
    {
        "target",
        "key",
        "jobs",
        "workers",
        "kills",
        "kill-interval",
        "kill-cmd",
        "restart-cmd",
        "submit-rate",
        "wait",
        "json",
        "seed",
        "submitters",
        "queue",
        "data-dir",
        "cluster",
        "without-key",
        "release-share",
        "help",
    }
)

# One kill at a time keeps a majority up from 3 nodes on; more than 7 members only slow etcd down.
MAX_CLUSTER_NODES = 7
MAX_SHARDS = 4


def parse_duration(text: str) -> float:
    """Seconds in `text`: `2s`, `500ms`, `1.5m`, `1h`, or a bare number of seconds.

    Raises ValueError with a message naming the accepted forms, for the CLI to show as is.
    """
    try:
        return parse_duration_ms(text) / 1000
    except ValueError:
        raise ValueError(
            f"invalid duration {text!r}: use a number with an optional unit, e.g. 2s, 500ms, 1m"
        ) from None


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """Map the seed's `-long` and `-long=value` spellings of known flags to `--long`.

    Only names in CHAOS_FLAGS are rewritten, and nothing after a bare `--`, so a value that
    happens to start with a dash (a negative number, a shell command) is left alone.
    """
    normalised: list[str] = []
    passthrough = False
    for arg in argv:
        if passthrough or arg == "--":
            passthrough = True
            normalised.append(arg)
            continue
        if arg.startswith("-") and not arg.startswith("--"):
            name, sep, value = arg[1:].partition("=")
            if name in CHAOS_FLAGS:
                normalised.append(f"--{name}{sep}{value}")
                continue
        normalised.append(arg)
    return normalised


@dataclasses.dataclass(frozen=True)
class ChaosOptions:
    """One chaos run. Durations are seconds.

    `target` None means spawn a private `jq serve`, or with `cluster` N (3 or more) a private
    cluster of N nodes; `kill_cmd`/`restart_cmd` are shell commands for an external target (the
    seed's `docker compose kill queue`).
    """

    target: str | None = None
    key: str | None = None
    jobs: int = 1000
    workers: int = 8
    kills: int = 0
    kill_interval: float = 2.0
    kill_cmd: str | None = None
    restart_cmd: str | None = None
    submit_rate: float = 0.0  # submits per second; 0 = as fast as the submitters go
    wait: float = 60.0  # how long to wait for acknowledged jobs to reach ACKED at the end
    seed: int | None = None
    submitters: int = 16  # concurrent submit requests
    queue: str | None = None  # None: a fresh queue per run, so a shared target's jobs stay apart
    data_dir: str | None = None  # spawned server's data dir; None: a temporary one
    cluster: int = 0  # nodes of a spawned cluster; 0: one single-node server
    # Shards of a spawned sharded cluster (three nodes, an etcd group per shard; 0: not
    # sharded): the run uses one queue per shard and kills shard leaders and nodes in turn.
    shards: int = 0
    # Share of submits sent without an idempotency key and retried all the same, as a client
    # written against the bare HTTP API might: the duplicates they make are counted apart.
    without_key: float = 0.0
    # Share of leased jobs a worker gives back (POST /jobs/{id}/release, a short delay) instead
    # of acking, once per job: each is leased and run again later, and must still end ACKED.
    release_share: float = 0.0

    def problems(self) -> list[str]:
        """Every reason these options cannot run, as messages for the user (empty when fine)."""
        problems: list[str] = []
        if self.jobs < 1:
            problems.append("--jobs must be at least 1")
        if self.workers < 1:
            problems.append("--workers must be at least 1")
        if self.submitters < 1:
            problems.append("--submitters must be at least 1")
        if self.kills < 0:
            problems.append("--kills must not be negative")
        if self.kill_interval <= 0:
            problems.append("--kill-interval must be positive")
        if self.submit_rate < 0:
            problems.append("--submit-rate must not be negative")
        if self.wait < 0:
            problems.append("--wait must not be negative")
        if not 0.0 <= self.without_key <= 1.0:
            problems.append("--without-key must be a share between 0 and 1")
        if not 0.0 <= self.release_share <= 1.0:
            problems.append("--release-share must be a share between 0 and 1")
        if self.target is not None:
            if not self.target.startswith(("http://", "https://")):
                problems.append("--target must be an http:// or https:// URL")
            if not self.key:
                problems.append("--target needs --key (an admin key, or one with submit+lease+ack)")
            if self.kills > 0 and not self.kill_cmd:
                problems.append("--kills with --target needs --kill-cmd (how to kill the server)")
            if self.data_dir is not None:
                problems.append("--data-dir only applies to a spawned server (no --target)")
        elif self.kill_cmd or self.restart_cmd:
            problems.append(
                "--kill-cmd/--restart-cmd need --target (a spawned server is killed directly)"
            )
        if self.cluster:
            if not 3 <= self.cluster <= MAX_CLUSTER_NODES:
                problems.append(
                    f"--cluster must be between 3 and {MAX_CLUSTER_NODES} nodes (0: one server)"
                )
            if self.target is not None:
                problems.append("--cluster spawns its own nodes: it cannot be used with --target")
            if self.key is not None:
                problems.append("--key does not apply to --cluster: each node seeds its own keys")
        if self.shards:
            if not 2 <= self.shards <= MAX_SHARDS:
                problems.append(f"--shards must be between 2 and {MAX_SHARDS} (0: not sharded)")
            if self.target is not None or self.cluster:
                problems.append("--shards spawns its own cluster: not with --target or --cluster")
            if self.key is not None:
                problems.append("--key does not apply to --shards: each node seeds its own keys")
        if self.queue is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", self.queue):
            problems.append("--queue must be 1-128 characters of [A-Za-z0-9_.:-]")
        return problems
