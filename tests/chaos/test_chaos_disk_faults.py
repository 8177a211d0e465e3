"""Storage faults under a real `jq serve`: the disk filling up, and fsync failing.

- Disk full: the data dir lives on a 4 MiB tmpfs; a filler file takes the rest. Submits must be
  refused with 507 `storage_full`, nothing acknowledged may be lost (also across a kill -9), and
  the service must come back once the filler is deleted.
- fsync failure: the data dir lives on ext4 on a loop device whose backing file is sparse on a
  tiny tmpfs. When the tmpfs is full the block device fails writes with EIO, so the kernel's
  fdatasync really fails (no fault injection library, no FUSE). The submit whose fdatasync
  failed answers 504 `outcome_unknown` (its record is in the file), or 503 when a new
  segment's zero-fill failed before its record was written (then it must not exist), writes
  must stop, `/health` must say why, every acknowledged job must still be there after the
  storage is repaired (fsck) and the server restarted, and the failed submit retried with its
  key makes one job.

Both need root (mount); they skip with the reason when the machine does not allow it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from jq_tool.chaos.target import SpawnedServer


def _mount(*args: str) -> None:
    completed = subprocess.run(["mount", *args], capture_output=True, text=True)
    if completed.returncode != 0:
        pytest.skip(f"cannot mount here ({completed.stderr.strip()}): needs root")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        _umount(mount_point)


@contextlib.asynccontextmanager
async def _server(data_dir: Path, log_path: Path) -> AsyncIterator[SpawnedServer]:
    server = SpawnedServer(data_dir, log_path=log_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _client(server: SpawnedServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=10.0,
    )


def _fill(path: Path) -> None:
    """Write `path` until the filesystem is full. Unbuffered: a buffered file kept the part of
    its last chunk that did not fit and raised ENOSPC again when closed, whenever the free
    space did not end at a chunk's edge."""
    chunk = b"\0" * (64 * 1024)
    with path.open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(chunk)  # a short write, then ENOSPC
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        with contextlib.suppress(OSError):
            os.fsync(filler.fileno())


async def test_full_disk_refuses_submits_with_507_and_loses_nothing(
    small_fs: Path, tmp_path: Path
) -> None:
    data_dir = small_fs / "data"
    acknowledged: dict[str, str] = {}  # idempotency key -> job id
    refused: httpx.Response | None = None
    async with _server(data_dir, tmp_path / "serve.log") as server, _client(server) as client:
        for i in range(20):
            response = await client.post("/jobs", json={"payload": f"before-{i}"})
            assert response.status_code == 201, response.text
            acknowledged[f"before-{i}"] = response.json()["job_id"]

        _fill(small_fs / "filler")
        payload = "x" * 2048
        for i in range(500):
            key = f"full-{i}"
            response = await client.post("/jobs", json={"payload": payload, "idempotency_key": key})
            if response.status_code in (200, 201):
                acknowledged[key] = response.json()["job_id"]
                continue
            refused = response
            break
        assert refused is not None, "the disk never filled up"
        assert refused.status_code == 507, refused.text
        body = refused.json()
        assert body["code"] == "storage_full"
        assert "disk full" in body["error"]
        # Refused again while still full: the server did not fall over.
        again = await client.post("/jobs", json={"payload": payload})
        assert again.status_code == 507, again.text

        # Space returns: the same server takes writes again, no restart needed.
        (small_fs / "filler").unlink()
        response = await client.post("/jobs", json={"payload": "after-space-returned"})
        assert response.status_code == 201, response.text
        acknowledged["after"] = response.json()["job_id"]

        # Full again, then a crash while full; space returns before the restart.
        _fill(small_fs / "filler")
        await server.kill()
        (small_fs / "filler").unlink()
        await server.restart()
        for key, job_id in acknowledged.items():
            response = await client.get(f"/jobs/{job_id}")
            assert response.status_code == 200, (key, response.text)
            assert response.json()["state"] == "READY", (key, response.json())
        health = await client.get("/health")
        assert health.status_code == 200, health.text


