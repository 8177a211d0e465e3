"""The jq HTTP API (docs/api.md), one request per route: each builder returns a `Call` that
fully describes the request (method, path, JSON body, query), how to read its answer into a
typed result, whether it may be retried, and how long it may long-poll. Both clients send the
same Calls; only how the bytes travel differs.

A submit always carries an idempotency key (a uuid4 unless the caller names one), so it may be
retried: a retry whose first try landed returns the same job id instead of making a second job.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import msgspec

from jq_tool.sdk.errors import JobNotFound, KeyNotFound, NotFound, ScheduleNotFound
from jq_tool.sdk.times import format_time
from jq_tool.sdk.types import (
    MAX_PROGRESS_NOTE,
    BatchAck,
    CreatedKey,
    DeadGroups,
    DeadGroupSettled,
    Explanation,
    Extended,
    Job,
    JobSpec,
    Key,
    LeasedJob,
    Page,
    Progress,
    QueueSettings,
    RevokedKey,
    Schedule,
    SchedulePage,
    Settled,
    Settlement,
    Stats,
    SubmitResult,
)

T = TypeVar("T")

MAX_BATCH = 1000  # the server's limit per POST /jobs/batch
MAX_WAIT_MS = 30_000  # the server's limit for a long-poll lease
MAX_LEASE_JOBS = 100  # the server's limit for max_jobs (lease, and an ack's lease_next)

_json = msgspec.json.Encoder()
# What a path segment may hold unquoted (RFC 3986 unreserved): a uuid job id needs no quoting,
# and urllib's quote() cost a few µs per call.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")


def segment(value: str) -> str:
    """`value` as one path segment, percent-encoded where it must be."""
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="")


class _RandomBytes:
    """os.urandom's bytes, fetched 4 KiB at a time: a getrandom call per submit was ~10 µs of a
    one-thread client's ~80 µs of its own work per call. Thread-safe (a slice and an index
    bump under a lock), and a forked child starts with none of its parent's bytes, so two
    processes never hand out the same key."""

    _CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            at = self._at
            if at + count > len(self._buffer):
                self._buffer, at = os.urandom(self._CHUNK), 0
            self._at = at + count
            return self._buffer[at : at + count]

    def forget(self) -> None:
        """In a forked child: the parent's bytes are the parent's."""
        self._lock = threading.Lock()
        self._buffer, self._at = b"", 0


_random_bytes = _RandomBytes()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_random_bytes.forget)


def new_idempotency_key() -> str:
    """A random (version 4) UUID string, as str(uuid.uuid4()) gives it, for a fourth of the cost
    (it is made for every submit)."""
    h = _random_bytes.take(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


@dataclass
class Call(Generic[T]):
    """One request, fully described, plus how to read its answer."""

    method: str
    path: str
    decode: Callable[[int, bytes], T]
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    not_found: type[NotFound] = NotFound
    # Retried on ServerUnavailable: reads, and writes made idempotent by a key.
    retry: bool = False
    # Seconds the server may hold the request (a long poll): added to the call's timeout.
    long_poll: float = 0.0
    # A 404 that is an ordinary answer (lease: no job available), not an error.
    on_404: Callable[[], T] | None = None
    # The one queue the request is for (sharded mode: the client may send it to a node
    # holding the queue's shard, sdk/routing.py); None when it names none or several.
    queue: str | None = None

    def encoded_body(self) -> bytes | None:
        if self.body is None:
            return None
        try:
            return _json.encode(self.body)
        except UnicodeEncodeError as exc:
            raise not_utf_8(f"{self.method} {self.path}", exc) from None


def unencodable(exc: UnicodeEncodeError) -> str:
    """The characters UTF-8 could not encode (lone surrogates), written as escapes."""
    return exc.object[exc.start : exc.end].encode("utf-8", "backslashreplace").decode()


def not_utf_8(what: str, exc: UnicodeEncodeError) -> ValueError:
    """Text JSON cannot carry, refused before anything is sent: a lone surrogate, as a
    non-UTF-8 file name decoded with surrogateescape (os.listdir, sys.argv) holds one."""
    return ValueError(
        f"{what}: not UTF-8 text: '{unencodable(exc)}' at character {exc.start} of a string "
        "(a lone surrogate: JSON cannot carry it)"
    )


def encode_payload(payload: object) -> str:
    """The API's payload is a string: a str goes as is, anything else as its JSON text."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes | bytearray):
        try:
            return bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("payload bytes must be UTF-8 text") from exc
    try:
        return _json.encode(payload).decode("utf-8")
    except UnicodeEncodeError as exc:
        raise not_utf_8("payload", exc) from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"payload is neither a str nor JSON-encodable: {exc}") from exc


