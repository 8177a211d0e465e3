"""runtime.collector_paused, in a fresh interpreter each (freezing is process-wide): what
recovery made leaves the young generation without a collection walking it, staying frozen
where the process froze its long-lived objects before (jq serve), going to the oldest
generation elsewhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import gc, sys
from jq_tool.runtime import collector_paused

gc.set_threshold(50_000, 50, 1000)  # jq serve's (runtime.tune_gc)
if sys.argv[1] == "frozen-before":
    gc.freeze()
with collector_paused():
    restored = [(i, i + 1) for i in range(100_000)]  # tracked, as restored heap entries are
print(len(gc.get_objects(generation=0)), gc.get_freeze_count(), len(gc.get_objects(generation=2)))
"""


@pytest.mark.parametrize("before", ["frozen-before", "nothing-frozen"])
def test_what_recovery_made_is_not_left_to_a_young_collection(before: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, before], capture_output=True, text=True, check=True
    ).stdout
    young, frozen, oldest = map(int, out.split())
    assert young < 10_000  # the 100k entries would be here, for the next collection to walk
    if before == "frozen-before":
        assert frozen >= 100_000 and oldest < 100_000
    else:
        assert frozen == 0 and oldest >= 100_000


def test_serving_thresholds_collect_young_often_and_everything_as_rarely_as_at_start() -> None:
    """Short young passes while serving (each walks what survived since the last: at 50,000 a
    pass paused requests 5-15 ms at peak load), full collections no more often than the start
    thresholds allow (a full pass walks every tracked object of a large queue)."""
    probe = (
        "import gc; from jq_tool.runtime import tune_gc, tune_gc_for_serving\n"
        "tune_gc(); start = gc.get_threshold()\n"
        "tune_gc_for_serving(); print(*start, *gc.get_threshold())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    s0, s1, s2, v0, v1, v2 = map(int, out.split())
    assert v0 <= 5_000 < s0
    assert v0 * v1 * v2 >= s0 * s1 * s2  # a full collection no sooner than before
