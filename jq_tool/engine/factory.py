"""From the server's Settings to a running engine: `engine_config` derives the engine's
configuration (the cluster's included) in one place, and `open_engine` picks LocalEngine (the
default: the local WAL) or, in cluster mode, ClusterEngine (etcd), or with SHARDS ShardedEngine
(several etcd-backed shards, engine/sharded.py)."""

from __future__ import annotations

from jq_tool.engine.base import ClusterConfig, Engine, EngineConfig, client_addr_for
from jq_tool.settings import Settings


def open_engine(settings: Settings) -> Engine:
    config = engine_config(settings)
    # Imported for the mode in use only: the cluster engine brings httpx and the etcd client,
    # which a single node never needs (and a restart should not wait for).
    if config.cluster is not None and settings.shards:
        from jq_tool.engine.sharded import ShardedEngine

        return ShardedEngine(
            config,
            settings.shards,
            settings.shard_replicas,
            move_pause_after_step=settings.move_pause_after_step,
        )
    if config.cluster is not None:
        from jq_tool.engine.cluster import ClusterEngine

        return ClusterEngine(config)
    from jq_tool.engine.local import LocalEngine

    return LocalEngine(config)


def engine_config(settings: Settings) -> EngineConfig:
    """The one place the engine's configuration comes from: the server's Settings (already
    checked by build_settings, so nothing here can fail)."""
    cluster = None
    if settings.cluster_mode:
        raft_addr = settings.raft_addr
        cluster = ClusterConfig(
            node_id=settings.node_id,
            raft_addr=raft_addr,
            peers=dict(settings.peers),
            http_peers=dict(settings.http_peers),
            bootstrap=settings.bootstrap,
            etcd_client_addr=settings.etcd_client_addr
            or (client_addr_for(raft_addr) if raft_addr else ""),
            etcd_endpoints=settings.etcd_endpoints,
            etcd_cluster_token=settings.etcd_cluster_token,
        )
    return EngineConfig(
        data_dir=settings.data_dir,
        lease_ms=settings.lease_ms,
        lease_check_interval_ms=settings.lease_check_interval_ms,
        retention_ms=settings.retention_ms,
        snapshot_every=settings.snapshot_every,
        segment_bytes=settings.segment_bytes,
        cluster=cluster,
        idempotency_keep_ms=settings.idempotency_keep_ms,
        max_queues=settings.max_queues,
        max_finished=settings.max_finished,
        max_finished_bytes=settings.max_finished_bytes,
        max_dead=settings.max_dead,
        max_idempotency_keys=settings.max_idempotency_keys,
    )
