"""The kernel's queued fdatasync (core/aio_sync.py), on a real file: no fake kernel."""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path

import pytest

from jq_tool.core.aio_sync import AioSyncer, open_syncer


@pytest.fixture
def syncer() -> AioSyncer:
    made = open_syncer()
    if made is None:
        pytest.skip("Linux AIO is not available here (io_setup refused)")
    yield made
    made.close()


def wait_for(syncer: AioSyncer, count: int) -> list[tuple[int, int]]:
    done: list[tuple[int, int]] = []
    while len(done) < count:
        readable, _, _ = select.select([syncer.fileno], [], [], 10.0)
        assert readable, "no completion within 10 s"
        done += syncer.completed()
    return done


def test_aio_is_available_on_linux_here() -> None:
    """The machines jq is built and tested on have AIO: the fast path must not go unnoticed
    because a fallback hid its failure to open."""
    if not Path("/proc/sys/fs/aio-max-nr").exists():
        pytest.skip("this kernel has no AIO")
    syncer = open_syncer()
    assert syncer is not None
    syncer.close()


def test_a_queued_sync_of_written_data_completes_with_success(
    syncer: AioSyncer, tmp_path: Path
) -> None:
    fd = os.open(tmp_path / "segment", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, bytes(1 << 16), 0)
        os.fsync(fd)
        ids = []
        for round_ in range(20):
            os.pwrite(fd, f"record {round_}".encode(), round_ * 64)
            ids.append(syncer.submit(fd))
            assert syncer.in_flight == 1
            assert wait_for(syncer, 1) == [(ids[-1], 0)]
            assert syncer.in_flight == 0
        assert len(set(ids)) == 20
        assert os.pread(fd, 9, 19 * 64) == b"record 19"
    finally:
        os.close(fd)


def test_several_syncs_in_flight_each_complete_once(syncer: AioSyncer, tmp_path: Path) -> None:
    fds = [os.open(tmp_path / f"file-{n}", os.O_RDWR | os.O_CREAT, 0o600) for n in range(3)]
    try:
        for fd in fds:
            os.pwrite(fd, b"x" * 100, 0)
        ids = {syncer.submit(fd) for fd in fds}
        done = wait_for(syncer, 3)
        assert sorted(done) == sorted((request, 0) for request in ids)
        assert syncer.completed() == []  # nothing left; a spurious wake finds nothing
    finally:
        for fd in fds:
            os.close(fd)


def test_a_sync_the_kernel_cannot_queue_raises_at_once(syncer: AioSyncer, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "gone", os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(OSError) as refused:
        syncer.submit(fd)  # a closed descriptor
    assert refused.value.errno == errno.EBADF
    assert syncer.in_flight == 0
    read, write = os.pipe()
    try:
        with pytest.raises(OSError) as refused:
            syncer.submit(write)  # a pipe has nothing to sync
        assert refused.value.errno == errno.EINVAL
    finally:
        os.close(read)
        os.close(write)


def test_close_waits_for_what_is_in_flight_and_releases_the_eventfd(tmp_path: Path) -> None:
    syncer = open_syncer()
    if syncer is None:
        pytest.skip("Linux AIO is not available here")
    fd = os.open(tmp_path / "segment", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"y" * 4096, 0)
        syncer.submit(fd)
        eventfd = syncer.fileno
        syncer.close()
        assert syncer.fileno == -1
        with pytest.raises(OSError):
            os.fstat(eventfd)
        syncer.close()  # twice is harmless
    finally:
        os.close(fd)
