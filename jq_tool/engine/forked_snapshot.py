"""Snapshots encoded and written by a forked child, the way Redis's BGSAVE works.

Encoding the state takes time in proportion to the jobs held (about 35 ms for 200k jobs and
270 ms for 1M here), and it cannot run beside the event loop: the state changes under it, and
the GIL would stop the loop anyway. `fork()` instead freezes a copy-on-write image of the
process in a few milliseconds; the child encodes that image and writes the snapshot file while
the parent keeps serving. The cost is memory: pages the child touches while encoding (and the
parent changes meanwhile) are copied, up to the size of the state in the worst case.

The child runs no event loop and takes no lock another thread could hold: it closes the WAL's
descriptors (so a crashed parent never leaves its directory lock held), disables the garbage
collector, encodes, writes with `write_snapshot_file` and leaves with `os._exit`. It dies with
its parent (PR_SET_PDEATHSIG), so no orphan writes a snapshot beside a restarted server.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from jq_tool.core.wal import write_snapshot_file
from jq_tool.core.wal_format import encode_snapshot_header
from jq_tool.engine.child_process import die_with_parent

_OK, _OS_ERROR, _OTHER_ERROR = 0, 1, 2


class SnapshotChildFailed(RuntimeError):
    """The child could not encode the state (a bug, not a storage problem)."""


class ForkedSnapshot:
    """A snapshot being written by a child process; `wait` (blocking) reports how it ended."""

    def __init__(self, pid: int, report_fd: int) -> None:
        self.pid = pid
        self._report_fd = report_fd

    def wait(self) -> None:
        """Block until the child is done; raise OSError (errno kept: a full disk is worth a
        retry) or SnapshotChildFailed if it did not write the snapshot."""
        chunks = []
        try:
            while chunk := os.read(self._report_fd, 4096):
                chunks.append(chunk)
        finally:
            os.close(self._report_fd)
        _pid, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        report = b"".join(chunks).decode("utf-8", "replace")
        if code == _OK:
            return
        if code == _OS_ERROR:
            number, _, message = report.partition(" ")
            raise OSError(int(number) if number.isdigit() else 0, message)
        reason = report or (f"killed by signal {-code}" if code < 0 else f"exit code {code}")
        raise SnapshotChildFailed(f"snapshot child failed: {reason}")


def fork_snapshot(
    encode: Callable[[], bytes], path: Path, index: int, close_fds: Iterable[int] = ()
) -> ForkedSnapshot:
    """Fork a child that writes `encode()` as the snapshot at `index` to `path`. Call it where
    the state matches exactly the records before `index`: the child sees the state as of the
    fork."""
    parent = os.getpid()
    close_fds = list(close_fds)
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its work is checked through the parent
        code = _OTHER_ERROR
        try:
            os.close(report_read)
            die_with_parent(parent)
            # Signals are the parent's business: none may reach its event loop through the
            # inherited wakeup descriptor, and a termination ends this child at once.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for fd in close_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            gc.disable()  # a collection would touch (and so copy) every page of the heap
            data = encode()
            write_snapshot_file(path, encode_snapshot_header(index, data), data)
            code = _OK
        except OSError as exc:
            code = _OS_ERROR
            # Not str(exc): its "[Errno N]" would come twice, the parent's OSError adds it.
            message = exc.strerror or str(exc)
            if exc.filename:
                message += f": {exc.filename}"
            _report(report_write, f"{exc.errno or 0} {message}")
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, never raised here
            _report(report_write, repr(exc))
        finally:
            os._exit(code)
    os.close(report_write)
    return ForkedSnapshot(pid, report_read)


def _report(fd: int, text: str) -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError):
        os.write(fd, text.encode("utf-8", "replace")[:4096])
