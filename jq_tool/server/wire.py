"""The wire shapes of docs/api.md: how a Job, a leased job and the clock look in JSON.

Times inside the queue are epoch milliseconds; on the wire they are RFC 3339 UTC strings with
milliseconds (`2026-11-28T10:00:00.123Z`). Responses are encoded with msgspec: the server's
per-request budget is a few microseconds, and stdlib json would spend most of it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.responses import Response

from jq_tool.core.model import Job

_encoder = msgspec.json.Encoder()


class JSONResponse(Response):
    """A JSON response encoded by msgspec (Starlette's own uses stdlib json)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def encode_json(content: Any) -> bytes:
    return _encoder.encode(content)


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def parse_rfc3339(text: str) -> int:
    """RFC 3339 → epoch ms. A time without an offset is taken as UTC. Raises ValueError."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def job_body(job: Job, *, with_payload: bool = True) -> dict[str, Any]:
    """GET /jobs/{id}; GET /jobs lists the same without the payload."""
    body: dict[str, Any] = {
        "job_id": job.id,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "created_at": rfc3339(job.created_at),
        "result": job.result,
        "result_error": job.result_error,
        "queue": job.queue,
        "priority": job.priority,
        "run_at": rfc3339(job.run_at),
        "lease_until": rfc3339(job.lease_until),
        "updated_at": rfc3339(job.updated_at) if job.updated_at else None,
        "idempotency_key": job.idempotency_key,
    }
    if with_payload:
        body["payload"] = job.payload
    return body


def leased_body(job: Job) -> dict[str, Any]:
    """One entry of POST /jobs/lease."""
    return {
        "job_id": job.id,
        "payload": job.payload,
        "lease_until": rfc3339(job.lease_until),
        "attempt": job.attempts,
        "lease_id": job.lease_id,
        "queue": job.queue,
        "priority": job.priority,
        "max_retries": job.max_retries,
    }
