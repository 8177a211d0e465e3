"""What LocalEngine says when recovery drops a WAL tail (issue 15, finding 10): a flipped byte in
the last acknowledged record is damage, logged at ERROR, not a torn write at WARNING; the line
names the file, the offset, the bytes and complete records dropped, and where they are kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jq_tool.core.wal_format import read_written
from jq_tool.engine.base import JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings


async def _write_jobs(data_dir: Path, count: int) -> Path:
    engine = LocalEngine(engine_config(Settings(data_dir=data_dir)))
    await engine.start()
    for i in range(count):
        await engine.submit(JobSpec(payload=f"job-{i}"))
    # As after kill -9: no final snapshot, the records are only in the segment.
    assert engine._flusher is not None and engine._ticker is not None
    engine._flusher.cancel()
    engine._ticker.cancel()
    await engine._wal_thread.call(engine._wal.close)  # type: ignore[union-attr]
    engine._wal_thread.close()  # type: ignore[union-attr]
    [segment] = sorted(data_dir.glob("*.wal"))
    return segment


async def _recover(data_dir: Path) -> LocalEngine:
    engine = LocalEngine(engine_config(Settings(data_dir=data_dir)))
    await engine.start()
    return engine


@pytest.mark.parametrize("damage", ["flipped byte", "cut short"])
async def test_a_dropped_tail_is_reported_by_what_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    segment = await _write_jobs(tmp_path, 3)
    # The records, without the zero-filled space after them (the segment is preallocated).
    data = bytearray(read_written(segment)[0])
    if damage == "flipped byte":
        data[-10] ^= 0x20  # inside the last record's body: a whole record that fails its CRC
    else:
        del data[-10:]  # the last record is missing its end: a write a crash cut short
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="jq.engine"):
        engine = await _recover(tmp_path)
    try:
        assert engine.stats().counters.submitted == 2
        [line] = [r for r in caplog.records if "WAL tail truncated" in r.getMessage()]
        message = line.getMessage()
        assert segment.name in message and "offset" in message and "dropped" in message
        kept = list(tmp_path.glob("*.broken"))
        assert len(kept) == 1 and kept[0].name in message
        if damage == "flipped byte":
            assert line.levelno == logging.ERROR
            assert "1 complete record:" in message and "failed its CRC" in message
        else:
            assert line.levelno == logging.WARNING
            assert "0 complete records" in message
        assert engine.recovery_message == message.split(": ", 1)[1]
    finally:
        await engine.stop()
