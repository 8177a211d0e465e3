"""What every child process of jq does first: die with its parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal


def die_with_parent(parent_pid: int | None = None) -> None:
    """In a child: SIGKILL it when the jq process dies, even by kill -9 (PR_SET_PDEATHSIG), so
    that no child outlives the node it belongs to. Given the parent's pid, a child whose parent
    died before the request took effect exits at once."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(3)
