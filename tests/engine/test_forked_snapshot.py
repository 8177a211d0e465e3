"""Snapshots written by a forked child: what it writes, and how each way of failing reaches the
parent (a storage error keeps its errno, anything else is SnapshotChildFailed)."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import time
from pathlib import Path

import pytest

from jq_tool.core.wal_format import read_snapshot
from jq_tool.engine.forked_snapshot import SnapshotChildFailed, fork_snapshot


def test_the_child_writes_the_state_as_of_the_fork(tmp_path: Path) -> None:
    state = {"value": b"before the fork"}
    child = fork_snapshot(lambda: state["value"], tmp_path / "s.snap", 7)
    state["value"] = b"changed after the fork"  # the child's copy is not affected
    child.wait()
    assert read_snapshot(tmp_path / "s.snap") == (7, b"before the fork")


def test_a_storage_error_keeps_its_errno(tmp_path: Path) -> None:
    child = fork_snapshot(lambda: b"x", tmp_path / "missing-dir" / "s.snap", 1)
    with pytest.raises(OSError) as raised:
        child.wait()
    assert raised.value.errno == errno.ENOENT


def test_an_encoding_error_is_a_failed_child(tmp_path: Path) -> None:
    def broken() -> bytes:
        raise ValueError("cannot encode")

    child = fork_snapshot(broken, tmp_path / "s.snap", 1)
    with pytest.raises(SnapshotChildFailed, match="cannot encode"):
        child.wait()
    assert not list(tmp_path.iterdir())


def test_a_killed_child_is_a_failed_child(tmp_path: Path) -> None:
    def slow() -> bytes:
        time.sleep(30)
        return b"never"

    child = fork_snapshot(slow, tmp_path / "s.snap", 1)
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(SnapshotChildFailed, match="signal 9"):
        child.wait()


def test_the_child_closes_the_descriptors_it_is_given(tmp_path: Path) -> None:
    # The WAL's directory lock: were the child to keep it, a parent that dies mid-snapshot
    # would leave its data dir locked until the child finished.
    lock_fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)

    def encode_after_parent_unlocks() -> bytes:
        time.sleep(0.3)
        # The parent has closed its descriptor by now: only a leaked copy could hold the lock.
        probe = os.open(tmp_path / "lock", os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
        return b"lock was free"

    child = fork_snapshot(encode_after_parent_unlocks, tmp_path / "s.snap", 3, [lock_fd])
    os.close(lock_fd)
    child.wait()
    assert read_snapshot(tmp_path / "s.snap") == (3, b"lock was free")
