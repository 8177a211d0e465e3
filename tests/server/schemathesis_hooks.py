"""Schemathesis hooks for tests/server/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

A lease may long-poll for up to 30 s, and most generated queues are empty: a valid `wait_ms` is
shortened to 100 ms so the run spends its time on requests, not on waiting. The request stays
schema-valid; an invalid `wait_ms` (negative data) is left as generated.
"""

from __future__ import annotations

from typing import Any

import schemathesis

SHORT_WAIT_MS = 100


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    body = case.body
    if case.path != "/jobs/lease" or not isinstance(body, dict):
        return
    wait = body.get("wait_ms")
    if (
        isinstance(wait, int | float)
        and not isinstance(wait, bool)
        and SHORT_WAIT_MS < wait <= 30_000
        and float(wait).is_integer()
    ):
        body["wait_ms"] = SHORT_WAIT_MS