def job_body(spec: JobSpec) -> dict[str, Any]:
    """The POST /jobs body for one job (also one entry of a batch)."""
    if spec.delay is not None and spec.run_at is not None:
        raise ValueError("give delay or run_at, not both")
    body: dict[str, Any] = {
        "payload": encode_payload(spec.payload),
        "max_retries": spec.max_retries,
        "priority": spec.priority,
        "queue": spec.queue,
        "idempotency_key": spec.idempotency_key or new_idempotency_key(),
    }
    if spec.delay is not None:
        seconds = (
            spec.delay.total_seconds() if isinstance(spec.delay, timedelta) else float(spec.delay)
        )
        if seconds < 0:
            raise ValueError("delay must not be negative")
        body["delay_ms"] = int(round(seconds * 1000))
    if spec.run_at is not None:
        body["run_at"] = format_time(spec.run_at)
    if spec.unique_key is not None:
        body["unique_key"] = spec.unique_key
    if spec.unique_scope is not None:
        body["unique_scope"] = spec.unique_scope
    if spec.unique_period is not None:
        body["unique_period_ms"] = _milliseconds(spec.unique_period, "unique_period")
    if spec.depends_on:
        body["depends_on"] = list(spec.depends_on)
    if spec.on_parent_failure is not None:
        body["on_parent_failure"] = spec.on_parent_failure
    return body


