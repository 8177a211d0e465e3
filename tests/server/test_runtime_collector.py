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
