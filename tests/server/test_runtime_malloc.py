"""runtime.tune_malloc: after it, a big buffer is always its own mapping (given back to the OS
when freed), even after a bigger one was freed, which by glibc's default raises the threshold
and sends later big buffers to the heap, where their holes stay in RSS (issue 21's soak)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
from jq_tool.runtime import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "pinned":
    tune_malloc()
big = bytearray(8 << 20)  # mmapped; freeing it raises glibc's default threshold to 8 MiB
del big
before = libc.mallinfo2().hblkhd
buffer = bytearray(1 << 20)
print("mapped" if libc.mallinfo2().hblkhd - before >= 1 << 20 else "heap")
"""


def probe(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
    if "mallinfo2" in out.stderr:
        pytest.skip("the C library has no mallinfo2 (not glibc 2.33+)")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_big_buffers_stay_mapped_once_tuned() -> None:
    assert probe("default") == "heap"  # what happens without it: the threshold rose
    assert probe("pinned") == "mapped"