async def test_a_full_disk_takes_the_files_kept_for_a_fallback_first(
    small_fs: Path, tmp_path: Path
) -> None:
    # The WAL keeps the snapshot before the newest and the log since it (a fallback for a
    # snapshot the disk damages); a snapshot that finds the disk full gives that room back.
    data_dir = small_fs / "data"
    env = {**os.environ, "JQ_SNAPSHOT_EVERY": "20", "JQ_SEGMENT_BYTES": "65536"}
    server = SpawnedServer(data_dir, log_path=tmp_path / "serve.log", env=env)
    await server.start()
    acknowledged: list[str] = []
    try:
        async with _client(server) as client:

            async def submit(payload: str) -> bool:
                response = await client.post("/jobs", json={"payload": payload})
                if response.status_code == 201:
                    acknowledged.append(response.json()["job_id"])
                    return True
                assert response.status_code == 507, response.text  # refused, never lost
                return False

            for i in range(400):  # ~60 KB a snapshot by the end, written every 100 records
                assert await submit(f"job-{i}")
            assert len(list(data_dir.glob("*.snap"))) == 2, sorted(os.listdir(data_dir))
            _fill(small_fs / "filler")
            filler = small_fs / "filler"
            os.truncate(filler, filler.stat().st_size - 48 * 1024)  # room for records only
            mark = len(server.log_text())
            for i in range(300):
                await submit(f"full-{i}")
                if "deleted the snapshot and log kept for a fallback" in server.log_text(mark):
                    break
            else:
                raise AssertionError(server.log_text(mark)[-3000:])
            failed = server.log_text(mark)
            assert "snapshot failed, will retry: [Errno 28] No space left on device" in failed
            filler.unlink()
            for i in range(150):  # room again: snapshots are written, one is kept again
                assert await submit(f"after-{i}")
            assert len(list(data_dir.glob("*.snap"))) == 2, sorted(os.listdir(data_dir))
        await server.kill()
        await server.restart()
        async with _client(server) as client:
            for job_id in acknowledged:
                response = await client.get(f"/jobs/{job_id}")
                assert response.status_code == 200, (job_id, response.text)
    finally:
        await server.stop()


@pytest.fixture
def failing_block_device(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """ext4 on a loop device backed by a sparse 64 MiB image on a 3 MiB tmpfs: writes past
    ~3 MiB fail at the block layer (EIO). Yields (mount point, backing tmpfs, image)."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    backing, mount_point = tmp_path / "backing", tmp_path / "ext4"
    backing.mkdir()
    mount_point.mkdir()
    _mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(backing))
    image = backing / "disk.img"
    try:
        subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        _mount("-o", "loop", str(image), str(mount_point))
        try:
            yield mount_point, backing, image
        finally:
            _umount(mount_point)
    finally:
        _umount(backing)


async def test_fsync_failure_stops_writes_and_health_says_why(
    failing_block_device: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    mount_point, backing, image = failing_block_device
    data_dir = mount_point / "data"
    acknowledged: list[str] = []
    async with _server(data_dir, tmp_path / "serve.log") as server, _client(server) as client:
        payload = "y" * 32 * 1024
        failed: httpx.Response | None = None
        failed_body: dict[str, str] = {}
        for i in range(400):
            body = {"payload": f"{i}:{payload}", "idempotency_key": f"fsync-{i}"}
            response = await client.post("/jobs", json=body)
            if response.status_code == 201:
                acknowledged.append(response.json()["job_id"])
                continue
            failed, failed_body = response, body
            break
        assert failed is not None, "the block device never failed"
        assert acknowledged, "nothing was written before the device failed"
        # What failed decides the answer. A record whose fdatasync failed is in the file and
        # what reached the disk is unknown: 504 "outcome unknown". Since segments are
        # zero-filled from the first one, a new segment made on the append path (the spare
        # pipeline, failing on this 3 MiB device too, had none ready) often fails first,
        # before the record is written: EIO answers 503 "unavailable" (not done, writes stop
        # for good), ENOSPC 507 "storage_full" (not done, refused until space returns). The
        # record's own failed fdatasync is also covered in process
        # (tests/engine/test_local_engine.py).
        codes = {503: "unavailable", 504: "outcome_unknown", 507: "storage_full"}
        assert failed.status_code in codes, failed.text
        assert failed.json()["code"] == codes[failed.status_code]
        not_done = failed.status_code != 504
        if failed.status_code != 507:  # a full disk refuses for now; the rest stops for good
            health = await client.get("/health")
            assert health.status_code == 503, health.text
            reason = health.json()["reason"]
            assert reason and ("fdatasync" in reason or "WAL" in reason), reason
            # Writes stay stopped: a later write must not be acknowledged on top of lost pages.
            later = await client.post("/jobs", json={"payload": "small"})
            assert later.status_code == 503, later.text

        # Repair the storage: give the device room, check the filesystem, mount it again.
        await server.kill()
        subprocess.run(["umount", str(mount_point)], check=True)
        subprocess.run(["mount", "-o", "remount,size=128m", str(backing)], check=True)
        fsck = subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, text=True)
        assert fsck.returncode in (0, 1, 2), fsck.stdout + fsck.stderr
        _mount("-o", "loop", str(image), str(mount_point))

        await server.restart()
        for job_id in acknowledged:
            response = await client.get(f"/jobs/{job_id}")
            assert response.status_code == 200, (job_id, response.text)
            assert response.json()["state"] == "READY"
        assert (await client.get("/health")).status_code == 200
        # The failed submit, retried with its key: one job, whichever way it went; a submit
        # answered "not done" must really not have been done.
        retried = [await client.post("/jobs", json=failed_body) for _ in range(2)]
        assert [r.status_code in (200, 201) for r in retried] == [True, True], retried
        if not_done:
            assert retried[0].status_code == 201, retried[0].text
        assert retried[0].json()["job_id"] == retried[1].json()["job_id"]
        assert retried[1].json()["duplicate"] is True
