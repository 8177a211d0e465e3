"""Below the processes: two shard engines in one process on one etcd group (each a ClusterEngine
under its own prefix) stay apart; ShardedEngine over two groups places queues, names each job's
shard in its id, and refuses what the settings cannot describe, with messages naming the flag."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from jq_tool.chaos.etcd_groups import EtcdGroup
from jq_tool.core.job_ids import shard_of_job_id
from jq_tool.engine.base import JobSpec
from jq_tool.engine.cluster import ClusterEngine
from jq_tool.engine.factory import engine_config, open_engine
from jq_tool.engine.sharded import ShardedEngine, shard_config, shard_prefix
from jq_tool.settings import Settings, SettingsError, build_settings

needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed")


@pytest.fixture
def groups(tmp_path: Path) -> Iterator[list[EtcdGroup]]:
    taken: set[int] = set()
    started = [EtcdGroup(tmp_path / "etcd", f"g{i}", taken=taken) for i in range(2)]
    try:
        for group in started:
            group.start()
        yield started
    finally:
        for group in started:
            group.stop()


def sharded_settings(root: Path, groups: list[EtcdGroup], **env: str) -> Settings:
    shards = ";".join(f"{i}={','.join(g.client_urls)}" for i, g in enumerate(groups))
    return build_settings(
        {"data_dir": str(root)},
        env={
            "CLUSTER_MODE": "true",
            "NODE_ID": "n1",
            "HTTP_PEERS": "n1@http://127.0.0.1:1",
            "SHARDS": shards,
            **env,
        },  # fmt: skip
    )


@needs_etcd
async def test_two_prefixed_cluster_engines_on_one_group_stay_apart(
    tmp_path: Path, groups: list[EtcdGroup]
) -> None:
    settings = sharded_settings(tmp_path, groups)
    config = engine_config(settings)
    urls = tuple(groups[0].client_urls)
    one, two = (
        ClusterEngine(shard_config(config, n, urls), prefix=shard_prefix(n)) for n in (0, 1)
    )
    await asyncio.gather(one.start(), two.start())
    try:
        a = await one.submit(JobSpec(payload="on one", queue="q"))
        b = await two.submit(JobSpec(payload="on two", queue="q"))
        assert a.job_id and b.job_id
        assert (await one.get(a.job_id)) is not None and (await one.get(b.job_id)) is None
        assert (await two.get(b.job_id)) is not None and (await two.get(a.job_id)) is None
        assert one.stats().totals.total == 1 and two.stats().totals.total == 1
        keys, _ = await one._etcd.range(b"jq/", prefix=True, keys_only=True)
        assert keys and all(kv.key.startswith((b"jq/s/0/", b"jq/s/1/")) for kv in keys)
        assert {one.config.data_dir.name, two.config.data_dir.name} == {"shard-0", "shard-1"}
    finally:
        await asyncio.gather(one.stop(), two.stop())


@needs_etcd
async def test_sharded_engine_places_queues_and_names_shards_in_job_ids(
    tmp_path: Path, groups: list[EtcdGroup]
) -> None:
    engine = open_engine(sharded_settings(tmp_path, groups))
    assert isinstance(engine, ShardedEngine)
    await engine.start()
    try:
        outcomes = await engine.submit_many(
            [JobSpec(payload=str(i), queue=f"q{i % 4}") for i in range(8)]
        )
        shards = {engine.shard_of_queue(f"q{i}") for i in range(4)}
        assert shards == {0, 1}
        for i, outcome in enumerate(outcomes):
            assert outcome.job_id is not None
            assert shard_of_job_id(outcome.job_id) == engine.shard_of_queue(f"q{i % 4}")
        leased = await engine.lease("q1", max_jobs=5)
        assert sorted(job.payload for job in leased) == ["1", "5"]
        assert engine.stats().totals.total == 8
        # A release goes to the job's shard, as every command on a job does.
        job = leased[0]
        back = await engine.release(job.id, lease_id=job.lease_id, delay_ms=0)
        assert (back.state.value, back.attempts) == ("READY", 0)
        assert [j.id for j in await engine.lease("q1", max_jobs=5)] == [job.id]
        health = engine.health()
        assert health.ok and health.shards is not None and set(health.shards) == {"0", "1"}
    finally:
        await engine.stop()


def test_shard_settings_are_checked() -> None:
    base = {"CLUSTER_MODE": "true", "NODE_ID": "n1", "HTTP_PEERS": "n1@http://127.0.0.1:1"}
    ok = build_settings({}, env={**base, "SHARDS": "0=http://a:1;1=http://b:1,http://c:1"})
    assert ok.shards == {0: ("http://a:1",), 1: ("http://b:1", "http://c:1")}
    assert ok.shard_replicas is None
    cases = {
        "SHARDS=1=http://a:1": "shards must be numbered 0..0",
        "SHARDS=0=ftp://a:1": "is not an http:// URL",
        "SHARDS=zero=http://a:1": "expected shard=http://host:port",
        "SHARD_REPLICAS=2": "no such shards: [2]",
        "SHARD_REPLICAS=x": "expected shard numbers",
    }
    for setting, message in cases.items():
        name, _, value = setting.partition("=")
        env = {**base, "SHARDS": "0=http://a:1", name: value}
        with pytest.raises(SettingsError, match=re.escape(message)):
            build_settings({}, env=env)
    with pytest.raises(SettingsError, match="only in cluster mode"):
        build_settings({}, env={"SHARDS": "0=http://a:1"})
    with pytest.raises(SettingsError, match="with --shards, naming this node"):
        build_settings({}, env={**base, "HTTP_PEERS": "", "SHARDS": "0=http://a:1"})
    none = build_settings({}, env={**base, "SHARDS": "0=http://a:1", "SHARD_REPLICAS": "none"})
    assert none.shard_replicas == ()
    assert build_settings({}, env={}).shards == {}  # the default: not sharded
