"""The log is a contract with every data dir already written: the data dirs the first release
wrote (tests/fixtures/first_release/, made by its make_fixture.py and never rewritten) must
recover to the same state with today's code, through the real engines, and keep doing so after
today's code has snapshotted them again.

A later version may add fields to jobs or counters: only the fields the first release knew are
compared, and each must hold the value the first release had.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from jq_tool.auth.embedded_store import EmbeddedKeyStore
from jq_tool.core.state_machine import StateMachine
from jq_tool.engine.cluster import ClusterEngine
from jq_tool.engine.etcd_client import KeyValue
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings

FIXTURE = Path(__file__).parents[1] / "fixtures" / "first_release"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())


def assert_same_state(machine: StateMachine, expected: dict[str, Any]) -> None:
    jobs = {job["id"]: job for job in expected["jobs"]}
    assert machine.job_count == len(jobs)
    for job_id, fields in jobs.items():
        job = machine.get(job_id)
        assert job is not None, f"job {job_id} lost"
        for name, value in fields.items():
            assert msgspec.to_builtins(getattr(job, name)) == value, (job_id, name)
    stats = msgspec.to_builtins(machine.stats())
    for name, value in expected["counters"].items():
        assert stats["counters"][name] == value, name
    for name, value in expected["stats"]["totals"].items():
        assert stats["totals"][name] == value, name
    for queue, counts in expected["stats"]["queues"].items():
        for name, value in counts.items():
            assert stats["queues"][queue][name] == value, (queue, name)


def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURE / name, target)
    return target


@pytest.mark.parametrize("name", ["single", "replay_only"])
async def test_a_first_release_data_dir_recovers_to_the_same_state(
    name: str, tmp_path: Path
) -> None:
    data_dir = copy_fixture(name, tmp_path)
    for _round in range(2):  # as written by the first release, then as snapshotted by today's
        settings = Settings(data_dir=data_dir, lease_check_interval_ms=3_600_000)
        engine = LocalEngine(engine_config(settings))
        await engine.start()
        try:
            assert engine.recovery_message is None
            assert_same_state(engine._machine, EXPECTED["single"])
        finally:
            await engine.stop()


async def test_the_first_release_dev_keys_still_authenticate(tmp_path: Path) -> None:
    store = EmbeddedKeyStore(copy_fixture("single", tmp_path))
    try:
        for key_type, secret in EXPECTED["keys"].items():
            key = await store.authenticate(secret)
            assert key is not None and key.type.value == key_type
            assert key.owner_id == f"dev-{key_type}"
    finally:
        await store.close()


async def test_a_first_release_cluster_snapshot_and_log_replay_to_the_same_state(
    tmp_path: Path,
) -> None:
    data_dir = copy_fixture("cluster", tmp_path)
    settings = Settings(
        data_dir=data_dir, cluster_mode=True, node_id="n1", etcd_endpoints=("http://127.0.0.1:1",)
    )
    engine = ClusterEngine(engine_config(settings), start_member=False)
    engine._load_local_snapshot()
    assert engine.applied_revision == 41
    values = msgspec.msgpack.decode((data_dir / "log.msgpack").read_bytes(), type=list[bytes])
    for revision, value in enumerate(values, start=42):
        engine._apply_batch(KeyValue(b"jq/log/n0/boot/%d" % revision, value, revision, revision, 0))
    assert_same_state(engine._machine, EXPECTED["cluster"])
    # Snapshotted by today's code (with the cold index) and restored: the same state again.
    again = StateMachine()
    again.restore(engine._machine.snapshot())
    assert_same_state(again, EXPECTED["cluster"])
