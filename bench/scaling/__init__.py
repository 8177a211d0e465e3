"""Scaling: measurements of one shard's replicated log and the model of many shards
(docs/scaling.md)."""
