"""An fdatasync that the kernel runs while the caller goes on: Linux AIO's `IOCB_CMD_FDSYNC`
(Linux 4.18+), its completion signalled on an eventfd that an event loop watches.

Why (issue 20, the worker's path): under 8 worker threads the WAL thread's hand-off alone took
p50 176 µs before its sync began, more than the disk's fdatasync (~100 µs): the thread woke,
then waited for the GIL, which the event loop holds while it reads requests, until the loop
went idle (a shorter `sys.setswitchinterval` or pinning the thread to the other CPU did not
change it); and the two threads spent 124 + 36 µs of CPU a cycle. Here the sync is queued to
the kernel (a kworker runs `vfs_fsync_range`, the same datasync an `fdatasync` call makes),
the loop keeps reading requests, and the completion wakes the loop through the eventfd: no
thread of ours, no GIL hand-off (112 µs of CPU a cycle; docs/benchmarks.md, sixth cut).

The caller writes the data first (a plain `pwrite`, into the page cache), then `submit`s the
sync of that descriptor; `completed` (called when the eventfd is readable) returns the result
of each finished sync: 0, or the errno of a failed one (treated exactly as a failed
`fdatasync`). One context per WAL; a few syncs in flight at most.

`open_syncer()` returns None where AIO cannot be used (another architecture, a kernel or a
seccomp profile without io_setup, the system's aio-max-nr reached): the caller then syncs in
its thread as before. Nothing here is needed for correctness, only for speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os

# System call numbers: AIO has no glibc wrapper (libaio is a separate library).
_SYSCALLS = {
    "x86_64": {"io_setup": 206, "io_destroy": 207, "io_getevents": 208, "io_submit": 209},
    "aarch64": {"io_setup": 0, "io_destroy": 1, "io_submit": 2, "io_getevents": 4},
}
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1  # signal the eventfd in aio_resfd on completion
_MAX_EVENTS = 8


class _Iocb(ctypes.Structure):
    """`struct iocb` of <linux/aio_abi.h> on a little-endian 64-bit machine (64 bytes)."""

    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class _IoEvent(ctypes.Structure):
    """`struct io_event`: which request (`data`) and its result (`res`, 0 or -errno)."""

    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


class AioSyncer:
    """Queued fdatasyncs of one process, completed through one eventfd (`fileno`)."""

    def __init__(self, libc: ctypes.CDLL, numbers: dict[str, int], context: int, efd: int):
        self._syscall = libc.syscall
        self._numbers = numbers
        self._context = ctypes.c_ulong(context)
        self.fileno = efd
        self._next_id = 0
        # Each request's iocb must stay alive until it completes: kept here by id.
        self._requests: dict[int, _Iocb] = {}
        self._events = (_IoEvent * _MAX_EVENTS)()
        self._no_wait = (ctypes.c_long * 2)(0, 0)  # a zero timespec: io_getevents never blocks

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def submit(self, fd: int) -> int:
        """Queue an fdatasync of `fd`; returns its id. Raises OSError if the kernel refuses it
        (nothing is queued then; the caller syncs some other way)."""
        request_id = self._next_id
        self._next_id += 1
        iocb = _Iocb()
        iocb.aio_data = request_id
        iocb.aio_lio_opcode = _IOCB_CMD_FDSYNC
        iocb.aio_fildes = fd
        iocb.aio_flags = _IOCB_FLAG_RESFD
        iocb.aio_resfd = self.fileno
        pointers = (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(iocb))
        submitted = self._syscall(self._numbers["io_submit"], self._context, 1, pointers)
        if submitted != 1:
            code = ctypes.get_errno() if submitted < 0 else errno.EAGAIN
            raise OSError(code, f"io_submit of an fdatasync: {os.strerror(code)}")
        self._requests[request_id] = iocb
        return request_id

    def completed(self) -> list[tuple[int, int]]:
        """(id, 0 or errno) of each sync finished since the last call; [] if none. Called when
        the eventfd is readable (it may be readable with nothing left: a spurious wake)."""
        with contextlib.suppress(BlockingIOError):  # already read by an earlier call
            os.eventfd_read(self.fileno)
        done: list[tuple[int, int]] = []
        while self._requests:
            count = self._syscall(
                self._numbers["io_getevents"],
                self._context,
                0,
                _MAX_EVENTS,
                self._events,
                self._no_wait,
            )
            if count < 0:
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                raise OSError(code, f"io_getevents: {os.strerror(code)}")
            for event in self._events[:count]:
                self._requests.pop(event.data, None)
                done.append((int(event.data), -int(event.res) if event.res < 0 else 0))
            if count < _MAX_EVENTS:
                break
        return done

    def close(self) -> None:
        """Destroy the context (it waits for syncs still in flight) and close the eventfd."""
        if self._context.value:
            self._syscall(self._numbers["io_destroy"], self._context)
            self._context = ctypes.c_ulong(0)
            self._requests.clear()
        if self.fileno >= 0:
            os.close(self.fileno)
            self.fileno = -1


def open_syncer(depth: int = 4) -> AioSyncer | None:
    """An AioSyncer with room for `depth` syncs in flight, or None where AIO is not usable."""
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None or not hasattr(os, "eventfd") or ctypes.sizeof(_Iocb) != 64:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    context = ctypes.c_ulong(0)
    if libc.syscall(numbers["io_setup"], depth, ctypes.byref(context)) != 0:
        return None  # ENOSYS, EPERM (seccomp), EAGAIN (aio-max-nr reached)
    try:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    except OSError:
        libc.syscall(numbers["io_destroy"], context)
        return None
    return AioSyncer(libc, numbers, context.value, efd)