def as_job_spec(item: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(item, JobSpec):
        return item
    try:
        return JobSpec(**dict(item))
    except TypeError as exc:
        raise ValueError(f"not a job spec: {exc}") from exc


def submit_spec(
    payload: object,
    max_retries: int,
    priority: int,
    delay: float | timedelta | None,
    run_at: datetime | None,
    queue: str,
    idempotency_key: str | None,
    **flow: Any,
) -> JobSpec:
    """`flow`: JobSpec's unique_key, unique_scope, unique_period, depends_on and
    on_parent_failure."""
    return JobSpec(
        payload=payload,
        max_retries=max_retries,
        priority=priority,
        delay=delay,
        run_at=run_at,
        queue=queue,
        idempotency_key=idempotency_key or new_idempotency_key(),
        **flow,
    )


def keyed_specs(jobs: Iterable[JobSpec | Mapping[str, Any]]) -> list[JobSpec]:
    """The jobs of a batch with their idempotency keys fixed now: every retry of a chunk must
    send the same ones. Copies: the caller's JobSpecs are left as they were."""
    return [
        msgspec.structs.replace(spec, idempotency_key=spec.idempotency_key or new_idempotency_key())
        for spec in map(as_job_spec, jobs)
    ]


def batches(specs: list[JobSpec]) -> list[list[JobSpec]]:
    """A batch submit's requests: MAX_BATCH jobs each."""
    return [specs[start : start + MAX_BATCH] for start in range(0, len(specs), MAX_BATCH)]


# --- answers -------------------------------------------------------------------------------


def _decoder(kind: Any) -> Callable[[int, bytes], Any]:
    decoder = msgspec.json.Decoder(kind)

    def decode(status: int, content: bytes) -> Any:
        return decoder.decode(content)

    return decode


class _BatchAnswer(msgspec.Struct):
    results: list[SubmitResult]


_read_submit = msgspec.json.Decoder(SubmitResult)
_read_batch = msgspec.json.Decoder(_BatchAnswer)
_read_lease = msgspec.json.Decoder(list[LeasedJob] | LeasedJob)
_read_job = _decoder(Job)
_read_page = _decoder(Page)
_read_stats = _decoder(Stats)
_read_health = _decoder(dict[str, Any])
_read_settled = _decoder(Settled)
_read_batch_ack = _decoder(BatchAck)
_read_extended = _decoder(Extended)
_read_created_key = _decoder(CreatedKey)
_read_keys = _decoder(list[Key])
_read_revoked_key = _decoder(RevokedKey)
_read_schedule = _decoder(Schedule)
_read_schedule_page = _decoder(SchedulePage)
_read_queue = _decoder(QueueSettings)


def _decode_submit(status: int, content: bytes) -> str:
    return _read_submit.decode(content).job_id or ""


def _decode_batch(status: int, content: bytes) -> list[SubmitResult]:
    return _read_batch.decode(content).results


def _decode_lease(status: int, content: bytes) -> list[LeasedJob]:
    data = _read_lease.decode(content)
    return data if isinstance(data, list) else [data]


def _no_jobs() -> list[LeasedJob]:
    return []


def _nothing(status: int, content: bytes) -> None:
    return None


# --- requests, one per API route -----------------------------------------------------------


def submit_call(spec: JobSpec) -> Call[str]:
    return Call("POST", "/jobs", _decode_submit, body=job_body(spec), retry=True, queue=spec.queue)


def batch_call(specs: list[JobSpec]) -> Call[list[SubmitResult]]:
    body = {"jobs": [job_body(spec) for spec in specs]}
    queues = {spec.queue for spec in specs}
    queue = queues.pop() if len(queues) == 1 else None
    return Call("POST", "/jobs/batch", _decode_batch, body=body, retry=True, queue=queue)


def get_call(job_id: str) -> Call[Job]:
    path = f"/jobs/{segment(job_id)}"
    return Call("GET", path, _read_job, not_found=JobNotFound, retry=True)


def list_call(
    state: str | None,
    queue: str | None,
    limit: int | None,
    cursor: str | None,
    id_prefix: str | None = None,
    error: str | None = None,
) -> Call[Page]:
    params = {"state": state, "queue": queue, "limit": limit, "cursor": cursor}
    # A search (docs/api.md): a bounded scan, so a page may be short with a next cursor.
    params.update(id_prefix=id_prefix, error=error)
    params = {name: value for name, value in params.items() if value is not None}
    if isinstance(params.get("state"), str):
        params["state"] = str(params["state"]).upper()
    return Call("GET", "/jobs", _read_page, params=params, retry=True)


def stats_call() -> Call[Stats]:
    return Call("GET", "/stats", _read_stats, retry=True)


def health_call() -> Call[dict[str, Any]]:
    return Call("GET", "/health", _read_health, retry=False)


def settle_call(job_id: str, action: str, body: Any = None) -> Call[Settled]:
    path = f"/jobs/{segment(job_id)}/{action}"
    return Call("POST", path, _read_settled, body=body or {}, not_found=JobNotFound)


def ack_call(job_id: str, result: object, lease_id: str | None) -> Call[Settled]:
    body: dict[str, Any] = {"result": None if result is None else encode_payload(result)}
    if lease_id is not None:
        body["lease_id"] = lease_id
    return settle_call(job_id, "ack", body)


def fail_call(job_id: str, error: str, lease_id: str | None, retry: bool = True) -> Call[Settled]:
    body: dict[str, Any] = {"result_error": str(error)}
    if lease_id is not None:
        body["lease_id"] = lease_id
    if not retry:
        body["retry"] = False  # final: DEAD at once (a server before it ignores the field)
    return settle_call(job_id, "ack", body)


def release_call(job_id: str, lease_id: str | None, delay: float | timedelta) -> Call[Settled]:
    """POST /jobs/{id}/release: the lease given back, the job READY again after `delay`
    (seconds or a timedelta), the attempt not counted."""
    body: dict[str, Any] = {"delay_ms": _milliseconds(delay, "delay")}
    if lease_id is not None:
        body["lease_id"] = lease_id
    return settle_call(job_id, "release", body)


def ack_entry(settlement: Settlement) -> dict[str, Any]:
    """One entry of POST /jobs/ack."""
    entry: dict[str, Any] = {"job_id": settlement.job_id}
    if settlement.lease_id is not None:
        entry["lease_id"] = settlement.lease_id
    if settlement.error is not None:
        entry["result_error"] = str(settlement.error)
        if not settlement.retry:
            entry["retry"] = False
    elif settlement.result is not None:
        entry["result"] = encode_payload(settlement.result)
    return entry


def ack_many_call(
    acks: list[dict[str, Any]], lease_next: int, queue: str, lease_ms: int | None
) -> Call[BatchAck]:
    """POST /jobs/ack: up to MAX_BATCH entries (`ack_entry`), and with `lease_next` > 0 up to
    that many jobs of `queue` leased in the same write. Not retried, as a single ack is not:
    the worker decides what a lost answer means."""
    body: dict[str, Any] = {"acks": acks}
    if lease_next > 0:
        lease: dict[str, Any] = {"queue": queue, "max_jobs": min(MAX_LEASE_JOBS, int(lease_next))}
        if lease_ms is not None:
            lease["lease_ms"] = int(lease_ms)
        body["lease_next"] = lease
    return Call("POST", "/jobs/ack", _read_batch_ack, body=body)


def extend_call(
    job_id: str,
    lease_id: str | None,
    lease_ms: int | None,
    progress: float | None = None,
    note: str = "",
) -> Call[Extended]:
    body: dict[str, Any] = {}
    if progress is not None:  # a progress report with the extension (issue 19)
        problem = progress_problem(progress, note)
        if problem:
            raise ValueError(problem)
        body["progress"], body["note"] = float(progress), note
    if lease_id is not None:
        body["lease_id"] = lease_id
    if lease_ms is not None:
        body["lease_ms"] = int(lease_ms)
    path = f"/jobs/{segment(job_id)}/extend"
    return Call("POST", path, _read_extended, body=body, not_found=JobNotFound)


def lease_call(
    queue: str, wait: float | timedelta, max_jobs: int, lease_ms: int | None
) -> Call[list[LeasedJob]]:
    seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
    wait_ms = max(0, min(MAX_WAIT_MS, int(seconds * 1000)))
    body: dict[str, Any] = {"queue": queue, "wait_ms": wait_ms, "max_jobs": int(max_jobs)}
    if lease_ms is not None:
        body["lease_ms"] = int(lease_ms)
    return Call(
        "POST",
        "/jobs/lease",
        _decode_lease,
        body=body,
        long_poll=wait_ms / 1000,
        on_404=_no_jobs,
        queue=queue,
    )


def events_call() -> Call[None]:
    """`GET /events`: its body is a stream, read by sdk/sse.py; this reads only a refusal."""
    return Call("GET", "/events", _nothing)


def create_key_call(name: str, owner_id: str, type: str) -> Call[CreatedKey]:
    body = {"name": name, "owner_id": owner_id, "type": type}
    return Call("POST", "/admin/keys", _read_created_key, body=body)


def list_keys_call(all: bool) -> Call[list[Key]]:
    path = "/admin/keys" if all else "/keys"
    return Call("GET", path, _read_keys, retry=True)


_KEY_ID = re.compile(r"(client|worker|admin)_[0-9a-f]{16}\Z")
_SECRET = re.compile(r"(client|worker|admin)_[A-Za-z0-9_-]{16,128}\Z")


def key_id_of(key: str) -> str:
    """The public id of a key (docs/api.md: `<type>_` and the first 16 hex digits of the
    SHA-256 of the key): a key id as given, a full key turned into its id here, so that a
    secret never travels in a URL. Anything else is returned as is (the server answers 404)."""
    if _KEY_ID.match(key):
        return key
    secret = _SECRET.match(key)
    if secret is None:
        return key
    return f"{secret.group(1)}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def revoke_key_call(key: str) -> Call[RevokedKey]:
    path = f"/keys/{segment(key_id_of(key))}"
    return Call("DELETE", path, _read_revoked_key, not_found=KeyNotFound)


# --- schedules (periodic jobs) ------------------------------------------------------------


def _milliseconds(value: float | timedelta, name: str) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{name} must not be negative")
    return int(round(seconds * 1000))


def schedule_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule body from the client method's arguments: None dropped (the server's
    default, or no change), the payload as the API's string, `grace` (seconds or a
    timedelta) as `grace_ms`."""
    body = {name: value for name, value in fields.items() if value is not None}
    if "payload" in body:
        body["payload"] = encode_payload(body["payload"])
    if "grace" in body:
        body["grace_ms"] = _milliseconds(body.pop("grace"), "grace")
    return body


def _schedule_path(name: str, action: str = "") -> str:
    path = f"/schedules/{quote(name, safe='')}"
    return f"{path}/{action}" if action else path


def create_schedule_call(fields: Mapping[str, Any]) -> Call[Schedule]:
    # Retried: the same definition again answers the schedule it made (200), not a second one.
    body = schedule_fields(fields)
    return Call("POST", "/schedules", _read_schedule, body=body, retry=True)


def list_schedules_call(cursor: str | None, limit: int | None) -> Call[SchedulePage]:
    params = {name: v for name, v in (("cursor", cursor), ("limit", limit)) if v is not None}
    return Call("GET", "/schedules", _read_schedule_page, params=params, retry=True)


def get_schedule_call(name: str) -> Call[Schedule]:
    path = _schedule_path(name)
    return Call("GET", path, _read_schedule, not_found=ScheduleNotFound, retry=True)


def update_schedule_call(name: str, fields: Mapping[str, Any]) -> Call[Schedule]:
    # Retried: setting the same fields again changes nothing more.
    return Call(
        "PATCH",
        _schedule_path(name),
        _read_schedule,
        body=schedule_fields(fields),
        not_found=ScheduleNotFound,
        retry=True,
    )


def pause_schedule_call(name: str, paused: bool) -> Call[Schedule]:
    path = _schedule_path(name, "pause" if paused else "resume")
    return Call("POST", path, _read_schedule, body={}, not_found=ScheduleNotFound, retry=True)


def _queue_path(name: str, action: str = "") -> str:
    path = f"/queues/{quote(name, safe='')}"
    return f"{path}/{action}" if action else path


def get_queue_call(name: str) -> Call[QueueSettings]:
    return Call("GET", _queue_path(name), _read_queue, retry=True)


def set_queue_call(fields: Mapping[str, Any], name: str) -> Call[QueueSettings]:
    """PUT /queues/{name}: None fields are left out (kept as they are); `rate_period` in
    seconds or a timedelta. Retried: setting the same values again changes nothing more."""
    body = {key: value for key, value in fields.items() if value is not None}
    if "rate_period" in body:
        body["rate_period_ms"] = _milliseconds(body.pop("rate_period"), "rate_period")
    if "max_latency" in body:
        body["max_latency_ms"] = _milliseconds(body.pop("max_latency"), "max_latency")
    return Call("PUT", _queue_path(name), _read_queue, body=body, retry=True)


def pause_queue_call(name: str, paused: bool) -> Call[QueueSettings]:
    path = _queue_path(name, "pause" if paused else "resume")
    return Call("POST", path, _read_queue, body={}, retry=True)


def delete_schedule_call(name: str) -> Call[Schedule]:
    path = _schedule_path(name)
    return Call("DELETE", path, _read_schedule, not_found=ScheduleNotFound)


# --- insight (issue 19) --------------------------------------------------------------------

_read_explanation = _decoder(Explanation)
_read_dead_groups = _decoder(DeadGroups)
_read_group_settled = _decoder(DeadGroupSettled)


class _ProgressAnswer(msgspec.Struct):
    job_id: str
    progress: Progress | None = None


_read_progress = _decoder(_ProgressAnswer)


def progress_problem(progress: float, note: str) -> str | None:
    """Why the server would refuse this report, checked before sending it."""
    if not isinstance(progress, int | float) or not 0 <= progress <= 1:
        return "progress must be a number from 0 to 1"
    if not isinstance(note, str) or len(note) > MAX_PROGRESS_NOTE:
        return f"note must be a string of at most {MAX_PROGRESS_NOTE} characters"
    return None


def explain_call(job_id: str) -> Call[Explanation]:
    path = f"/jobs/{segment(job_id)}/explain"
    return Call("GET", path, _read_explanation, not_found=JobNotFound, retry=True)


def progress_call(
    job_id: str, progress: float, note: str, lease_id: str | None
) -> Call[Progress | None]:
    body: dict[str, Any] = {"progress": float(progress), "note": note}
    if lease_id is not None:
        body["lease_id"] = lease_id
    path = f"/jobs/{segment(job_id)}/progress"

    def decode(status: int, content: bytes) -> Progress | None:
        return _read_progress(status, content).progress

    # Retried: reporting the same progress again changes nothing more.
    return Call("POST", path, decode, body=body, not_found=JobNotFound, retry=True)


def dead_groups_call() -> Call[DeadGroups]:
    return Call("GET", "/dead/groups", _read_dead_groups, retry=True)


def settle_group_call(fingerprint: str, action: str, chunk: int | None) -> Call[DeadGroupSettled]:
    body = {} if chunk is None else {"chunk": int(chunk)}
    path = f"/dead/groups/{segment(fingerprint)}/{action}"
    # Retried: a settled job has left its group, so a second request settles only the rest.
    return Call("POST", path, _read_group_settled, body=body, retry=True)
