"""LocalEngine when the process runs out of descriptors (issue 14): a rotation or a snapshot that
cannot open a file refuses that write temporarily (ResourceExhausted, never the permanent
refusal of a failed fsync), /health says why while it lasts, and writes resume by themselves
once descriptors return. The descriptor table is really filled (a lowered soft limit), no
fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jq_tool.core.wal_format import SNAPSHOT_SUFFIX
from jq_tool.engine.base import EngineUnavailable, JobSpec, ResourceExhausted
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings


def make_engine(data_dir: Path, **overrides: int) -> LocalEngine:
    settings = Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]
    return LocalEngine(engine_config(settings))


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """Lower the soft descriptor limit to what is open plus a few and fill the table with
    /dev/null until open() says EMFILE; everything is given back on exit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    filler: list[int] = []
    try:
        with pytest.raises(OSError) as caught:  # bounded: 64 above what was open
            for _ in range(200):
                filler.append(os.open("/dev/null", os.O_RDONLY))
        assert caught.value.errno == errno.EMFILE
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_emfile_at_rotation_refuses_for_now_and_writes_resume(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, segment_bytes=4096)
    await engine.start()
    acknowledged: list[str] = []
    refused: list[EngineUnavailable] = []
    try:
        # Descriptors run out before the first segment is half full, so no preallocated
        # segment can be made: the rotation must open a file, and cannot.
        with descriptors_exhausted():
            for i in range(200):  # ~100 bytes a record: a 4 KiB segment fills well before
                try:
                    outcome = await engine.submit(JobSpec(payload=f"job-{i}"))
                except EngineUnavailable as exc:
                    refused.append(exc)
                    break
                assert outcome.job_id
                acknowledged.append(outcome.job_id)
            assert refused and isinstance(refused[0], ResourceExhausted), refused
            health = engine.health()
            assert not health.ok and health.reason and "Too many open files" in health.reason
            with pytest.raises(ResourceExhausted):  # still refused, still temporary
                await engine.submit(JobSpec(payload="still no descriptors"))
            assert engine._fatal is None
        # Descriptors are back: the probe rotates and /health turns ok without any write.
        await wait_until(lambda: engine.health().ok)
        outcome = await engine.submit(JobSpec(payload="after"))
        assert outcome.job_id
        acknowledged.append(outcome.job_id)
    finally:
        await engine.stop()

    again = make_engine(tmp_path, segment_bytes=4096)
    await again.start()
    try:
        for job_id in acknowledged:
            assert await again.get(job_id) is not None
    finally:
        await again.stop()


async def test_emfile_while_snapshotting_only_delays_the_snapshot(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, snapshot_every=5)
    await engine.start()
    try:
        with descriptors_exhausted():
            # Appends need no new descriptor; each snapshot (a pipe, a child's temp file) fails
            # and is retried later. Nothing is refused, nothing stops for good.
            for i in range(30):
                await engine.submit(JobSpec(payload=f"job-{i}"))
                await asyncio.sleep(0.01)  # let a forked snapshot's outcome come back
            assert engine.health().ok and engine._fatal is None
        assert not list(tmp_path.glob(f"*{SNAPSHOT_SUFFIX}"))  # every attempt failed
        for i in range(30):
            await engine.submit(JobSpec(payload=f"more-{i}"))
        await wait_until(lambda: bool(list(tmp_path.glob(f"*{SNAPSHOT_SUFFIX}"))))
        assert engine.health().ok
    finally:
        await engine.stop()
