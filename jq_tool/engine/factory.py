"""Which engine a `jq serve` process runs, from its Settings: LocalEngine (the default: the
local WAL) or, in cluster mode, ClusterEngine (etcd)."""

from __future__ import annotations

from jq_tool.engine.base import Engine, engine_config
from jq_tool.engine.cluster import ClusterEngine
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings


def open_engine(settings: Settings) -> Engine:
    config = engine_config(settings)
    if config.cluster is not None:
        return ClusterEngine(config)
    return LocalEngine(config)
