"""Which engine a `jq serve` process runs: LocalEngine (the default: the local WAL) or, with
CLUSTER_MODE=true, ClusterEngine (etcd), configured from the seed's cluster env vars."""

from __future__ import annotations

from collections.abc import Mapping

from jq_tool.engine.base import Engine, EngineConfig
from jq_tool.engine.cluster import ClusterEngine
from jq_tool.engine.etcd_member import ClusterConfig, cluster_mode_enabled
from jq_tool.engine.local import LocalEngine


def open_engine(config: EngineConfig, env: Mapping[str, str]) -> Engine:
    """Raises ClusterConfigError (a ValueError) when the cluster env vars are unusable."""
    if cluster_mode_enabled(env):
        return ClusterEngine(config, ClusterConfig.from_env(env))
    return LocalEngine(config)
