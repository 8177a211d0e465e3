"""The harness must be able to fail. These runs use a real `jq serve` whose storage is sabotaged
between a kill and the restart, and the verdict must catch it:

- amnesia: the WAL and snapshots are deleted, so jobs acknowledged before the kill are gone → lost;
- a server that dies without being killed ends the run with its exit code, at once;
- rollback: the data dir is put back to how it was at an earlier kill, so acks confirmed since
  are undone and those jobs are leased again → duplicates (and later submits lost).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

from jq_tool.chaos.harness import ChaosRun
from jq_tool.chaos.options import ChaosOptions
from jq_tool.chaos.report import ZERO_LOSS
from jq_tool.chaos.target import SpawnedServer


class AmnesiacServer(SpawnedServer):
    """Comes back from a kill with its WAL segments and snapshots gone (its keys kept)."""

    async def restart(self) -> None:
        for path in self.data_dir.iterdir():
            if path.suffix in (".wal", ".snap"):
                path.unlink()
        await super().restart()


class RollbackServer(SpawnedServer):
    """Comes back from its second kill with the data dir as it was at the first."""

    def __init__(self, data_dir: Path, **kwargs: object) -> None:
        super().__init__(data_dir, **kwargs)  # type: ignore[arg-type]
        self.backup = data_dir.parent / "backup"
        self.kills = 0

    async def restart(self) -> None:
        self.kills += 1
        if self.kills == 1:
            shutil.copytree(self.data_dir, self.backup)
        elif self.kills == 2:
            shutil.rmtree(self.data_dir)
            shutil.copytree(self.backup, self.data_dir)
        await super().restart()


async def test_wiped_storage_is_reported_as_lost(tmp_path: Path) -> None:
    server = AmnesiacServer(tmp_path / "data", log_path=tmp_path / "serve.log")
    options = ChaosOptions(
        jobs=150, workers=4, kills=1, kill_interval=0.8, submit_rate=100, wait=4, seed=5
    )
    try:
        report = await ChaosRun(options, server).run()
    finally:
        await server.stop()
    assert report.kills == 1
    assert report.lost > 0, report.to_text()
    assert not report.zero_loss
    assert report.result != ZERO_LOSS
    assert f"{report.lost} lost" in report.result
    assert all(lost.state == "MISSING" for lost in report.lost_jobs)


async def test_rolled_back_storage_is_reported_as_duplicates(tmp_path: Path) -> None:
    server = RollbackServer(tmp_path / "data", log_path=tmp_path / "serve.log")
    # Unthrottled submits and two workers keep a backlog: jobs submitted before the first kill
    # (in the backup) are still being acked after it, and the rollback undoes those acks.
    options = ChaosOptions(jobs=600, workers=2, kills=2, kill_interval=1.2, wait=4, seed=9)
    try:
        report = await ChaosRun(options, server).run()
    finally:
        await server.stop()
    assert report.kills == 2
    assert report.duplicates > 0, report.to_text()
    assert any(dup.kind == "executed_after_ack" for dup in report.duplicate_details)
    assert not report.zero_loss
    assert "duplicates" in report.result


async def test_server_dying_on_its_own_ends_the_run_with_its_exit(tmp_path: Path) -> None:
    server = SpawnedServer(tmp_path / "data", log_path=tmp_path / "serve.log")
    options = ChaosOptions(jobs=400, workers=2, submit_rate=100, wait=4, seed=1)
    run = ChaosRun(options, server)

    async def crash_behind_the_harness_back() -> None:
        while run.progress().submitted < 50:
            await asyncio.sleep(0.05)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)

    crash = asyncio.create_task(crash_behind_the_harness_back())
    try:
        report = await run.run()
    finally:
        crash.cancel()
        await server.stop()
    assert report.error is not None and "exited on its own with code -9" in report.error
    assert not report.verified
    assert not report.zero_loss
    assert report.kills == 0
